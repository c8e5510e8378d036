package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

// freeAddr returns a loopback address nothing listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// daemon is `leadbridge run` running in the test process.
type daemon struct {
	addr     string
	cancel   context.CancelFunc
	done     chan int
	stopOnce sync.Once
}

func startDaemon(t *testing.T, cfgPath, addr string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{addr: addr, cancel: cancel, done: make(chan int, 1)}
	go func() { d.done <- Main(ctx, []string{"run", "--config", cfgPath}, io.Discard, testLog{t}) }()
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "the daemon serves /healthz")
	t.Cleanup(func() { d.stop(t) })
	return d
}

// stop cancels the daemon and waits for Main to return; it fails the test when the
// daemon does not stop in time.
func (d *daemon) stop(t *testing.T) {
	d.stopOnce.Do(func() {
		d.cancel()
		select {
		case code := <-d.done:
			assert.Equal(t, 0, code, "run exits 0 after a signal")
		case <-time.After(20 * time.Second):
			t.Error("the daemon did not stop within 20s")
		}
	})
}

// operatorConfig writes a config with two webhook forwarders, "good" and "bad", and the
// admin API on addr.
func operatorConfig(t *testing.T, apiURL, goodURL, badURL, addr, pollExtra string) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("LB_TEST_KEY", testKey)
	body := fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  timeout: 2s
  chatbots: [{serial: %s, name: Main site}]
poll: {interval: 1s, initial: emit%s}
store: {path: %s/lb.db}
forwarders:
  - {name: good, type: webhook, url: "%s/hook", retry: {initial_interval: 50ms, max_interval: 200ms}}
  - {name: bad, type: webhook, url: "%s/hook", retry: {initial_interval: 50ms, max_interval: 200ms}}
