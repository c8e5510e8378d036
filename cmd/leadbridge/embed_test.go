package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

const embedPassword = "embedded-nats-pw-5e1d"

// embedRig is a LeadList API and a config whose only forwarder, "bus", publishes to the
// embedded NATS server (user lb, password embedPassword) on natsAddr.
type embedRig struct {
	api                          *leadsim.Server
	dir, cfg, natsAddr, httpAddr string
}

// newEmbedRig writes the config; busExtra adds keys to the bus forwarder (one line,
// indented for it), httpAddr "" disables the HTTP listener.
func newEmbedRig(t *testing.T, busExtra, httpAddr string) *embedRig {
	t.Helper()
	api, apiURL := leadtest.StartAPI(t, testKey)
	r := &embedRig{api: api, dir: t.TempDir(), natsAddr: freeAddr(t), httpAddr: httpAddr}
	t.Setenv("LB_TEST_KEY", testKey)
	t.Setenv("LB_TEST_NATS_PW", embedPassword)
	body := fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  timeout: 5s
  chatbots: [{serial: %s, name: Main site}]
poll: {interval: 1s, initial: emit}
store: {path: %s/lb.db}
shutdown: {grace: 10s}
nats_server:
  listen: %s
  store_dir: %s/nats
  user: lb
  password: ${LB_TEST_NATS_PW}
forwarders:
  - name: bus
    type: nats
    url: embedded
    retry: {initial_interval: 50ms, max_interval: 200ms}
    %s
http: {listen: "%s"}
log: {level: debug, format: json}
`, apiURL, testSerial, r.dir, r.natsAddr, r.dir, busExtra, httpAddr)
	r.cfg = filepath.Join(r.dir, "config.yaml")
	require.NoError(t, os.WriteFile(r.cfg, []byte(body), 0o600))
	return r
}

// connect is a downstream service: a client of the embedded server on its listen
// address, with the configured credentials.
func (r *embedRig) connect(t *testing.T) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect("nats://"+r.natsAddr, natsgo.UserInfo("lb", embedPassword))
	require.NoError(t, err)
	t.Cleanup(nc.Close)
	return nc
}

// runEmbedDaemon runs `leadbridge run` on the rig's config until stop, which waits for
// Main to return 0. It returns once the embedded server takes clients.
func (r *embedRig) runDaemon(t *testing.T, logs *leadtest.LogBuffer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- Main(ctx, []string{"run", "--config", r.cfg}, &bytes.Buffer{}, logs) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case code := <-done:
				assert.Equal(t, 0, code, "run exits 0 after a signal; logs:\n%s", logs)
			case <-time.After(30 * time.Second):
				t.Error("the daemon did not stop within 30s")
			}
		})
	}
	t.Cleanup(stop)
	require.Eventually(t, func() bool {
		nc, err := natsgo.Connect("nats://"+r.natsAddr, natsgo.UserInfo("lb", embedPassword))
		if err != nil {
			return false
		}
		nc.Close()
		return true
	}, 20*time.Second, 20*time.Millisecond, "the embedded server takes clients; logs:\n%s", logs)
	return stop
}

// logLines decodes the daemon's JSON log lines.
func logLines(t *testing.T, logs string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		out = append(out, m)
	}
	return out
}

// indexOf is the index of the first log line with this message, or -1.
func indexOf(lines []map[string]any, msg string) int {
	for i, l := range lines {
		if l["msg"] == msg {
			return i
		}
	}
	return -1
}

func TestEmbeddedNATSDeliversToSubscribers(t *testing.T) {
	r := newEmbedRig(t, "", freeAddr(t))
	var logs leadtest.LogBuffer
	stop := r.runDaemon(t, &logs)

	_, err := natsgo.Connect("nats://"+r.natsAddr, natsgo.MaxReconnects(0))
	require.Error(t, err, "a downstream service needs the configured credentials")
	nc := r.connect(t)
	got := make(chan *natsgo.Msg, 10)
	_, err = nc.ChanSubscribe("neoagent.>", got)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	now := time.Now()
	r.api.Generate(testSerial, now.Add(-2*time.Hour))
	r.api.Generate(testSerial, now.Add(-time.Hour))
	r.api.Generate(testSerial, now)
	ids := map[string]bool{}
	for len(ids) < 3 {
		select {
		case m := <-got:
			assert.True(t, strings.HasPrefix(m.Subject, "neoagent."+testSerial+"."), m.Subject)
			var ev event.Event
			require.NoError(t, json.Unmarshal(m.Data, &ev))
			assert.Equal(t, ev.ID, m.Header.Get("Ce-Id"))
			assert.Equal(t, testSerial, ev.Chatbot())
			ids[ev.ID] = true
		case <-time.After(20 * time.Second):
			require.FailNow(t, "the subscriber did not get 3 events", "got %d; logs:\n%s", len(ids), logs.String())
		}
	}

	resp, err := http.Get("http://" + r.httpAddr + "/readyz")
	require.NoError(t, err)
	var ready ops.Readiness
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&ready))
	resp.Body.Close()
	assert.Equal(t, []ops.ComponentReadiness{{Name: "nats_server", OK: true}}, ready.Components, "/readyz reports the embedded server")

	// send-test, a separate process beside the daemon, reaches the daemon's server on
	// nats_server.listen with the configured credentials.
	code, stdout, stderr := runMain(t, "send-test", "bus", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `ok: forwarder "bus" (nats) took the test`)
	select {
	case m := <-got:
		assert.NotContains(t, ids, m.Header.Get("Ce-Id"), "the test event")
	case <-time.After(20 * time.Second):
		require.FailNow(t, "the subscriber did not get the test event")
	}
	assert.NotContains(t, stderr, embedPassword)

	stop()
	out := logs.String()
	assert.NotContains(t, out, embedPassword, "the password is never logged")
	lines := logLines(t, out)
	started, closed, stopped := indexOf(lines, "embedded NATS server started"), indexOf(lines, "nats: connection closed"), indexOf(lines, "embedded NATS server stopped")
	require.True(t, started >= 0 && closed >= 0 && stopped >= 0, "logs:\n%s", out)
	assert.Less(t, started, indexOf(lines, "nats: forwarder started"), "the server takes clients before the forwarder connects")
	assert.Less(t, closed, stopped, "the forwarder's connection drains and closes before the server stops")
}

func TestEmbeddedJetStreamKeepsEventsAcrossARestart(t *testing.T) {
	r := newEmbedRig(t, "jetstream: true\n    stream: LEADS", "")
	now := time.Now()
	r.api.Generate(testSerial, now.Add(-2*time.Hour))
	r.api.Generate(testSerial, now.Add(-time.Hour))

	// `once` starts the embedded server, delivers the two records into the stream and
	// stops it again.
	code, _, stderr := runMain(t, "once", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stderr, "once: everything delivered")
	assert.NotContains(t, stderr, embedPassword)

	// The daemon starts the server on the same store_dir: the stream still holds them,
	// and the next record joins them, once.
	r.api.Generate(testSerial, now)
	var logs leadtest.LogBuffer
	r.runDaemon(t, &logs)
	nc := r.connect(t)
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var info *jetstream.StreamInfo
	require.Eventually(t, func() bool {
		s, err := js.Stream(ctx, "LEADS")
		if err != nil {
			return false
		}
		info, err = s.Info(ctx)
		return err == nil && info.State.Msgs >= 3
	}, 20*time.Second, 50*time.Millisecond, "logs:\n%s", &logs)
	assert.EqualValues(t, 3, info.State.Msgs, "two events kept from the first run, one new: none repeated")
	s, err := js.Stream(ctx, "LEADS")
	require.NoError(t, err)
	seen := map[string]bool{}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		require.NoError(t, err)
		seen[m.Header.Get("Ce-Id")] = true
	}
	assert.Len(t, seen, 3, "three different events")
}

func TestShutdownDrainsTheForwarderBeforeTheEmbeddedServerStops(t *testing.T) {
	r := newEmbedRig(t, "jetstream: true\n    stream: LEADS", "")
	var logs leadtest.LogBuffer
	stop := r.runDaemon(t, &logs)
	nc := r.connect(t)
	first := make(chan *natsgo.Msg, 64)
	_, err := nc.ChanSubscribe("neoagent.>", first)
	require.NoError(t, err)
	require.NoError(t, nc.Flush())

	const burst = 40
	now := time.Now()
	for i := range burst {
		r.api.Generate(testSerial, now.Add(-time.Duration(i)*time.Minute))
	}
	select {
	case <-first: // deliveries are flowing: stop in the middle of the burst
	case <-time.After(20 * time.Second):
		require.FailNow(t, "no event reached the subscriber", "logs:\n%s", logs.String())
	}
	stop()

	lines := logLines(t, logs.String())
	for _, l := range lines {
		if lvl := l["level"]; lvl == "WARN" || lvl == "ERROR" {
			assert.Failf(t, "a warning or error while stopping", "%v", l)
		}
	}
	assert.Less(t, indexOf(lines, "nats: connection closed"), indexOf(lines, "embedded NATS server stopped"))

	// Nothing was lost or left half-done: what the outbox no longer owes is in the
	// stream, the rest is still owed, for the next start.
	st, err := dedupe.Open(dedupe.Options{Path: filepath.Join(r.dir, "lb.db"), ReadOnly: true})
	require.NoError(t, err)
	depth, err := st.Depth(context.Background())
	require.NoError(t, err)
	require.NoError(t, st.Close())
	srv := leadtest.StartNATS(t, leadtest.NATSOptions{StoreDir: filepath.Join(r.dir, "nats"), User: "lb", Password: embedPassword})
	stored := srv.ReadStream("LEADS")
	assert.Equal(t, burst, len(stored)+depth["bus"], "stored %d, still owed %d", len(stored), depth["bus"])
}

func TestConfigCheckReportsTheEmbeddedServer(t *testing.T) {
	r := newEmbedRig(t, "", "")
	code, stdout, stderr := runMain(t, "config", "check", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, fmt.Sprintf("embedded NATS server: listen %s (clients dial nats://%s, user \"lb\" with a password), "+
		"JetStream in %s/nats; forwarders using it: bus\n", r.natsAddr, r.natsAddr, r.dir))
	assert.NotContains(t, stdout+stderr, embedPassword)

	// url: embedded without nats_server names the forwarder's key.
	body, err := os.ReadFile(r.cfg)
	require.NoError(t, err)
	cut := strings.Index(string(body), "nats_server:")
	end := strings.Index(string(body), "forwarders:")
	require.NoError(t, os.WriteFile(r.cfg, append(body[:cut:cut], body[end:]...), 0o600))
	code, _, stderr = runMain(t, "config", "check", "--config", r.cfg)
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, "forwarders[0].url: embedded needs nats_server (the embedded NATS server) to be configured")
}

func TestTheEmbeddedServerFailingToStartIsReported(t *testing.T) {
	r := newEmbedRig(t, "", "")
	taken := leadtest.StartNATS(t, leadtest.NATSOptions{})
	body, err := os.ReadFile(r.cfg)
	require.NoError(t, err)
	busy := strings.TrimPrefix(taken.URL(), "nats://")
	require.NoError(t, os.WriteFile(r.cfg, []byte(strings.Replace(string(body), r.natsAddr, busy, 1)), 0o600))

	code, _, stderr := runMain(t, "run", "--config", r.cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "nats_server: embedded NATS server (listen "+busy+")")
	assert.Contains(t, stderr, "address already in use")
	assert.NotContains(t, stderr, embedPassword)
	assert.NotContains(t, stderr, "nats: forwarder started", "no forwarder started without its server")
}
