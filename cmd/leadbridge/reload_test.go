package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

const (
	serialA = "3254a9d0424c4806b9ea3d0763ccfa01"
	serialB = "3254a9d0424c4806b9ea3d0763ccfb02"
	serialC = "3254a9d0424c4806b9ea3d0763ccfc03"
)

// reloadRig is a daemon running a config file that the test rewrites and reloads.
type reloadRig struct {
	apiURL, addr, dir, path string
}

func newReloadRig(t *testing.T, apiURL string) *reloadRig {
	t.Setenv("LB_TEST_KEY", testKey)
	dir := t.TempDir()
	return &reloadRig{apiURL: apiURL, addr: freeAddr(t), dir: dir, path: filepath.Join(dir, "config.yaml")}
}

// write makes the config file hold these chatbot serials and forwarder entries (YAML
// list items, indented by two), with extra top-level text.
func (r *reloadRig) write(t *testing.T, serials []string, forwarders, extra string) {
	t.Helper()
	bots := ""
	for _, s := range serials {
		bots += fmt.Sprintf("    - {serial: %s, name: Bot %s}\n", s, s[len(s)-3:])
	}
	body := fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  timeout: 5s
  chatbots:
%spoll: {interval: 1s, initial: emit}
store: {path: %s/lb.db}
forwarders:
%s
http: {listen: "%s"}
log: {level: debug}
%s`, r.apiURL, bots, r.dir, forwarders, r.addr, extra)
	require.NoError(t, os.WriteFile(r.path, []byte(body), 0o600))
}

// hookEntry is a forwarder entry for a webhook to url with fast retries.
func hookEntry(name, url, more string) string {
	return fmt.Sprintf("  - {name: %s, type: webhook, url: \"%s/hook\", retry: {initial_interval: 50ms, max_interval: 200ms}%s}\n",
		name, url, more)
}

// status asks the running daemon for its status.
func status(t *testing.T, addr string) ops.Status {
	t.Helper()
	c, err := ops.Dial(t.Context(), addr, "")
	require.NoError(t, err)
	s, err := c.Status(t.Context())
	require.NoError(t, err)
	return s
}

func names(s ops.Status) (bots, fwds []string) {
	for _, c := range s.Chatbots {
		bots = append(bots, c.Serial)
	}
	for _, f := range s.Forwarders {
		fwds = append(fwds, f.Name+":"+f.Type)
	}
	return bots, fwds
}

func TestReloadAddsAndRemovesWhileDeliveriesAreInFlight(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	crm, added := leadtest.NewSink(t, nil), leadtest.NewSink(t, nil)
	crm.Hold() // a slow target: its deliveries are in flight across the reload
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA, serialB}, hookEntry("crm", crm.URL, ", concurrency: 2"), "")
	for range 3 {
		api.Generate(serialA, time.Now().Add(-time.Hour))
		api.Generate(serialB, time.Now().Add(-time.Hour))
	}
	api.Generate(serialC, time.Now().Add(-time.Hour)) // waits for its chatbot to be added
	startDaemon(t, r.path, r.addr)
	require.Eventually(t, func() bool {
		s := status(t, r.addr)
		return s.Chatbots[0].Seen == 3 && s.Chatbots[1].Seen == 3
	}, 10*time.Second, 10*time.Millisecond, "A's and B's records are taken")
	require.Eventually(t, func() bool { return crm.Count() == 2 }, 10*time.Second, 10*time.Millisecond, "two deliveries in flight")

	// Reload: C added, B removed, forwarder "added" added; crm unchanged.
	r.write(t, []string{serialA, serialC}, hookEntry("crm", crm.URL, ", concurrency: 2")+hookEntry("added", added.URL, ""), "")
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "chatbots added: "+serialC)
	assert.Contains(t, stdout, "chatbots removed: "+serialB)
	assert.Contains(t, stdout, "forwarders added: added")
	assert.NotContains(t, stdout, "forwarders changed")
	bRequests := api.RequestsFor(serialB)
	for range 2 {
		api.Generate(serialA, time.Now().Add(-time.Minute)) // records ingested after the reload
	}
	crm.Release()

	// crm gets everything once: A's 5, B's 3 (taken before B was removed), C's 1. "added"
	// gets what was ingested after the reload: A's 2 new ones and C's.
	require.Eventually(t, func() bool { return len(leadtest.Counts(crm.IDs())) == 9 && len(leadtest.Counts(added.IDs())) == 3 },
		15*time.Second, 20*time.Millisecond)
	aRequests := api.RequestsFor(serialA)
	require.Eventually(t, func() bool { return api.RequestsFor(serialA) >= aRequests+2 }, 10*time.Second, 20*time.Millisecond,
		"A polled twice more")
	for id, n := range leadtest.Counts(crm.IDs()) {
		assert.Equal(t, 1, n, "crm got event %s %d times", id, n)
	}
	for id, n := range leadtest.Counts(added.IDs()) {
		assert.Equal(t, 1, n, "added got event %s %d times", id, n)
	}
	assert.Len(t, crm.IDs(), 9)
	assert.Len(t, added.IDs(), 3)
	assert.LessOrEqual(t, api.RequestsFor(serialB), bRequests+1, "B is not polled after the poll under way at the reload")

	bots, fwds := names(status(t, r.addr))
	assert.Equal(t, []string{serialA, serialC}, bots)
	assert.Equal(t, []string{"crm:webhook", "added:webhook"}, fwds)
	m := scrape(t, r.addr)
	assert.Equal(t, 1.0, m["leadbridge_config_reloads_total{result=ok}"])
	assert.Equal(t, 0.0, m["leadbridge_config_reloads_total{result=rejected}"])
}

func TestReloadRejectsABadConfigWholeAndKeepsTheRunningOne(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	crm := leadtest.NewSink(t, nil)
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	startDaemon(t, r.path, r.addr)

	// Chatbot B added and a forwarder added, beside two problems: nothing may change.
	r.write(t, []string{serialA, serialB}, hookEntry("crm", crm.URL, "")+hookEntry("other", "ftp://x", "")+
		"  - {name: third, type: webhook, url: \"http://127.0.0.1:1/hook\", colour: red}\n", "")
	code, _, stderr := runMain(t, "reload", "--config", r.path)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "config rejected, the running config stays: 2 problem(s)")
	assert.Contains(t, stderr, "forwarders[1].url")
	assert.Contains(t, stderr, "forwarders[2].colour")
	assert.NotContains(t, stderr, testKey)

	api.Generate(serialA, time.Now().Add(-time.Minute))
	api.Generate(serialB, time.Now().Add(-time.Minute))
	require.Eventually(t, func() bool { return crm.Count() == 1 }, 10*time.Second, 20*time.Millisecond, "the running config delivers")
	bots, fwds := names(status(t, r.addr))
	assert.Equal(t, []string{serialA}, bots)
	assert.Equal(t, []string{"crm:webhook"}, fwds)
	assert.Zero(t, api.RequestsFor(serialB), "the rejected config's chatbot is not polled")
	m := scrape(t, r.addr)
	assert.Equal(t, 1.0, m["leadbridge_config_reloads_total{result=rejected}"])
	assert.Equal(t, 0.0, m["leadbridge_config_reloads_total{result=ok}"])

	// A forwarder that its own package refuses rejects the reload too.
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, "")+
		"  - {name: chat, type: slack, webhook_url: \"https://hooks.slack.com/services/T0/B0/x\", template: \"{{ .Nope\"}\n", "")
	code, _, stderr = runMain(t, "reload", "--config", r.path)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "forwarders[1]")
	_, fwds = names(status(t, r.addr))
	assert.Equal(t, []string{"crm:webhook"}, fwds)
}

func TestReloadRemovingAForwarderKeepsItsPendingDeliveries(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	crm, down := leadtest.NewSink(t, nil), leadtest.NewSink(t, nil)
	down.AnswerAll(http.StatusServiceUnavailable)
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, "")+hookEntry("down", down.URL, ""), "")
	api.Generate(serialA, time.Now().Add(-time.Hour))
	api.Generate(serialA, time.Now().Add(-time.Hour))
	startDaemon(t, r.path, r.addr)
	require.Eventually(t, func() bool { return crm.Count() == 2 && down.Count() >= 2 }, 10*time.Second, 20*time.Millisecond)

	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "forwarders removed: down")
	assert.Contains(t, stdout, "forwarder down removed with 2 pending deliveries")

	// A new record goes to crm only; down's two stay pending, and status says so.
	downCount := down.Count()
	api.Generate(serialA, time.Now().Add(-time.Minute))
	require.Eventually(t, func() bool { return crm.Count() == 3 }, 10*time.Second, 20*time.Millisecond)
	s := status(t, r.addr)
	require.Len(t, s.Forwarders, 2)
	assert.Equal(t, ops.ForwarderStatus{Name: "down", Type: ops.TypeUnconfigured, Pending: 2}, s.Forwarders[1])
	assert.Equal(t, downCount, down.Count(), "no attempt after the removal")
}

// headerTarget answers 503 to every request whose X-Tenant header is not want, and
// records the event ids of those it took.
type headerTarget struct {
	*httptest.Server
	mu       sync.Mutex
	want     string
	took     []string
	attempts int
}

func newHeaderTarget(t *testing.T, want string) *headerTarget {
	h := &headerTarget{want: want}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.attempts++
		if req.Header.Get("X-Tenant") != h.want {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.took = append(h.took, req.Header.Get("webhook-id"))
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *headerTarget) state() (took []string, attempts int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.took...), h.attempts
}

func TestReloadChangedForwarderSettingAppliesToTheNextAttempt(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	target := newHeaderTarget(t, "v2")
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", target.URL, ", headers: {X-Tenant: v1}"), "")
	api.Generate(serialA, time.Now().Add(-time.Hour))
	api.Generate(serialA, time.Now().Add(-time.Hour))
	startDaemon(t, r.path, r.addr)
	require.Eventually(t, func() bool { _, n := target.state(); return n >= 4 }, 10*time.Second, 20*time.Millisecond,
		"v1 is refused and retried")

	r.write(t, []string{serialA}, hookEntry("crm", target.URL, ", headers: {X-Tenant: v2}"), "")
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "forwarders changed: crm")
	require.Eventually(t, func() bool { took, _ := target.state(); return len(took) == 2 }, 10*time.Second, 20*time.Millisecond,
		"the retries carry the new header")
	api.Generate(serialA, time.Now().Add(-time.Minute))
	require.Eventually(t, func() bool { took, _ := target.state(); return len(took) == 3 }, 10*time.Second, 20*time.Millisecond)
	took, _ := target.state()
	for id, n := range leadtest.Counts(took) {
		assert.Equal(t, 1, n, "event %s taken %d times", id, n)
	}
}

func TestSIGHUPReloadsAndKeepsWhatNeedsARestart(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	crm := leadtest.NewSink(t, nil)
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	startDaemon(t, r.path, r.addr)
	dbBefore := filepath.Join(r.dir, "lb.db")

	// B added; store.path and log.level changed, which need a restart.
	r.write(t, []string{serialA, serialB}, hookEntry("crm", crm.URL, ""), "")
	moved := filepath.Join(r.dir, "elsewhere")
	require.NoError(t, os.WriteFile(r.path, []byte(replaceAll(mustRead(t, r.path), map[string]string{
		r.dir + "/lb.db": moved + "/lb.db", "level: debug": "level: warn",
	})), 0o600))
	api.Generate(serialB, time.Now().Add(-time.Minute))
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))

	require.Eventually(t, func() bool { return crm.Count() == 1 }, 10*time.Second, 20*time.Millisecond,
		"the chatbot added by SIGHUP is polled and its record delivered")
	bots, _ := names(status(t, r.addr))
	assert.Equal(t, []string{serialA, serialB}, bots)
	assert.Equal(t, 1.0, scrape(t, r.addr)["leadbridge_config_reloads_total{result=ok}"])
	assert.NoDirExists(t, moved, "store.path keeps its old value")
	assert.FileExists(t, dbBefore)

	// The same through `reload` names the kept keys.
	code, stdout, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "store.path needs a restart: the old value is kept")
	assert.Contains(t, stdout, "log.level needs a restart: the old value is kept")
}

// replaceAll replaces each key of m in s with its value.
func replaceAll(s string, m map[string]string) string {
	for k, v := range m {
		s = strings.ReplaceAll(s, k, v)
	}
	return s
}

func TestReloadWithoutADaemon(t *testing.T) {
	_, apiURL := leadtest.StartAPI(t, testKey)
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", "http://127.0.0.1:1", ""), "")
	code, _, stderr := runMain(t, "reload", "--config", r.path)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "no leadbridge daemon answers")
	assert.Contains(t, stderr, "no reload was sent")

	r.write(t, []string{serialA}, hookEntry("crm", "http://127.0.0.1:1", ""), "")
	require.NoError(t, os.WriteFile(r.path, []byte(replaceAll(mustRead(t, r.path), map[string]string{
		`listen: "` + r.addr + `"`: `listen: ""`})), 0o600))
	code, _, stderr = runMain(t, "reload", "--config", r.path)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "SIGHUP")
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return string(b)
}

func TestReloadRejectsALookbackTheRunningRetentionCannotCover(t *testing.T) {
	_, apiURL := leadtest.StartAPI(t, testKey)
	crm := leadtest.NewSink(t, nil)
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA}, hookEntry("crm", crm.URL, ""), "")
	require.NoError(t, os.WriteFile(r.path, []byte(replaceAll(mustRead(t, r.path), map[string]string{
		"/lb.db}": "/lb.db, retention: 100h}"})), 0o600))
	startDaemon(t, r.path, r.addr)

	// Valid on its own, but store.retention needs a restart: the running 100h would not
	// cover the new lookback, and records pruned from the store would be read as new.
	require.NoError(t, os.WriteFile(r.path, []byte(replaceAll(mustRead(t, r.path), map[string]string{
		"retention: 100h}": "retention: 200h}", "initial: emit}": "initial: emit, lookback: 72h}"})), 0o600))
	code, _, stderr := runMain(t, "reload", "--config", r.path)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "store.retention: must exceed poll.lookback (72h0m0s)")
	assert.Contains(t, stderr, "keeping the running value of store.retention, which needs a restart")
	assert.Equal(t, 1.0, scrape(t, r.addr)["leadbridge_config_reloads_total{result=rejected}"])
}
