package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// streamCount is how many messages the LEADS stream holds.
func streamCount(t *testing.T, ns *leadtest.NATS) uint64 {
	t.Helper()
	return uint64(len(ns.ReadStream("LEADS")))
}

// TestThreeTargets runs one config with NATS (JetStream), Slack filtered to appointments
// and a webhook: each new record reaches each target that wants it once, and a NATS
// outage delays deliveries without losing any.
func TestThreeTargets(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	slack := leadtest.NewSlack(t)
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	natsURL := ns.URL()

	dir := t.TempDir()
	t.Setenv("LB_SLACK_URL", slack.URL())
	cfg := writeConfig(t, dir, apiURL, sink.URL, fmt.Sprintf(`
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
	assert.Len(t, sink.IDs(), 6)
	assert.Equal(t, uint64(6), streamCount(t, ns))
	msgs := slack.Messages()
	require.Len(t, msgs, appts, "only appointments go to the sales channel")
	for _, m := range msgs {
		assert.NotEmpty(t, m["blocks"])
		assert.Contains(t, m["text"], "appointment")
	}
	assert.NotContains(t, stderr, "SLACKSECRET")

	// Again: nothing is repeated anywhere.
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, sink.IDs(), 6)
	assert.Equal(t, uint64(6), streamCount(t, ns))
	assert.Len(t, slack.Messages(), appts)

	// NATS goes away: the webhook still gets the new record, NATS's copy waits.
	ns.Stop()
	api.Generate(testSerial, now)
	code, _, _ = runMain(t, "once", "--config", cfg, "--max-wait", "1500ms")
	assert.Equal(t, 1, code, "a delivery is still pending")
	assert.Len(t, sink.IDs(), 7)

	ns.Start()
	code, _, stderr = runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, uint64(7), streamCount(t, ns), "the pending delivery arrived after the outage")
	assert.Len(t, sink.IDs(), 7)
}
