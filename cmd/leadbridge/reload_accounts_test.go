package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// keyedHost stands in for an account's LeadList host across a key rotation: it takes
// the old and the new key alike (the platform honours both for a while) and notes which
// one each request carried, in order.
type keyedHost struct {
	*leadsim.Server
	URL  string
	mu   sync.Mutex
	keys []string
}

func newKeyedHost(t *testing.T, oldKey, newKey string) *keyedHost {
	sim := leadsim.New(newKey)
	h := &keyedHost{Server: sim}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get("Authorization")
		h.mu.Lock()
		h.keys = append(h.keys, key)
		h.mu.Unlock()
		if key == oldKey {
			r.Header.Set("Authorization", newKey)
		}
		sim.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.URL = srv.URL
	return h
}

func (h *keyedHost) seen() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.keys...)
}

// twoAccounts is a config with accounts client-a (host a, key keyA) and reseller (host b),
// reseller polling the given chatbots, and one webhook forwarder to sink.
func twoAccounts(r *reloadRig, a, keyA, b string, resellerBots []string, sink string) string {
	bots := ""
	for _, s := range resellerBots {
		bots += fmt.Sprintf("        - {serial: %s}\n", s)
	}
	return fmt.Sprintf(`
neoagent:
  api_key: unused-top-level-key
  accounts:
    - name: client-a
      base_url: %s
      api_key: %s
      timeout: 5s
      chatbots:
        - {serial: %s}
    - name: reseller
      base_url: %s
      api_key: key-b-654321
      timeout: 5s
      chatbots:
%spoll: {interval: 1s, initial: emit, max_backoff: 1s}
store: {path: %s/lb.db}
forwarders:
  - {name: crm, type: webhook, url: "%s", retry: {initial_interval: 50ms, max_interval: 200ms}}
http: {listen: "%s"}
log: {level: debug}
`, a, keyA, serialA, b, bots, r.dir, sink, r.addr)
}

// A reload with two accounts: a chatbot added to account B is polled at B's host with
// B's key, and account A's rotated key is what A's next polls carry at A's host, while
// A's chatbot polls on without a restart.
func TestReloadTwoAccountsAddsAChatbotAndRotatesAKey(t *testing.T) {
	const oldKey, newKey = "key-a-old-123456", "key-a-new-654321"
	hostA := newKeyedHost(t, oldKey, newKey)
	hostB, urlB := leadtest.StartAPI(t, "key-b-654321")
	sink := leadtest.NewSink(t, nil)
	r := newReloadRig(t, "")
	require.NoError(t, os.WriteFile(r.path, []byte(twoAccounts(r, hostA.URL, oldKey, urlB, []string{serialB}, sink.URL)), 0o600))
	hostA.Generate(serialA, time.Now().Add(-time.Hour))
	hostB.Generate(serialB, time.Now().Add(-time.Hour))
	hostB.Generate(serialC, time.Now().Add(-time.Hour)) // waits for its chatbot to be added
	startDaemon(t, r.path, r.addr)
	require.Eventually(t, func() bool { return len(accounts(sink)) == 2 }, 10*time.Second, 20*time.Millisecond)
	require.Equal(t, oldKey, hostA.seen()[0])

	require.NoError(t, os.WriteFile(r.path, []byte(twoAccounts(r, hostA.URL, newKey, urlB, []string{serialB, serialC}, sink.URL)), 0o600))
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "chatbots added: "+serialC)
	assert.Contains(t, stdout, "accounts changed: client-a")
	assert.NotContains(t, stdout, "reseller", "B's connection did not change")
	assert.NotContains(t, stdout+stderr, newKey)

	// C is polled at B's host (with B's key: the host answers only that one) and its
	// record says which account it came from.
	require.Eventually(t, func() bool { return len(accounts(sink)) == 3 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, map[string]string{serialA: "client-a", serialB: "reseller", serialC: "reseller"}, accounts(sink))

	// A's polls now carry the new key: once it appears, the old one never comes again
	// (a poll under way at the reload may still have finished with it).
	n := len(hostA.seen())
	require.Eventually(t, func() bool { return len(hostA.seen()) >= n+2 }, 10*time.Second, 20*time.Millisecond, "A polled twice more")
	keys := hostA.seen()
	first := -1
	for i, k := range keys {
		if k == newKey && first < 0 {
			first = i
		}
		if first >= 0 {
			assert.Equal(t, newKey, k, "request %d after the new key was first used", i)
		}
	}
	require.GreaterOrEqual(t, first, 0, "A's next polls use the new key")
	assert.LessOrEqual(t, first, n, "at most the poll under way at the reload used the old key")
}