http: {listen: "%s"}
log: {level: debug}
`, apiURL, testSerial, pollExtra, dir, goodURL, badURL, addr)
	path := dir + "/config.yaml"
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// rig is a LeadList API, a "good" and a "bad" webhook target and a config for them with
// the admin API on addr, for the operator tests.
type rig struct {
	api       *leadsim.Server
	good, bad *leadtest.Sink
	addr, cfg string
}

// newRig starts the parts; bad answers badStatus (0 for 204).
func newRig(t *testing.T, badStatus int, pollExtra string) *rig {
	t.Helper()
	api, apiURL := leadtest.StartAPI(t, testKey)
	r := &rig{api: api, good: leadtest.NewSink(t, nil), bad: leadtest.NewSink(t, nil), addr: freeAddr(t)}
	r.bad.AnswerAll(badStatus)
	r.cfg = operatorConfig(t, apiURL, r.good.URL, r.bad.URL, r.addr, pollExtra)
	return r
}

func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for name, mf := range leadtest.Metrics(t, addr) {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, lp.GetName()+"="+lp.GetValue())
			}
			key := name + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				out[key] = m.GetCounter().GetValue()
			case m.Gauge != nil:
				out[key] = m.GetGauge().GetValue()
			case m.Histogram != nil:
				out[key+"count"] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return out
}

func TestMetricsMatchWhatHappened(t *testing.T) {
	r := newRig(t, http.StatusBadRequest, "")
	addr := r.addr
	now := time.Now()
	kinds := map[string]int{}
	for i := range 5 {
		rec := r.api.Generate(testSerial, now.Add(-time.Duration(i)*time.Minute))
		kinds[strings.ToLower(rec.Type)]++
	}
	d := startDaemon(t, r.cfg, addr)

	require.Eventually(t, func() bool {
		m := scrape(t, addr)
		return m["leadbridge_deliveries_total{forwarder=good,result=ok}"] == 5 &&
			m["leadbridge_deliveries_total{forwarder=bad,result=dead}"] == 5
	}, 15*time.Second, 50*time.Millisecond)
	m := scrape(t, addr)
	for kind, n := range kinds {
		assert.Equal(t, float64(n), m["leadbridge_records_total{account=default,chatbot="+testSerial+",kind="+kind+",outcome=new}"], kind)
	}
	assert.Equal(t, 0.0, m["leadbridge_outbox_depth{forwarder=good}"])
	assert.Equal(t, 5.0, m["leadbridge_dead_letters{forwarder=bad}"])
	assert.Equal(t, 5.0, m["leadbridge_delivery_latency_seconds{forwarder=good}count"])
	assert.Positive(t, m["leadbridge_polls_total{account=default,chatbot="+testSerial+",result=ok}"])
	assert.Equal(t, 1.0, m["leadbridge_build_info{goversion="+goVersion(t, m)+",version="+Version+"}"])
	d.stop(t)
}

func goVersion(t *testing.T, m map[string]float64) string {
	for k := range m {
		if rest, ok := strings.CutPrefix(k, "leadbridge_build_info{goversion="); ok {
			return rest[:strings.Index(rest, ",")]
		}
	}
	t.Fatal("no build info")
	return ""
}

func readyz(t *testing.T, addr string) (int, string) {
	resp, err := http.Get("http://" + addr + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReadyzFollowsTheAPI(t *testing.T) {
	r := newRig(t, 0, ", max_backoff: 1s, jitter: 0")
	api, addr := r.api, r.addr
	startDaemon(t, r.cfg, addr)
	require.Eventually(t, func() bool { return api.Requests() >= 1 }, 5*time.Second, 20*time.Millisecond)
	code, _ := readyz(t, addr)
	assert.Equal(t, http.StatusOK, code)

	var faults []leadsim.Fault
	for range 7 {
		faults = append(faults, leadsim.Fault{Status: http.StatusInternalServerError})
	}
	api.Inject(faults...)
	var body string
	require.Eventually(t, func() bool {
		code, body = readyz(t, addr)
		return code == http.StatusServiceUnavailable
	}, 15*time.Second, 100*time.Millisecond, "not ready after 3 intervals of failures")
	assert.Contains(t, body, testSerial)
	assert.Contains(t, body, "HTTP 500")
	require.Eventually(t, func() bool {
		code, _ = readyz(t, addr)
		return code == http.StatusOK
	}, 15*time.Second, 100*time.Millisecond, "ready again once polls succeed")
}

func TestDeadLettersListReplayDropWhileRunning(t *testing.T) {
	r := newRig(t, http.StatusBadRequest, "")
	api, bad, addr, cfg := r.api, r.bad, r.addr, r.cfg
	r1 := api.Generate(testSerial, time.Now().Add(-time.Hour))
	api.Generate(testSerial, time.Now().Add(-2*time.Hour))
	startDaemon(t, cfg, addr)
	require.Eventually(t, func() bool { return len(bad.IDs()) == 2 }, 10*time.Second, 20*time.Millisecond)

	var dead []event.DeadLetter
	require.Eventually(t, func() bool {
		code, stdout, _ := runMain(t, "dlq", "list", "--config", cfg, "--json")
		require.Equal(t, 0, code)
		require.NoError(t, json.Unmarshal([]byte(stdout), &dead))
		return len(dead) == 2
	}, 5*time.Second, 20*time.Millisecond)
	code, stdout, _ := runMain(t, "dlq", "list", "--config", cfg)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "HTTP 400")
	assert.Contains(t, stdout, "bad")

	// The target is fixed; one dead letter is replayed and delivered once.
	bad.AnswerAll(0)
	var replayID string
	for _, d := range dead {
		if d.Event.Data.SessionID == r1.SessionID {
			replayID = d.Event.ID
		}
	}
	require.NotEmpty(t, replayID)
	code, stdout, stderr := runMain(t, "dlq", "replay", "--config", cfg, "--forwarder", "bad", "--id", replayID)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "replayed 1")
	assert.Contains(t, stdout, "running daemon")
	require.Eventually(t, func() bool { return len(bad.IDs()) == 3 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, replayID, bad.IDs()[2])

	code, stdout, _ = runMain(t, "dlq", "drop", "--config", cfg, "--all")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "dropped 1")
	code, stdout, _ = runMain(t, "dlq", "list", "--config", cfg)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "no dead letters")
	// A new record goes out on the same lane after the replay and the drop: a second copy
	// of the replayed delivery, or the dropped one, would have gone before it.
	api.Generate(testSerial, time.Now().Add(-time.Minute))
	require.Eventually(t, func() bool { return len(bad.IDs()) == 4 }, 10*time.Second, 20*time.Millisecond)
	got := bad.IDs()
	assert.Len(t, got, 4)
	for _, d := range dead {
		assert.NotContains(t, got[3:], d.Event.ID, "the replayed delivery went out once, the dropped one never")
	}

	code, _, _ = runMain(t, "dlq", "replay", "--config", cfg)
	assert.Equal(t, 2, code, "replay needs --id or --all")
	code, _, stderr = runMain(t, "dlq", "replay", "--config", cfg, "--id", "no-such-id")
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "no dead letter with event id")
}

func TestGoneTargetPausesUntilResumed(t *testing.T) {
	r := newRig(t, http.StatusGone, "")
	api, gone, addr, cfg := r.api, r.bad, r.addr, r.cfg
	api.Generate(testSerial, time.Now().Add(-time.Hour))
	api.Generate(testSerial, time.Now().Add(-2*time.Hour))
	startDaemon(t, cfg, addr)

	var s ops.Status
	// pausedWith reads `status --json` into s and says whether "bad" is paused with
	// pending deliveries kept.
	pausedWith := func(pending int) bool {
		code, stdout, _ := runMain(t, "status", "--config", cfg, "--json")
		require.Equal(t, 0, code)
		require.NoError(t, json.Unmarshal([]byte(stdout), &s))
		for _, f := range s.Forwarders {
			if f.Name == "bad" {
				return f.Paused && f.Pending == pending
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return pausedWith(2) }, 10*time.Second, 50*time.Millisecond,
		"a 410 pauses the forwarder and keeps its deliveries")
	assert.True(t, s.Daemon)
	code, body := readyz(t, addr)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, body, "bad")
	code, stdout, _ := runMain(t, "status", "--config", cfg)
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "PAUSED")
	m := scrape(t, addr)
	assert.Equal(t, 1.0, m["leadbridge_forwarder_paused{forwarder=bad}"])
	attempts := len(gone.IDs())
	assert.LessOrEqual(t, attempts, 2, "at most the attempts in flight when it said 410")
	// A new record wakes every lane: once the good target has it and the paused lane keeps
	// it, the paused lane has had its chance to attempt something.
	good := r.good
	api.Generate(testSerial, time.Now().Add(-time.Minute))
	require.Eventually(t, func() bool { return len(good.IDs()) == 3 && pausedWith(3) }, 10*time.Second, 50*time.Millisecond,
		"the new record reaches the good target and waits for the paused one")
	assert.Len(t, gone.IDs(), attempts, "no more attempts while paused")

	gone.AnswerAll(0)
	code, stdout, stderr := runMain(t, "forwarder", "resume", "bad", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "resumed")
	require.Eventually(t, func() bool { return len(gone.IDs()) == attempts+3 }, 10*time.Second, 20*time.Millisecond,
		"every kept delivery goes out after the resume")
	code, _ = readyz(t, addr)
	assert.Equal(t, http.StatusOK, code)
}

func TestOperatorCommandsWithoutADaemon(t *testing.T) {
	r := newRig(t, http.StatusForbidden, "")
	api, bad, cfg := r.api, r.bad, r.cfg
	api.Generate(testSerial, time.Now())
	code, _, _ := runMain(t, "once", "--config", cfg)
	require.Equal(t, 1, code, "a dead letter fails once")

	code, stdout, stderr := runMain(t, "status", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "Main site")
	bad.AnswerAll(0)
	code, stdout, _ = runMain(t, "dlq", "replay", "--config", cfg, "--all")
	require.Equal(t, 0, code)
	assert.Contains(t, stdout, "next start")
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, bad.IDs(), 2)
}

func TestHealthcheck(t *testing.T) {
	var mu sync.Mutex
	status := http.StatusOK
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		w.WriteHeader(status)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	code, _, _ := runMain(t, "healthcheck", "--addr", addr)
	assert.Equal(t, 0, code)
	mu.Lock()
	status = http.StatusInternalServerError
	mu.Unlock()
	code, _, _ = runMain(t, "healthcheck", "--addr", addr)
	assert.Equal(t, 1, code)
	code, _, _ = runMain(t, "healthcheck", "--addr", freeAddr(t))
	assert.Equal(t, 1, code)
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func TestStatusNeverCreatesAStore(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:1", "http://127.0.0.1:2", "")
	code, _, stderr := runMain(t, "status", "--config", cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "does not exist")
	_, err := os.Stat(dir + "/lb.db")
	assert.True(t, os.IsNotExist(err), "a look at the status created no store file")
}

func TestWriteCommandsNeverCreateAStore(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:1", "http://127.0.0.1:2", "")
	for _, args := range [][]string{
		{"dlq", "replay", "--all"},
		{"dlq", "drop", "--all"},
		{"forwarder", "resume", "crm"},
	} {
		code, _, stderr := runMain(t, append(args, "--config", cfg)...)
		assert.Equal(t, 1, code, "%v", args)
		assert.Contains(t, stderr, "does not exist", "%v", args)
	}
	_, err := os.Stat(dir + "/lb.db")
	assert.True(t, os.IsNotExist(err))
	code, _, _ := runMain(t, "send-test", "-h")
	assert.Equal(t, 0, code)
	code, _, _ = runMain(t, "forwarder", "resume", "-h")
	assert.Equal(t, 0, code)
}

func TestOperatorCommandsSendTheAdminToken(t *testing.T) {
	r := newRig(t, 0, "")
	r.withAdminToken(t, "adm-7c1e9b2f")
	startDaemon(t, r.cfg, r.addr)

	code, stdout, stderr := runMain(t, "status", "--config", r.cfg, "--json")
	require.Equal(t, 0, code, stderr)
	var s ops.Status
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	assert.True(t, s.Daemon, "answered by the daemon, with the token")

	resp, err := http.Get("http://" + r.addr + "/admin/status")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, resp.StatusCode, "without the token the admin API refuses")
}

// withAdminToken sets http.admin_token in the rig's config.
func (r *rig) withAdminToken(t *testing.T, token string) {
	t.Helper()
	t.Setenv("LB_ADMIN_TOKEN", token)
	b, err := os.ReadFile(r.cfg)
	require.NoError(t, err)
	withToken := strings.Replace(string(b), `http: {listen: "`+r.addr+`"}`,
		`http: {listen: "`+r.addr+`", admin_token: "${LB_ADMIN_TOKEN}"}`, 1)
	require.NotEqual(t, string(b), withToken)
	require.NoError(t, os.WriteFile(r.cfg, []byte(withToken), 0o600))
}

func TestOperatorCommandsNeverTellAnImpostorTheToken(t *testing.T) {
	const token = "adm-4b9e0c77d1"
	r := newRig(t, http.StatusForbidden, "")
	r.withAdminToken(t, token)
	r.api.Generate(testSerial, time.Now())
	code, _, _ := runMain(t, "once", "--config", r.cfg)
	require.Equal(t, 1, code, "one dead letter for bad")

	// With the daemon stopped, another process takes its address and plays a daemon.
	var mu sync.Mutex
	var seen []string
	ln, err := net.Listen("tcp", r.addr)
	require.NoError(t, err)
	imp := &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		line := req.Method + " " + req.URL.RequestURI()
		for k, vs := range req.Header {
			line += " " + k + "=" + strings.Join(vs, ",")
		}
		seen = append(seen, line)
		mu.Unlock()
		if req.URL.Path == "/healthz" {
			_, _ = io.WriteString(w, `{"status":"ok"}`)
			return
		}
		_, _ = io.WriteString(w, `{"count":0,"nonce":"`+strings.Repeat("ab", 32)+`","proof":"x"}`)
	})}}
	imp.Start()
	for _, args := range [][]string{
		{"dlq", "list"}, {"dlq", "drop", "--all"}, {"dlq", "replay", "--all"}, {"status"},
		{"forwarder", "resume", "bad"}, {"outbox", "drop", "--forwarder", "gone"},
	} {
		code, stdout, stderr := runMain(t, append(args, "--config", r.cfg)...)
		assert.Equal(t, 1, code, "%v: %s", args, stdout)
		assert.Contains(t, stderr, "not this config's leadbridge daemon", "%v", args)
		assert.Contains(t, stderr, "the store was not opened", "%v", args)
	}
	imp.Close()
	mu.Lock()
	require.NotEmpty(t, seen)
	for _, line := range seen {
		assert.NotContains(t, line, token)
		assert.NotContains(t, line, "Authorization")
	}
	mu.Unlock()

	code, stdout, stderr := runMain(t, "dlq", "list", "--config", r.cfg, "--json")
	require.Equal(t, 0, code, stderr)
	var dead []event.DeadLetter
	require.NoError(t, json.Unmarshal([]byte(stdout), &dead))
	assert.Len(t, dead, 1, "the dead letter is still there: the impostor's drop touched nothing")
}

// TestIdleDaemonRunsOnOneProcessor: a daemon without work lowers GOMAXPROCS to 1, and a
// new record (its poll and its deliveries) brings every processor back.
func TestIdleDaemonRunsOnOneProcessor(t *testing.T) {
	if runtime.NumCPU() < 2 {
		t.Skip("one processor: nothing to lower")
	}
	if !gomaxprocsPinned {
		t.Skip("GOMAXPROCS is set by whoever runs the tests: the daemon leaves it alone")
	}
	full := float64(runtime.GOMAXPROCS(0))
	pinned := os.Getenv("GOMAXPROCS")
	require.NoError(t, os.Unsetenv("GOMAXPROCS"))
	quiet := idleQuiet
	idleQuiet = time.Second
	t.Cleanup(func() { // after the daemon stops: cleanups run last first
		idleQuiet = quiet
		require.NoError(t, os.Setenv("GOMAXPROCS", pinned))
	})
	r := newRig(t, 0, "")
	r.api.Generate(testSerial, time.Now())
	d := startDaemon(t, r.cfg, r.addr)
	procs := func() float64 { return scrape(t, r.addr)["go_sched_gomaxprocs_threads{}"] }

	require.Eventually(t, func() bool { return len(r.good.Events()) == 1 }, 15*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool { return procs() == 1 }, 15*time.Second, 20*time.Millisecond,
		"polls that find nothing new are no work: one processor")

	r.api.Generate(testSerial, time.Now())
	require.Eventually(t, func() bool { return procs() == full }, 15*time.Second, 10*time.Millisecond,
		"a new record is work: every processor")
	require.Eventually(t, func() bool { return len(r.good.Events()) == 2 }, 15*time.Second, 20*time.Millisecond)
	d.stop(t)
	require.Equal(t, int(full), runtime.GOMAXPROCS(0), "a stopped daemon leaves the default behind")
}
