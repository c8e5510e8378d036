package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadsim"
)

// slackStandIn is an incoming-webhook endpoint that keeps the messages it is sent.
type slackStandIn struct {
	mu   sync.Mutex
	msgs []map[string]any
	srv  *httptest.Server
}

func newSlackStandIn(t *testing.T) *slackStandIn {
	s := &slackStandIn{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/services/T000/B000/SLACKSECRET" {
			http.Error(w, "no_service", http.StatusNotFound)
			return
		}
		var m map[string]any
		if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, m)
		s.mu.Unlock()
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *slackStandIn) messages() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.msgs...)
}

func startNATS(t *testing.T, port int, storeDir string) *natsserver.Server {
	t.Helper()
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: storeDir, NoLog: true, NoSigs: true,
	})
	require.NoError(t, err)
	ns.Start()
	require.True(t, ns.ReadyForConnections(10*time.Second))
	return ns
}

func streamCount(t *testing.T, url string) uint64 {
	t.Helper()
	nc, err := natsgo.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "LEADS")
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	return info.State.Msgs
}

// TestThreeTargets runs one config with NATS (JetStream), Slack filtered to appointments
// and a webhook: each new record reaches each target that wants it once, and a NATS
// outage delays deliveries without losing any.
func TestThreeTargets(t *testing.T) {
	api := leadsim.New(testKey)
	apiSrv := httptest.NewServer(api)
	defer apiSrv.Close()
	sink := newWebhookSink(t)
	slack := newSlackStandIn(t)
	natsDir := t.TempDir()
	ns := startNATS(t, -1, natsDir)
	natsURL := ns.ClientURL()
	port := ns.Addr().(interface{ String() string }).String()
	port = port[strings.LastIndex(port, ":")+1:]

	dir := t.TempDir()
	t.Setenv("LB_SLACK_URL", slack.srv.URL+"/services/T000/B000/SLACKSECRET")
	cfg := writeConfig(t, dir, apiSrv.URL, sink.srv.URL, fmt.Sprintf(`
  - name: bus
    type: nats
    url: %s
    jetstream: true
    stream: LEADS
    timeout: 1s
    retry: {initial_interval: 50ms, max_interval: 200ms}
  - name: sales
    type: slack
    webhook_url: ${LB_SLACK_URL}
    types: [appointment]
`, natsURL))

	now := time.Now()
	appts := 0
	for i := range 6 {
		r := api.Generate(testSerial, now.Add(-time.Duration(i)*time.Hour))
		if r.Type == "Appointment" {
			appts++
		}
	}
	code, _, stderr := runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, sink.received(), 6)
	assert.Equal(t, uint64(6), streamCount(t, natsURL))
	msgs := slack.messages()
	require.Len(t, msgs, appts, "only appointments go to the sales channel")
	for _, m := range msgs {
		assert.NotEmpty(t, m["blocks"])
		assert.Contains(t, m["text"], "appointment")
	}
	assert.NotContains(t, stderr, "SLACKSECRET")

	// Again: nothing is repeated anywhere.
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, sink.received(), 6)
	assert.Equal(t, uint64(6), streamCount(t, natsURL))
	assert.Len(t, slack.messages(), appts)

	// NATS goes away: the webhook still gets the new record, NATS's copy waits.
	ns.Shutdown()
	ns.WaitForShutdown()
	api.Generate(testSerial, now)
	code, _, _ = runMain(t, "once", "--config", cfg, "--max-wait", "1500ms")
	assert.Equal(t, 1, code, "a delivery is still pending")
	assert.Len(t, sink.received(), 7)

	ns = startNATS(t, atoi(t, port), natsDir)
	defer ns.Shutdown()
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, uint64(7), streamCount(t, natsURL), "the pending delivery arrived after the outage")
	assert.Len(t, sink.received(), 7)
}

func atoi(t *testing.T, s string) int {
	var n int
	_, err := fmt.Sscanf(s, "%d", &n)
	require.NoError(t, err)
	return n
}