// kinds counts the events sink took, each once however often it came, by kind.
func kinds(sink *leadtest.Sink) map[string]int {
	kind := map[string]string{}
	for _, ev := range sink.Events() {
		kind[ev.ID] = string(ev.Kind())
	}
	out := map[string]int{}
	for _, k := range kind {
		out[k]++
	}
	return out
}

// A reload that adds a forwarder with a filter and gives another one a filter: records
// taken after it are routed by the new filters.
func TestReloadAddsAFilteredForwarder(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	all, appts := leadtest.NewSink(t, nil), leadtest.NewSink(t, nil)
	r := newReloadRig(t, apiURL)
	entry := func(name, u, more string) string {
		return fmt.Sprintf("  - {name: %s, type: webhook, url: \"%s\"%s}\n", name, u, more)
	}
	r.write(t, []string{serialA}, entry("crm", all.URL, ""), "")
	at := time.Now().Add(-time.Hour).In(time.FixedZone("PST", -8*3600))
	api.Add(serialA, leadsim.Sample(1, 70001, at)) // a lead
	api.Add(serialA, leadsim.Sample(3, 70002, at)) // an appointment
	startDaemon(t, r.path, r.addr)
	require.Eventually(t, func() bool { return len(kinds(all)) == 2 }, 10*time.Second, 20*time.Millisecond)

	r.write(t, []string{serialA}, entry("crm", all.URL, `, filter: '.data.kind == "lead"'`)+
		entry("appts", appts.URL, `, filter: '.data.kind == "appointment"'`), "")
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "forwarders added: appts")
	assert.Contains(t, stdout, "forwarders changed: crm")

	api.Add(serialA, leadsim.Sample(4, 70003, at)) // a lead
	api.Add(serialA, leadsim.Sample(6, 70004, at)) // an appointment
	api.Add(serialA, leadsim.Sample(7, 70005, at)) // a lead
	require.Eventually(t, func() bool { return kinds(all)["lead"] == 3 && kinds(appts)["appointment"] == 1 },
		10*time.Second, 20*time.Millisecond)
	// The sinks got those deliveries in the same drain as the others: the filtered-out
	// ones were never queued, which the outbox shows.
	require.Eventually(t, func() bool { return status(t, r.addr).Forwarders[0].Pending == 0 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, map[string]int{"lead": 3, "appointment": 1}, kinds(all), "crm's new filter keeps the new appointment out")
	assert.Equal(t, map[string]int{"appointment": 1}, kinds(appts), "appts gets only what was taken after the reload")
	m := scrape(t, r.addr)
	assert.Equal(t, 2.0, m["leadbridge_records_filtered_total{forwarder=appts}"], "the two new leads kept out of appts")
	assert.Equal(t, 1.0, m["leadbridge_records_filtered_total{forwarder=crm}"], "the new appointment kept out of crm")
}

// A forwarder with a batch path (nats, publishing to the embedded server) is added,
// replaced and removed by reloads like any other, and an added one reaches the
// embedded server (url: embedded resolved as at start).
func TestReloadAddsReplacesAndRemovesAnEmbeddedNATSForwarder(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	crm := leadtest.NewSink(t, nil)
	r := newReloadRig(t, apiURL)
	natsAddr := freeAddr(t)
	server := fmt.Sprintf("nats_server: {listen: \"%s\", store_dir: %s/nats}\n", natsAddr, r.dir)
	bus := func(subject string) string {
		return fmt.Sprintf("  - {name: bus, type: nats, url: embedded, subject: \"%s\", retry: {initial_interval: 50ms, max_interval: 200ms}}\n", subject)
	}
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), server)
	startDaemon(t, r.path, r.addr)
	nc, err := natsgo.Connect("nats://" + natsAddr)
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	got := make(chan *natsgo.Msg, 64)
	_, err = nc.ChanSubscribe("leads.>", got)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())
	receive := func(n int) map[string]string { // event id → subject
		t.Helper()
		out := map[string]string{}
		for len(out) < n {
			select {
			case m := <-got:
				out[m.Header.Get("Ce-Id")] = m.Subject
			case <-time.After(15 * time.Second):
				require.FailNow(t, "the subscriber did not get its events", "got %d of %d", len(out), n)
			}
		}
		return out
	}

	// Added: the records taken next go to the embedded server, several due at once in
	// one batch.
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, "")+bus("leads.one.{{ .Kind }}"), server)
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "forwarders added: bus")
	for range 3 {
		api.Generate(serialA, time.Now().Add(-time.Minute))
	}
	for id, subject := range receive(3) {
		assert.Regexp(t, `^leads\.one\.(lead|appointment)$`, subject, id)
	}

	// Replaced: the next records take the new subject.
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, "")+bus("leads.two.{{ .Kind }}"), server)
	code, stdout, stderr = runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "forwarders changed: bus")
	for range 2 {
		api.Generate(serialA, time.Now().Add(-time.Minute))
	}
	for id, subject := range receive(2) {
		assert.Regexp(t, `^leads\.two\.(lead|appointment)$`, subject, id)
	}

	// Removed: a new record goes to crm only, and nothing is left owed to bus.
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), server)
	code, stdout, stderr = runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "forwarders removed: bus")
	assert.NotContains(t, stdout, "pending deliveries")
	api.Generate(serialA, time.Now().Add(-time.Minute))
	require.Eventually(t, func() bool { return crm.Count() == 6 }, 10*time.Second, 20*time.Millisecond)
	_, fwds := names(status(t, r.addr))
	assert.Equal(t, []string{"crm:webhook"}, fwds)
	for id, n := range leadtest.Counts(crm.IDs()) {
		assert.Equal(t, 1, n, "crm got event %s %d times", id, n)
	}
}

