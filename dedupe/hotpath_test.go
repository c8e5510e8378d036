package dedupe

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// busStore opens a store in t.TempDir() that routes every event to "bus", its wall clock
// read from *now.
func busStore(t *testing.T, now *time.Time) *Store {
	t.Helper()
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "s.db"), Initial: InitialEmit,
		Route: func(event.Event) []string { return []string{"bus"} }, Now: func() time.Time { return *now }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// busLeads are n records of chatbot "bot1" from session from on, created before now.
func busLeads(from, n int, now time.Time) []event.Lead {
	out := make([]event.Lead, n)
	for i := range out {
		out[i] = event.Lead{Chatbot: "bot1", Kind: event.KindLead, Name: "Ada", Content: "hello",
			SessionID: int64(from + i), CreatedAt: now.Add(-time.Hour + time.Duration(i)*time.Millisecond)}
	}
	return out
}

// TestPendingSizesItsPageOnce: a page of pending deliveries is made at its size, not
// grown Delivery by Delivery, and an outbox whose sequence ran far past its entries (one
// entry stuck in front of many delivered ones) costs no more than the page's limit, or
// maxPendingRoom when all are read.
func TestPendingSizesItsPageOnce(t *testing.T) {
	now := time.Now().UTC()
	s := busStore(t, &now)
	_, err := s.Ingest(t.Context(), "bot1", busLeads(0, 250, now))
	require.NoError(t, err)

	for _, c := range []struct {
		after      uint64
		limit, len int
	}{{0, 100, 100}, {200, 100, 50}, {0, 0, 250}, {249, 0, 1}} {
		page, err := s.Pending(t.Context(), "bus", c.after, c.limit)
		require.NoError(t, err)
		require.Len(t, page, c.len, "after %d, limit %d", c.after, c.limit)
		assert.Equal(t, c.len, cap(page), "after %d, limit %d: the page is made at its size", c.after, c.limit)
	}
	idle, err := s.Pending(t.Context(), "bus", 250, 100)
	require.NoError(t, err)
	assert.Nil(t, idle, "an idle read makes no page")

	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Bucket([]byte("bus")).SetSequence(1 << 40)
	}))
	page, err := s.Pending(t.Context(), "bus", 0, 10)
	require.NoError(t, err)
	assert.Len(t, page, 10)
	assert.Equal(t, 10, cap(page))
	page, err = s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	assert.Len(t, page, 250)
	assert.LessOrEqual(t, cap(page), 2*maxPendingRoom, "made for at most maxPendingRoom, then grown")

	// A sequence behind the entries (not written by this store) bounds nothing: all are read.
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Bucket([]byte("bus")).SetSequence(3)
	}))
	page, err = s.Pending(t.Context(), "bus", 100, 0)
	require.NoError(t, err)
	assert.Len(t, page, 150)
}

// TestActivityPruneOfALongRun: attempts pruned by age in one go, a run over many pages
// of the log, all go, each with its reference to its event record: none is skipped, and
// no event record is left behind or freed early.
func TestActivityPruneOfALongRun(t *testing.T) {
	now := time.Now().UTC()
	s := busStore(t, &now)
	const n = ActivityPerForwarder + 300
	_, err := s.Ingest(t.Context(), "bot1", busLeads(0, n, now))
	require.NoError(t, err)
	ds, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, n)
	outcomes := make([]event.Outcome, n)
	for i, d := range ds {
		outcomes[i] = event.Outcome{Delivery: d, Verdict: event.Acked}
		if i%3 == 0 { // retried first: its entry adds a reference for its attempt, then hands one over
			retry := d
			retry.Attempts, retry.LastError = 1, "HTTP 503"
			require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: retry, Verdict: event.Retrying}}))
		}
	}
	for i := 0; i < n; i += 250 {
		require.NoError(t, s.Record(t.Context(), outcomes[i:min(i+250, n)]))
	}
	counts := func() (attempts, events int) {
		require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
			attempts = tx.Bucket(bucketActivity).Bucket([]byte("bus")).Stats().KeyN
			events = tx.Bucket(bucketEvents).Stats().KeyN
			return nil
		}))
		return attempts, events
	}
	attempts, events := counts()
	require.Equal(t, ActivityPerForwarder, attempts, "the newest per forwarder")
	// The attempts kept refer to fewer events than they are: a retried entry's two attempts share one.
	kept := map[string]bool{}
	all, err := s.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	for _, a := range all {
		kept[a.EventID] = true
	}
	require.Equal(t, len(kept), events, "one event record per event an attempt refers to")

	// A week later one more attempt prunes every other one, in one run.
	now = now.Add(ActivityMaxAge + time.Hour)
	Elapse(s, ActivityMaxAge+time.Hour)
	_, err = s.Ingest(t.Context(), "bot1", busLeads(n, 1, now))
	require.NoError(t, err)
	last, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	require.Len(t, last, 1)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: last[0], Verdict: event.Acked}}))
	attempts, events = counts()
	assert.Equal(t, 1, attempts)
	assert.Equal(t, 1, events, "only the last attempt's event is kept")
	_, found, err := s.ActivityEvent(t.Context(), last[0].Event.ID)
	require.NoError(t, err)
	assert.True(t, found)
}
