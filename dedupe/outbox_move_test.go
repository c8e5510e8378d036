package dedupe_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
)

// drainChanges forgets earlier signals of s.Changes.
func drainChanges(s *dedupe.Store) {
	select {
	case <-s.Changes():
	default:
	}
}

func TestMovePendingToARenamedForwarder(t *testing.T) {
	path := dbPath(t)
	// Three records went to crm, before the rename.
	s := open(t, path, func(o *dedupe.Options) { o.Route = func(event.Event) []string { return []string{"crm"} } })
	_, err := s.Ingest(t.Context(), bot, leads(bot, 0, 3))
	require.NoError(t, err)
	crm := pending(t, s, "crm")
	require.Len(t, crm, 3)
	failed := crm[0]
	failed.Attempts, failed.FirstTry, failed.NextTry, failed.LastError = 4, t0, t0.Add(time.Hour), "webhook crm: HTTP 503"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: failed, Verdict: event.Retrying}}))
	require.NoError(t, s.Close())

	// After the rename, crm-v2 took the third record itself (the poll re-read it) and a new one.
	s = open(t, path, func(o *dedupe.Options) { o.Route = func(event.Event) []string { return []string{"crm-v2"} } })
	_, err = s.Backfill(t.Context(), bot, leads(bot, 2, 2), event.BackfillOptions{Resend: true})
	require.NoError(t, err)
	require.Len(t, pending(t, s, "crm-v2"), 2)
	drainChanges(s)

	moved, already, err := s.MovePending(t.Context(), "crm", "crm-v2")
	require.NoError(t, err)
	assert.Equal(t, 2, moved)
	assert.Equal(t, 1, already, "the third record was owed to crm-v2 already: not twice")
	select {
	case <-s.Changes():
	default:
		t.Fatal("a move must wake the dispatcher through Changes")
	}

	assert.Empty(t, pending(t, s, "crm"))
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.NotContains(t, depth, "crm", "the old forwarder is gone from the outbox")
	got := pending(t, s, "crm-v2")
	require.Len(t, got, 4)
	assert.Equal(t, []string{leads(bot, 2, 1)[0].ID(), leads(bot, 3, 1)[0].ID(), crm[0].Event.ID, crm[1].Event.ID},
		[]string{got[0].Event.ID, got[1].Event.ID, got[2].Event.ID, got[3].Event.ID}, "moved entries come after, in order, same event ids")
	m := got[2]
	assert.Equal(t, "crm-v2", m.Forwarder)
	assert.Equal(t, crm[0].Enqueued, m.Enqueued)
	assert.Zero(t, m.Attempts, "a fresh start against the new target")
	assert.True(t, m.FirstTry.IsZero())
	assert.True(t, m.NextTry.IsZero())
	assert.Empty(t, m.LastError)
	assert.Greater(t, m.Seq, got[1].Seq)

	moved, already, err = s.MovePending(t.Context(), "crm", "crm-v2")
	require.NoError(t, err)
	assert.Zero(t, moved+already, "nothing left to move")
	for _, bad := range [][2]string{{"", "x"}, {"x", ""}, {"crm-v2", "crm-v2"}} {
		_, _, err := s.MovePending(t.Context(), bad[0], bad[1])
		require.Error(t, err, "%q", bad)
		assert.Contains(t, err.Error(), "two different forwarder names")
	}
	assert.Len(t, pending(t, s, "crm-v2"), 4, "bad moves changed nothing")
}

func TestDropPending(t *testing.T) {
	s := open(t, dbPath(t), nil)
	_, err := s.Ingest(t.Context(), bot, append(leads(bot, 0, 2), mkLead(bot, event.KindAppointment, 9, t0)))
	require.NoError(t, err)
	n, err := s.DropPending(t.Context(), "sales")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Empty(t, pending(t, s, "sales"))
	assert.Len(t, pending(t, s, "bus"), 3, "other forwarders keep theirs")
	n, err = s.DropPending(t.Context(), "sales")
	require.NoError(t, err)
	assert.Zero(t, n)
	_, err = s.DropPending(t.Context(), "")
	require.Error(t, err)
}

func TestMoveAndDropRefusedReadOnly(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	_, err := s.Ingest(t.Context(), bot, leads(bot, 0, 1))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	ro := open(t, path, func(o *dedupe.Options) { o.ReadOnly = true })
	_, _, err = ro.MovePending(t.Context(), "bus", "bus2")
	require.ErrorIs(t, err, dedupe.ErrReadOnly)
	_, err = ro.DropPending(t.Context(), "bus")
	require.ErrorIs(t, err, dedupe.ErrReadOnly)
}