// Readiness judges each chatbot by the pace the reloaded config gives it: an account's
// max_rps lowered so far that its chatbot is polled once in 100s makes 3s without a
// successful poll no longer a failure.
func TestReloadRejudgesReadinessByTheNewPace(t *testing.T) {
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(down.Close)
	crm := leadtest.NewSink(t, nil)
	r := newReloadRig(t, down.URL)
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	startDaemon(t, r.path, r.addr)
	require.Eventually(t, func() bool { code, _ := readyz(t, r.addr); return code == http.StatusServiceUnavailable },
		15*time.Second, 100*time.Millisecond, "no successful poll for 3 intervals of 1s")
	_, body := readyz(t, r.addr)
	assert.Contains(t, body, "(3 intervals = 3s)")

	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	require.NoError(t, os.WriteFile(r.path, []byte(replaceAll(mustRead(t, r.path), map[string]string{
		"timeout: 5s": "timeout: 5s\n  max_rps: 0.01"})), 0o600))
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "accounts changed: default")
	code, body = readyz(t, r.addr)
	assert.Equal(t, http.StatusOK, code, "one poll in 100s: 3 of them is 5m; /readyz: %s", body)
}

// A forwarder removed while an attempt of it is in flight: that attempt finishes and is
// recorded before the reload counts what stays pending, so a delivery it made is not
// reported as stranded.
func TestReloadCountsStrandedAfterTheAttemptsInFlight(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	crm, slow := leadtest.NewSink(t, nil), leadtest.NewSink(t, nil)
	slow.Hold()
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, "")+hookEntry("slow", slow.URL, ", timeout: 20s"), "")
	api.Generate(serialA, time.Now().Add(-time.Hour))
	var logs leadtest.LogBuffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"run", "--config", r.path}, io.Discard, &logs) }()
	t.Cleanup(func() {
		slow.Release()
		cancel()
		select {
		case code := <-done:
			assert.Equal(t, 0, code)
		case <-time.After(20 * time.Second):
			t.Error("the daemon did not stop within 20s")
		}
	})
	require.Eventually(t, func() bool { return crm.Count() == 1 && slow.Count() == 1 }, 10*time.Second, 20*time.Millisecond,
		"slow's attempt is in flight")

	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	type result struct {
		code           int
		stdout, stderr string
	}
	reloaded := make(chan result, 1)
	go func() {
		code, stdout, stderr := runMain(t, "reload", "--config", r.path)
		reloaded <- result{code, stdout, stderr}
	}()
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "forwarder removed: no new attempts") },
		10*time.Second, 5*time.Millisecond)
	slow.Release() // the attempt in flight at the removal succeeds
	res := <-reloaded
	require.Equal(t, 0, res.code, res.stderr)
	assert.Contains(t, res.stdout, "forwarders removed: slow")
	assert.NotContains(t, res.stdout, "pending deliveries", "the delivery made by the attempt in flight is not stranded")
	assert.Empty(t, status(t, r.addr).Forwarders[1:], "nothing is owed to slow")
}
