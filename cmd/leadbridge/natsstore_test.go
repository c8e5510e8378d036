package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// natsConfig writes a config for one chatbot, a webhook forwarder "crm" to sinkURL and
// the JetStream store on natsURL, with the admin API on addr ("" for none).
func natsConfig(t *testing.T, name, apiURL, sinkURL, natsURL, addr string) string {
	t.Helper()
	t.Setenv("LB_TEST_KEY", testKey)
	body := fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  timeout: 5s
  chatbots:
    - {serial: %s, name: Main site}
poll: {interval: 1s, initial: emit, jitter: 0}
store:
  backend: nats
  nats: {url: "%s", replicas: 1, timeout: 5s}
forwarders:
  - name: crm
    type: webhook
    url: %s/hook
    retry: {initial_interval: 50ms, max_interval: 200ms}
http: {listen: "%s"}
log: {level: info, format: json}
`, apiURL, testSerial, natsURL, sinkURL, addr)
	path := filepath.Join(t.TempDir(), name+".yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// Two daemons on the JetStream store poll the same chatbot and share one outbox: every
// record reaches the target once, and an operator command on a third machine (no
// daemon answering) reads the shared state.
func TestTwoDaemonsOnTheJetStreamStoreDeliverEachRecordOnce(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	now := time.Now()
	for i := range 10 {
		api.Generate(testSerial, now.Add(-time.Duration(i+1)*time.Minute))
	}
	for _, name := range []string{"a", "b"} {
		addr := freeAddr(t)
		startDaemon(t, natsConfig(t, name, apiURL, sink.URL, ns.URL(), addr), addr)
	}
	require.Eventually(t, func() bool { return len(leadtest.Counts(sink.IDs())) == 10 }, 20*time.Second, 20*time.Millisecond)
	for i := range 5 {
		api.Generate(testSerial, now.Add(time.Duration(i)*time.Second))
	}
	require.Eventually(t, func() bool { return len(leadtest.Counts(sink.IDs())) == 15 }, 20*time.Second, 20*time.Millisecond)

	// An operator elsewhere: no daemon on its http.listen, the store read directly.
	elsewhere := natsConfig(t, "op", apiURL, sink.URL, ns.URL(), freeAddr(t))
	require.Eventually(t, func() bool {
		code, out, _ := runMain(t, "status", "--config", elsewhere)
		return code == 0 && strings.Contains(out, "read from the store") && strings.Contains(out, testSerial) &&
			strings.Contains(out, ", 0 pending (0 stranded), 0 dead letters")
	}, 10*time.Second, 100*time.Millisecond)
	for id, n := range leadtest.Counts(sink.IDs()) {
		assert.Equal(t, 1, n, "event %s delivered %d times", id, n)
	}

	// A dry-run backfill elsewhere asks the shared store what was seen.
	since := now.UTC().AddDate(0, 0, -1).Format(time.DateOnly)
	code, out, stderr := runMain(t, "backfill", "--config", elsewhere, "--since", since, "--dry-run")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "dry run: 15 records found, 0 would be sent")
}

// A JetStream store no server answers for fails the command within store.nats.timeout,
// naming the key, and never echoes the password.
func TestJetStreamStoreUnreachableIsAClearError(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{User: "lb", Password: "right-pass-123"})
	cfg := natsConfig(t, "bad", "http://127.0.0.1:9", "http://127.0.0.1:9", "nats://lb:wrong-pass-456@"+strings.TrimPrefix(ns.URL(), "nats://"), "")
	body, err := os.ReadFile(cfg)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(cfg, []byte(strings.Replace(string(body), "timeout: 5s}", "timeout: 500ms}", 1)), 0o600))
	code, out, stderr := runMain(t, "status", "--config", cfg)
	assert.NotEqual(t, 0, code)
	assert.Contains(t, stderr, "store.nats.url: no NATS server answered within 500ms")
	assert.NotContains(t, out+stderr, "wrong-pass-456")

	// config check still passes the config, and says it could not look into the store.
	code, out, stderr = runMain(t, "config", "check", "--config", cfg)
	assert.Equal(t, 0, code, stderr)
	assert.Contains(t, out, ": ok (1 chatbots, 1 forwarders)")
	assert.Contains(t, stderr, "warning: could not read the store to look for stranded deliveries: store.nats.url: no NATS server answered")
	assert.NotContains(t, out+stderr, "wrong-pass-456")
}

// `once` on the JetStream store delivers what it polls, alone or beside a running
// daemon, and no record goes out twice.
func TestOnceOnTheJetStreamStore(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	now := time.Now()
	for i := range 8 {
		api.Generate(testSerial, now.Add(-time.Duration(i+1)*time.Minute))
	}
	cfg := natsConfig(t, "once", apiURL, sink.URL, ns.URL(), "")
	code, _, stderr := runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, leadtest.Counts(sink.IDs()), 8, "alone, once delivers everything it took")

	addr := freeAddr(t)
	startDaemon(t, natsConfig(t, "d", apiURL, sink.URL, ns.URL(), addr), addr)
	for round := range 3 {
		for i := range 10 {
			api.Generate(testSerial, now.Add(time.Duration(round*10+i)*time.Second))
		}
		code, _, stderr = runMain(t, "once", "--config", cfg)
		require.Equal(t, 0, code, stderr)
	}
	require.Eventually(t, func() bool { return len(leadtest.Counts(sink.IDs())) == 38 }, 20*time.Second, 20*time.Millisecond)
	for id, n := range leadtest.Counts(sink.IDs()) {
		assert.Equal(t, 1, n, "event %s delivered %d times", id, n)
	}
}

// A target that said 410 pauses the daemons that met it; a resume from a machine where
// no daemon runs (the shared store only) resumes every one of them.
func TestAResumeReachesEveryDaemon(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	sink.AnswerAll(http.StatusGone)
	now := time.Now()
	for i := range 6 {
		api.Generate(testSerial, now.Add(-time.Duration(i+1)*time.Minute))
	}
	for _, name := range []string{"a", "b"} {
		addr := freeAddr(t)
		startDaemon(t, natsConfig(t, name, apiURL, sink.URL, ns.URL(), addr), addr)
	}
	elsewhere := natsConfig(t, "op", apiURL, sink.URL, ns.URL(), "")
	require.Eventually(t, func() bool {
		code, out, _ := runMain(t, "status", "--config", elsewhere)
		return code == 0 && strings.Contains(out, "PAUSED") && strings.Contains(out, ", 6 pending")
	}, 20*time.Second, 50*time.Millisecond, "the 410 paused crm, its deliveries kept")

	sink.AnswerAll(0)
	code, out, stderr := runMain(t, "forwarder", "resume", "crm", "--config", elsewhere)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "resumed")
	require.Eventually(t, func() bool {
		got := map[string]bool{}
		for _, id := range sink.IDs() {
			got[id] = true
		}
		code, out, _ := runMain(t, "status", "--config", elsewhere)
		return code == 0 && strings.Contains(out, ", 0 pending") && len(got) == 6
	}, 20*time.Second, 50*time.Millisecond, "every kept delivery went out after the resume")
}

// /readyz reports the JetStream store's connection: not ready while NATS is down, ready
// again once it is back, and records go out again.
func TestReadyzFollowsTheJetStreamStore(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	addr := freeAddr(t)
	startDaemon(t, natsConfig(t, "a", apiURL, sink.URL, ns.URL(), addr), addr)
	require.Eventually(t, func() bool { code, _ := readyz(t, addr); return code == http.StatusOK }, 10*time.Second, 50*time.Millisecond)

	ns.Stop()
	require.Eventually(t, func() bool {
		code, body := readyz(t, addr)
		return code == http.StatusServiceUnavailable && strings.Contains(body, "the store does not answer")
	}, 20*time.Second, 50*time.Millisecond)

	ns.Start()
	require.Eventually(t, func() bool { code, _ := readyz(t, addr); return code == http.StatusOK }, 30*time.Second, 100*time.Millisecond,
		"ready again once NATS is back")
	// And delivering again: the daemon's consumers pull once more.
	api.Generate(testSerial, time.Now())
	require.Eventually(t, func() bool { return sink.Count() == 1 }, 30*time.Second, 100*time.Millisecond)
}
