package natsstore_test

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/internal/storetest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// The log is bounded as bbolt's is, and as the conformance suite expects.
func TestActivityBoundsAreDedupes(t *testing.T) {
	assert.Equal(t, dedupe.ActivityPerForwarder, natsstore.ActivityPerForwarder)
	assert.Equal(t, dedupe.ActivityMaxAge, natsstore.ActivityMaxAge)
	assert.Equal(t, storetest.ActivityPerForwarder, natsstore.ActivityPerForwarder)
	assert.Equal(t, storetest.ActivityMaxAge, natsstore.ActivityMaxAge)
}

// The outcomes a Dispatcher records through the shared outbox go to the activity log
// too, whichever replica delivered them.
func TestSharedOutboxRecordsActivity(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	sink := leadtest.NewSink(t, nil)
	a := startReplica(t, ns, sink, 5*time.Second)
	b := startReplica(t, ns, sink, 5*time.Second)
	page := leadtest.Leads(bot, 1, 6, base)
	_, err := a.store.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return a.delivered()+b.delivered() == 6 }, 20*time.Second, 20*time.Millisecond)

	got, err := b.store.Activity(t.Context(), event.ActivityQuery{Forwarder: "crm"})
	require.NoError(t, err)
	require.Len(t, got, 6)
	seen := map[string]bool{}
	for _, at := range got {
		assert.Equal(t, event.Acked, at.Verdict)
		assert.Equal(t, 1, at.Attempt)
		seen[at.EventID] = true
	}
	for _, l := range page {
		assert.True(t, seen[l.ID()], "event %s logged", l.ID())
		ev, found, err := a.store.ActivityEvent(t.Context(), l.ID())
		require.NoError(t, err)
		require.True(t, found)
		assert.Equal(t, l.Email, ev.Data.Email)
	}
}

// An activity log the server refuses to write (its stream deleted under the store)
// costs the attempt's line in the log, a warning that names no lead, and nothing else:
// the outcome is recorded.
func TestActivityLogFailureDoesNotFailRecord(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	logs := &leadtest.LogBuffer{}
	s := open(t, nc, func(o *natsstore.Options) { o.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
	l := leadtest.Lead(bot, event.KindLead, 1, base)
	_, err := s.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	ds, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 1)

	require.NoError(t, js.DeleteStream(t.Context(), natsstore.DefaultPrefix+"_activity"))
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: ds[0], Verdict: event.Acked}}))
	left, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	assert.Empty(t, left, "the outcome is recorded")
	assert.Contains(t, logs.String(), "the activity log misses attempts")
	for _, personal := range []string{l.Name, l.Email, l.Content} {
		assert.NotContains(t, logs.String(), personal)
	}
}

// Reading the log leaves no consumer behind on the server, however often the console
// asks.
func TestActivityReadLeavesNoConsumer(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	_, err := s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 3, base))
	require.NoError(t, err)
	for _, fwd := range []string{"bus", "crm"} {
		ds, err := s.Pending(t.Context(), fwd, 0, 0)
		require.NoError(t, err)
		var outcomes []event.Outcome
		for _, d := range ds {
			outcomes = append(outcomes, event.Outcome{Delivery: d, Verdict: event.Acked})
		}
		require.NoError(t, s.Record(t.Context(), outcomes))
	}
	for range 5 {
		got, err := s.Activity(t.Context(), event.ActivityQuery{})
		require.NoError(t, err)
		require.Len(t, got, 6)
	}
	st, err := js.Stream(t.Context(), natsstore.DefaultPrefix+"_activity")
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	assert.Zero(t, info.State.Consumers)
}
