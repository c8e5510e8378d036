package main

import (
	"encoding/json"
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
	"github.com/leadbridge/leadbridge/ops"
)

func TestBackfillNinetyDaysInChunks(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	cfg := writeConfig(t, t.TempDir(), apiURL, sink.URL, "")

	since := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	until := since.AddDate(0, 0, 89) // 90 days
	for d := 0; d < 90; d += 3 {
		api.Generate(testSerial, since.AddDate(0, 0, d).Add(12*time.Hour))
	}
	api.Generate(testSerial, until.AddDate(0, 0, 5)) // outside the range
	const inRange = 30
	args := []string{"backfill", "--config", cfg, "--since", "2026-06-01", "--until", until.Format(time.DateOnly)}

	code, stdout, stderr := runMain(t, append(args, "--dry-run")...)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 13, api.Requests(), "90 days in 7-day chunks, never one giant request")
	assert.Equal(t, inRange, strings.Count(stdout, "would send"))
	assert.Contains(t, stdout, "nothing was sent")
	assert.Empty(t, sink.IDs(), "a dry run sends nothing")

	code, stdout, stderr = runMain(t, args...)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, sink.IDs(), inRange)
	assert.Contains(t, stdout, "30 queued")
	assert.Contains(t, stderr, "chunks 13/13")

	code, _, stderr = runMain(t, args...)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, sink.IDs(), inRange, "nothing is sent twice without --resend")

	code, _, stderr = runMain(t, append(args, "--resend", "--chunk-days", "30")...)
	require.Equal(t, 0, code, stderr)
	got := sink.IDs()
	require.Len(t, got, 2*inRange, "--resend publishes seen records again")
	assert.ElementsMatch(t, got[:inRange], got[inRange:], "with the same event ids")
}

func TestBackfillFailsWhenSomethingIsDeadLettered(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	sink.AnswerAll(http.StatusUnprocessableEntity)
	cfg := writeConfig(t, t.TempDir(), apiURL, sink.URL, "")
	api.Generate(testSerial, time.Date(2026, 6, 3, 12, 0, 0, 0, time.UTC))
	code, stdout, stderr := runMain(t, "backfill", "--config", cfg, "--since", "2026-06-01", "--until", "2026-06-10")
	assert.Equal(t, 1, code, stdout)
	assert.Contains(t, stderr, "dead-lettered")
	assert.Contains(t, stdout, "1 dead-lettered")
}

func TestBackfillRejectsBadFlags(t *testing.T) {
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", "http://127.0.0.1:2", "")
	for _, args := range [][]string{
		{"--since", "June"},
		{"--since", "2026-06-10", "--until", "2026-06-01"},
		{"--since", "2026-06-01", "--chatbot", "nope"},
		{"--since", "2026-06-01", "--forwarder", "nope"},
	} {
		code, _, stderr := runMain(t, append([]string{"backfill", "--config", cfg}, args...)...)
		assert.Equal(t, 2, code, "%v: %s", args, stderr)
	}
}

func TestSendTestReportsTheOutcome(t *testing.T) {
	sink := leadtest.NewSink(t, nil)
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", sink.URL, "")
	code, stdout, stderr := runMain(t, "send-test", "crm", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `ok: forwarder "crm"`)
	require.Len(t, sink.IDs(), 1)

	sink.AnswerAll(http.StatusUnauthorized)
	code, _, stderr = runMain(t, "send-test", "crm", "--config", cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "permanent")
	assert.Contains(t, stderr, "HTTP 401")

	code, _, _ = runMain(t, "send-test", "nope", "--config", cfg)
	assert.Equal(t, 2, code)
}

func TestBackfillDryRunWhileTheDaemonRuns(t *testing.T) {
	r := newRig(t, 0, "")
	r.withAdminToken(t, "adm-d1e2f3a4b5")
	now := time.Now().UTC()
	r.api.Generate(testSerial, now.Add(-time.Hour))           // the daemon takes this one
	old1 := r.api.Generate(testSerial, now.AddDate(0, 0, -9)) // beyond the poll lookback
	old2 := r.api.Generate(testSerial, now.AddDate(0, 0, -8))
	startDaemon(t, r.cfg, r.addr)
	require.Eventually(t, func() bool { return len(r.good.IDs()) == 1 }, 10*time.Second, 20*time.Millisecond)
	// The target took it before its verdict was committed: wait for the outbox to empty,
	// so that what the store shows after the dry runs is theirs alone.
	owed := func() int {
		code, stdout, stderr := runMain(t, "status", "--config", r.cfg, "--json")
		require.Equal(t, 0, code, stderr)
		var s ops.Status
		require.NoError(t, json.Unmarshal([]byte(stdout), &s))
		n := 0
		for _, f := range s.Forwarders {
			n += f.Pending
		}
		return n
	}
	require.Eventually(t, func() bool { return owed() == 0 }, 10*time.Second, 20*time.Millisecond)

	since := now.AddDate(0, 0, -10).Format(time.DateOnly)
	code, stdout, stderr := runMain(t, "backfill", "--config", r.cfg, "--since", since, "--dry-run")
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, 2, strings.Count(stdout, "would send"), stdout)
	assert.Contains(t, stdout, fmt.Sprintf("session %d ", old1.SessionID))
	assert.Contains(t, stdout, fmt.Sprintf("session %d ", old2.SessionID))
	assert.Contains(t, stdout, "to good,bad")
	assert.Contains(t, stdout, "dry run: 3 records found, 2 would be sent; nothing was sent or recorded")

	code, stdout, stderr = runMain(t, "backfill", "--config", r.cfg, "--since", since, "--dry-run", "--resend", "--forwarder", "bad")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "3 would be sent", "--resend and --forwarder reach the daemon")
	assert.NotContains(t, stdout, "good")

	// The store shows that the dry runs recorded nothing: one record seen, nothing owed.
	code, stdout, stderr = runMain(t, "status", "--config", r.cfg, "--json")
	require.Equal(t, 0, code, stderr)
	var s ops.Status
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	assert.True(t, s.Daemon)
	assert.Equal(t, 1, s.Chatbots[0].Seen)
	for _, f := range s.Forwarders {
		assert.Zero(t, f.Pending, f.Name)
	}
	assert.Len(t, r.good.IDs(), 1, "a dry run sends nothing")
}

func TestBackfillDryRunWithoutAStoreCreatesNone(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	dir := t.TempDir()
	cfg := writeConfig(t, dir, apiURL, "http://127.0.0.1:1", "")
	api.Generate(testSerial, time.Date(2026, 6, 3, 12, 0, 0, 0, time.UTC))
	code, stdout, stderr := runMain(t, "backfill", "--config", cfg, "--since", "2026-06-01", "--until", "2026-06-10", "--dry-run")
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "1 would be sent")
	_, err := os.Stat(filepath.Join(dir, "lb.db"))
	assert.True(t, os.IsNotExist(err), "a dry run records nothing, not even an empty store")
}

func TestWritingCommandsSayWhatToDoWhileTheDaemonRuns(t *testing.T) {
	r := newRig(t, 0, "")
	startDaemon(t, r.cfg, r.addr)
	code, _, stderr := runMain(t, "backfill", "--config", r.cfg, "--since", time.Now().UTC().Format(time.DateOnly))
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "locked")
	assert.Contains(t, stderr, "stop the daemon first (--dry-run works while it runs)")
	code, _, stderr = runMain(t, "once", "--config", r.cfg)
	assert.Equal(t, 1, code)
	assert.Contains(t, stderr, "let the daemon do it, or stop it first")
}
