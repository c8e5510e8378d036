package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// store copy opens the bbolt file and the configured JetStream store and copies one into
// the other (package storecopy owns what goes: its tests check each part): the command
// says what it copied, the records the file knew stay known, what it owed is still owed
// once, and a second run adds nothing.
func TestStoreCopyFromBbolt(t *testing.T) {
	ctx := t.Context()
	path := filepath.Join(t.TempDir(), "lb.db")
	now := time.Now().UTC()
	leads := leadtest.Leads(testSerial, 1, 5, now.Add(-time.Hour))
	src, err := dedupe.Open(dedupe.Options{Path: path, Initial: dedupe.InitialEmit, Retention: 2160 * time.Hour,
		Route: leadtest.RouteTo("crm")})
	require.NoError(t, err)
	_, err = src.Ingest(ctx, testSerial, leads)
	require.NoError(t, err)
	ds := leadtest.Pending(t, src, "crm")
	require.Len(t, ds, 5)
	retry := ds[2]
	retry.Attempts, retry.FirstTry, retry.NextTry, retry.LastError = 3, now.Add(-time.Minute), now.Add(time.Minute), "webhook crm: HTTP 503"
	require.NoError(t, src.Record(ctx, []event.Outcome{
		{Delivery: ds[0], Verdict: event.Acked}, {Delivery: ds[1], Verdict: event.Acked},
		{Delivery: retry, Verdict: event.Retrying},
		{Delivery: ds[3], Verdict: event.Dead, At: now},
	}))
	require.NoError(t, src.RecordPoll(ctx, testSerial, now, nil))
	require.NoError(t, src.Pause(ctx, "crm", "crm: HTTP 410 Gone", "h1"))
	require.NoError(t, src.Close())

	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	cfg := natsConfig(t, "copy", "http://127.0.0.1:9", "http://127.0.0.1:9", ns.URL(), "")
	code, out, stderr := runMain(t, "store", "copy", "--from", path, "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "store copy: 5 seen keys (0 already there), 1 chatbots, 2 pending deliveries, 1 dead letters, 1 pauses")
	code, out, stderr = runMain(t, "store", "copy", "--from", path, "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, "store copy: 5 seen keys (5 already there)", "a second run adds no seen key")

	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	dst, err := natsstore.Open(context.Background(), natsstore.Options{Conn: nc, Initial: natsstore.InitialEmit,
		Retention: 2160 * time.Hour, Route: leadtest.RouteTo("crm")})
	require.NoError(t, err)
	res, err := dst.Ingest(ctx, testSerial, leads)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 5}, res, "every record the bbolt store knew is known")
	pending, err := dst.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	assert.Len(t, pending, 2, "each owed delivery once, after two runs (storecopy's tests check what each carries)")
}

// store copy refuses a destination that is not nats, and a source a daemon holds.
func TestStoreCopyRefusals(t *testing.T) {
	dir := t.TempDir()
	cfg := writeConfig(t, dir, "http://127.0.0.1:9", "http://127.0.0.1:9", "")
	code, _, stderr := runMain(t, "store", "copy", "--from", filepath.Join(dir, "other.db"), "--config", cfg)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, "the destination must be nats")

	path := filepath.Join(dir, "held.db")
	held, err := dedupe.Open(dedupe.Options{Path: path})
	require.NoError(t, err)
	t.Cleanup(func() { _ = held.Close() })
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	code, _, stderr = runMain(t, "store", "copy", "--from", path, "--config", natsConfig(t, "c", "http://127.0.0.1:9", "http://127.0.0.1:9", ns.URL(), ""))
	assert.NotEqual(t, 0, code)
	assert.Contains(t, stderr, "stop the daemon that uses")
}
