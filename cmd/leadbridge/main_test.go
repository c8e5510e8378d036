package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

const (
	testKey    = "test-api-key-7f3a9c"
	testSerial = "3254a9d0424c4806b9ea3d0763ccf001"
)

// gomaxprocsPinned says TestMain set GOMAXPROCS: the daemons these tests run in this
// process then leave it alone (package procs), so that none lowers it under another
// test; TestIdleDaemonRunsOnOneProcessor unsets it for its own daemon.
var gomaxprocsPinned bool

func TestMain(m *testing.M) {
	if _, set := os.LookupEnv("GOMAXPROCS"); !set {
		if err := os.Setenv("GOMAXPROCS", strconv.Itoa(runtime.GOMAXPROCS(0))); err != nil {
			panic(err)
		}
		gomaxprocsPinned = true
	}
	os.Exit(m.Run())
}

// writeConfig writes a config for one chatbot and a webhook forwarder "crm", followed by
// the forwarder entries in moreForwarders, and returns its path.
func writeConfig(t *testing.T, dir, apiURL, sinkURL, moreForwarders string) string {
	t.Helper()
	t.Setenv("LB_TEST_KEY", testKey)
	body := fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  timeout: 5s
  chatbots:
    - {serial: %s, name: Main site}
poll: {interval: 1s, initial: emit}
store: {path: %s}
forwarders:
  - name: crm
    type: webhook
    url: %s/hook
    retry: {initial_interval: 50ms, max_interval: 200ms}
%s
http: {listen: ""}
log: {level: debug, format: json}
`, apiURL, testSerial, filepath.Join(dir, "lb.db"), sinkURL, moreForwarders)
	path := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func runMain(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	code = Main(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestOnceDeliversEachNewRecordExactlyOnce(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, apiURL, sink.URL, "")

	now := time.Now()
	api.Generate(testSerial, now.Add(-3*time.Hour))
	api.Generate(testSerial, now.Add(-time.Hour))
	api.Inject(leadsim.Fault{BadRecord: true})

	code, _, stderr := runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	first := sink.IDs()
	require.Len(t, first, 2, "a malformed record is skipped, the rest go through")
	assert.Contains(t, stderr, "index")

	// The API returns the same records again: nothing is repeated across runs.
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, sink.IDs(), 2)

	api.Generate(testSerial, now)
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	all := sink.IDs()
	require.Len(t, all, 3)
	assert.NotContains(t, first, all[2])

	for _, line := range strings.Split(stderr, "\n") {
		assert.NotContains(t, line, testKey, "the API key never appears in logs")
	}
}

func TestOnceLeavesUndeliveredForTheNextRun(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	sink.AnswerAll(http.StatusServiceUnavailable)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, apiURL, sink.URL, "")
	api.Generate(testSerial, time.Now())

	code, _, stderr := runMain(t, "once", "--config", cfg, "--max-wait", "300ms")
	assert.Equal(t, 1, code, "deliveries remain pending")
	assert.Contains(t, stderr, "still pending")
	assert.Regexp(t, `[1-9][0-9]* deliveries still pending after --max-wait 300ms; .*\(0 delivered in [0-9.]+m?s, 0\.0/s\)`, stderr,
		"the message says how many are left and how fast deliveries went")
	failed := sink.IDs()
	require.NotEmpty(t, failed)

	sink.AnswerAll(0)
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	got := sink.IDs()
	assert.Equal(t, failed[0], got[len(got)-1], "delivered on the next run with the same event id")
}

func TestOnceFailsWhenThePollFailsOrSomethingIsDeadLettered(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	sink.AnswerAll(http.StatusBadRequest)
	cfg := writeConfig(t, t.TempDir(), apiURL, sink.URL, "")
	api.Generate(testSerial, time.Now())

	code, _, stderr := runMain(t, "once", "--config", cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "dead-lettered")

	api.Inject(leadsim.Fault{Status: http.StatusInternalServerError})
	code, _, stderr = runMain(t, "once", "--config", cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "poll failed")
}

func TestConfigCheck(t *testing.T) {
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", "http://127.0.0.1:2", "")
	code, stdout, _ := runMain(t, "config", "check", "--config", cfg)
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "ok")

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	require.NoError(t, os.WriteFile(bad, []byte("neoagent:\n  api_key: ''\npoll:\n  intervl: 1m\n"), 0o600))
	code, _, stderr := runMain(t, "config", "check", "--config", bad)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "poll.intervl")
	assert.Contains(t, stderr, "neoagent.api_key")

	code, _, _ = runMain(t, "config", "check", "--config", filepath.Join(t.TempDir(), "missing.yaml"))
	assert.Equal(t, 2, code)
}

func TestUsageErrors(t *testing.T) {
	code, _, stderr := runMain(t, "frobnicate")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "unknown command")
	code, _, _ = runMain(t, "once", "--no-such-flag")
	assert.Equal(t, 2, code)
	code, _, stderr = runMain(t, "once", "--config", "x.yaml", "stray")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `unexpected argument "stray"`)
	code, stdout, _ := runMain(t, "version")
	assert.Equal(t, 0, code)
	assert.Contains(t, stdout, "leadbridge")
}

func TestRunStopsCleanlyAndKeepsTheStore(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, apiURL, sink.URL, "")
	api.Generate(testSerial, time.Now())

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int)
	go func() { done <- Main(ctx, []string{"run", "--config", cfg}, io.Discard, io.Discard) }()
	require.Eventually(t, func() bool { return len(sink.IDs()) == 1 }, 10*time.Second, 20*time.Millisecond)
	api.Generate(testSerial, time.Now())
	require.Eventually(t, func() bool { return len(sink.IDs()) == 2 }, 10*time.Second, 20*time.Millisecond,
		"a record added while running is picked up by the next poll")
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop")
	}
	st, err := dedupe.Open(dedupe.Options{Path: filepath.Join(dir, "lb.db")})
	require.NoError(t, err, "the store was closed cleanly")
	states, err := st.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, states[testSerial].Seen)
	require.NoError(t, st.Close())
}

func TestDemoShowsLeadsFlowing(t *testing.T) {
	code, stdout, stderr := runMain(t, "demo", "--duration", "4s", "--interval", "1s", "--every", "500ms")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "via Main site")
	assert.Contains(t, stdout, "on NATS neoagent.")
	assert.Contains(t, stdout, "stopped:")
	assert.NotContains(t, stdout, " 0 events delivered to the webhook")
}

func TestConfigCheckRunsTheForwardersOwnChecks(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:1", "http://127.0.0.1:2", `
  - name: bus
    type: nats
    url: nats://127.0.0.1:4222
    subject: "leads.{{token .ChatbotName}}.{{.Kind}}"
  - name: bus2
    type: nats
    url: nats://127.0.0.1:4222
    subject: "leads.{{.NoSuchField}}"
    creds_file: `+dir+`/missing.creds
`)
	code, _, stderr := runMain(t, "config", "check", "--config", cfg)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "forwarders[2].subject")
	assert.Contains(t, stderr, "forwarders[2].creds_file")
	assert.NotContains(t, stderr, "forwarders[1]", "the token function is accepted")
}
