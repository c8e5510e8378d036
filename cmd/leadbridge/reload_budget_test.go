package main

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

// A reload that changes an account (a rotated key, a new max_rps) keeps the account's
// request budget: polls queued in it before the reload and those asked after it share
// one rate, and a 429's hold on the account carries on. A fresh budget beside the old
// one would let both queues call the host at once, twice the rate it was promised.
func TestReloadKeepsAChangedAccountsBudget(t *testing.T) {
	r := newReloadRig(t, "http://127.0.0.1:9") // never called: nothing runs the loop
	r.write(t, []string{serialA}, hookEntry("crm", "http://127.0.0.1:9", ""), "")
	_, a, err := openAppFile(t.Context(), r.path, io.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { _ = a.Close() })
	a.clients[event.DefaultAccount].Budget.Throttled(time.Now(), time.Hour) // the host said 429, come back in an hour

	t.Setenv("LB_TEST_KEY", "rotated-key-7d1e44")
	r.write(t, []string{serialA}, hookEntry("crm", "http://127.0.0.1:9", ""), "")
	rep, err := a.reload(t.Context())
	require.NoError(t, err)
	require.Equal(t, []string{event.DefaultAccount}, rep.AccountsChanged)

	c := a.clients[event.DefaultAccount]
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	assert.ErrorIs(t, c.Budget.Wait(ctx), context.DeadlineExceeded, "the 429's hold still stands")
}

// A reload that comes once the daemon is closing (an admin request the HTTP server let
// in during shutdown) is refused, saying why, and touches nothing: Close waits for a
// reload under way and no reload starts after it, so none builds forwarders or changes
// routes on a store and forwarders being closed.
func TestReloadDuringCloseIsRefused(t *testing.T) {
	r := newReloadRig(t, "http://127.0.0.1:9")
	r.write(t, []string{serialA}, hookEntry("crm", "http://127.0.0.1:9", ""), "")
	_, a, err := openAppFile(t.Context(), r.path, io.Discard)
	require.NoError(t, err)
	require.NoError(t, a.Close())

	r.write(t, []string{serialA, serialB}, hookEntry("crm", "http://127.0.0.1:9", "")+hookEntry("erp", "http://127.0.0.1:9", ""), "")
	_, err = a.reload(t.Context())
	var refused *ops.RefusedError
	require.ErrorAs(t, err, &refused)
	assert.Contains(t, refused.Reason, "stopping")
	assert.NotContains(t, a.forwarders, "erp", "nothing built")
	assert.Len(t, a.cfg.Chatbots(), 1, "the running config stays")
}

// A chatbot a reload removed leaves leadbridge_last_successful_poll_timestamp_seconds:
// kept, its last success would age for ever and an alert on that age (the usual "no
// poll for 10m") would fire for a chatbot nobody polls any more, until a restart.
func TestReloadRemovesARemovedChatbotsLastSuccessGauge(t *testing.T) {
	_, apiURL := leadtest.StartAPI(t, testKey)
	r := newReloadRig(t, apiURL)
	r.write(t, []string{serialA, serialB}, hookEntry("crm", "http://127.0.0.1:9", ""), "")
	startDaemon(t, r.path, r.addr)
	gauge := func(serial string) string {
		return "leadbridge_last_successful_poll_timestamp_seconds{chatbot=" + serial + "}"
	}
	require.Eventually(t, func() bool {
		m := scrape(t, r.addr)
		_, a := m[gauge(serialA)]
		_, b := m[gauge(serialB)]
		return a && b
	}, 10*time.Second, 20*time.Millisecond, "both chatbots polled")

	r.write(t, []string{serialA}, hookEntry("crm", "http://127.0.0.1:9", ""), "")
	code, _, stderr := runMain(t, "reload", "--config", r.path)
	require.Equal(t, 0, code, stderr)
	m := scrape(t, r.addr)
	assert.NotContains(t, m, gauge(serialB), "a removed chatbot")
	assert.Contains(t, m, gauge(serialA))
}
