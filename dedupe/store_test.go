package dedupe_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

const bot = "3254a9d0424c4806b9ea3d0763ccf001"

var t0 = time.Date(2024, 3, 1, 10, 0, 0, 123456789, time.UTC)

func mkLead(serial string, kind event.Kind, session int64, created time.Time) event.Lead {
	return event.Lead{
		Chatbot: serial, ChatbotName: "Main site", Kind: kind,
		Name: fmt.Sprintf("person %d", session), Email: fmt.Sprintf("p%d@example.com", session),
		Content: "hello", SessionID: session, URI: "www.example.com", Count: 1, CreatedAt: created,
	}
}

func leads(serial string, from, n int) []event.Lead {
	out := make([]event.Lead, n)
	for i := range out {
		s := from + i
		out[i] = mkLead(serial, event.KindLead, int64(s), t0.Add(time.Duration(s)*time.Minute))
	}
	return out
}

// routeAll sends every event to "bus", and appointments also to "sales".
func routeAll(ev event.Event) []string {
	if ev.Kind() == event.KindAppointment {
		return []string{"bus", "sales"}
	}
	return []string{"bus"}
}

func open(t testing.TB, path string, mod func(*dedupe.Options)) *dedupe.Store {
	t.Helper()
	// The records of these tests are from t0's day: the store's wall clock is set there.
	opts := dedupe.Options{Path: path, Initial: dedupe.InitialEmit, Route: routeAll, Retention: 24 * time.Hour,
		Now: func() time.Time { return t0.Add(12 * time.Hour) }}
	if mod != nil {
		mod(&opts)
	}
	s, err := dedupe.Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "leadbridge.db") }

func ids(evs []event.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func pending(t *testing.T, s *dedupe.Store, fwd string) []event.Delivery {
	t.Helper()
	ds, err := s.Pending(t.Context(), fwd, 0, 0)
	require.NoError(t, err)
	return ds
}

func TestIngestNewDuplicateUpdated(t *testing.T) {
	for _, tc := range []struct {
		name        string
		emitUpdates bool
		want        event.Ingested // of the page with one changed record
		wantBus     int            // bus outbox entries after it
	}{
		{name: "updates off", emitUpdates: false, want: event.Ingested{Duplicate: 3}, wantBus: 3},
		{name: "updates on", emitUpdates: true, want: event.Ingested{Duplicate: 2, Updated: 1}, wantBus: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, dbPath(t), func(o *dedupe.Options) { o.EmitUpdates = tc.emitUpdates })
			page := leads(bot, 1, 3)

			res, err := s.Ingest(t.Context(), bot, page)
			require.NoError(t, err)
			assert.Equal(t, 3, res.New)
			assert.Equal(t, []string{page[0].ID(), page[1].ID(), page[2].ID()}, ids(res.Events))
			for _, ev := range res.Events {
				assert.Equal(t, event.ActionCreated, ev.Action())
			}

			res, err = s.Ingest(t.Context(), bot, page)
			require.NoError(t, err)
			assert.Equal(t, event.Ingested{Duplicate: 3}, res)

			changed := append([]event.Lead(nil), page...)
			changed[1].Count = 2
			changed[1].Content = "hello again"
			res, err = s.Ingest(t.Context(), bot, changed)
			require.NoError(t, err)
			if tc.emitUpdates {
				require.Len(t, res.Events, 1)
				upd := res.Events[0]
				assert.Equal(t, event.ActionUpdated, upd.Action())
				assert.Equal(t, event.NewUpdated(changed[1], time.Now()).ID, upd.ID)
				assert.NotEqual(t, changed[1].ID(), upd.ID)
				assert.Equal(t, 2, upd.Data.Count)
				tc.want.Events = res.Events
			}
			assert.Equal(t, tc.want, res)
			assert.Len(t, pending(t, s, "bus"), tc.wantBus)

			// The new hash is stored: the same changed content is a plain duplicate now.
			res, err = s.Ingest(t.Context(), bot, changed)
			require.NoError(t, err)
			assert.Equal(t, event.Ingested{Duplicate: 3}, res)
			assert.Len(t, pending(t, s, "bus"), tc.wantBus)
		})
	}
}

func TestIngestRoutesPerForwarder(t *testing.T) {
	s := open(t, dbPath(t), func(o *dedupe.Options) {
		o.Route = func(ev event.Event) []string {
			if ev.Kind() == event.KindAppointment {
				return []string{"sales", "bus", "sales"} // a repeated name yields one entry
			}
			return []string{"bus"}
		}
	})
	lead := mkLead(bot, event.KindLead, 1, t0)
	appt := mkLead(bot, event.KindAppointment, 2, t0)
	res, err := s.Ingest(t.Context(), bot, []event.Lead{lead, appt})
	require.NoError(t, err)
	assert.Equal(t, 2, res.New)

	bus := pending(t, s, "bus")
	require.Len(t, bus, 2)
	assert.Equal(t, []string{lead.ID(), appt.ID()}, []string{bus[0].Event.ID, bus[1].Event.ID})
	sales := pending(t, s, "sales")
	require.Len(t, sales, 1)
	assert.Equal(t, appt.ID(), sales[0].Event.ID)
	assert.Equal(t, "sales", sales[0].Forwarder)
	assert.False(t, sales[0].Enqueued.IsZero())
	assert.Zero(t, sales[0].Attempts)

	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bus": 2, "sales": 1}, depth)
}

func TestIngestNilRouteTakesRecordsWithoutDeliveries(t *testing.T) {
	s := open(t, dbPath(t), func(o *dedupe.Options) { o.Route = nil })
	res, err := s.Ingest(t.Context(), bot, leads(bot, 1, 2))
	require.NoError(t, err)
	assert.Equal(t, 2, res.New)
	assert.Len(t, res.Events, 2)
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth)
	select {
	case <-s.Changes():
		t.Fatal("Changes signalled without outbox entries")
	default:
	}
}

func TestIngestDuplicateWithinPageCountsOnce(t *testing.T) {
	s := open(t, dbPath(t), nil)
	l := mkLead(bot, event.KindAppointment, 7, t0)
	res, err := s.Ingest(t.Context(), bot, []event.Lead{l, l, l})
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)
	assert.Zero(t, res.Duplicate)
	assert.Len(t, res.Events, 1)
	assert.Len(t, pending(t, s, "bus"), 1)
	assert.Len(t, pending(t, s, "sales"), 1)

	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, bots[bot].Seen)
}

func TestInitialSkipBaselineSurvivesRestart(t *testing.T) {
	path := dbPath(t)
	skip := func(o *dedupe.Options) { o.Initial = dedupe.InitialSkip }
	s := open(t, path, skip)

	res, err := s.Ingest(t.Context(), bot, leads(bot, 1, 5))
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Baseline: 5}, res)
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth)

	// An empty first page still completes the baseline.
	const other = "otherbot"
	res, err = s.Ingest(t.Context(), other, nil)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{}, res)

	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.True(t, bots[bot].Initialized)
	assert.Equal(t, 5, bots[bot].Seen)
	assert.True(t, bots[other].Initialized)

	require.NoError(t, s.Close())
	s = open(t, path, skip)

	// After a restart the same page does not flood; only the genuinely new record is sent.
	res, err = s.Ingest(t.Context(), bot, leads(bot, 1, 6))
	require.NoError(t, err)
	assert.Equal(t, 5, res.Duplicate)
	assert.Equal(t, 1, res.New)
	assert.Zero(t, res.Baseline)
	assert.Equal(t, []string{leads(bot, 6, 1)[0].ID()}, ids(res.Events))

	res, err = s.Ingest(t.Context(), other, leads(other, 1, 1))
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)

	// A chatbot first seen after the restart gets its own baseline.
	res, err = s.Ingest(t.Context(), "third", leads("third", 1, 2))
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Baseline: 2}, res)
	assert.Len(t, pending(t, s, "bus"), 2)
}

func TestInitialEmitSendsFirstPageOnceAcrossRestart(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	res, err := s.Ingest(t.Context(), bot, leads(bot, 1, 4))
	require.NoError(t, err)
	assert.Equal(t, 4, res.New)
	assert.Len(t, pending(t, s, "bus"), 4)

	require.NoError(t, s.Close())
	s = open(t, path, nil)
	res, err = s.Ingest(t.Context(), bot, leads(bot, 1, 4))
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 4}, res)
	assert.Len(t, pending(t, s, "bus"), 4)
}

func TestEventIDsMatchAFreshProcess(t *testing.T) {
	path := dbPath(t)
	l := mkLead(bot, event.KindAppointment, 31313, time.Date(2023, 11, 22, 11, 13, 44, 54019000, time.FixedZone("CST", 8*3600)))
	s := open(t, path, func(o *dedupe.Options) { o.Retention = 0 })
	res, err := s.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	require.NoError(t, s.Close())

	fresh := event.NewCreated(l)
	require.Len(t, res.Events, 1)
	assert.Equal(t, fresh.ID, res.Events[0].ID)
	assert.Equal(t, l.ID(), fresh.ID)

	s = open(t, path, nil)
	ds := pending(t, s, "bus")
	require.Len(t, ds, 1)
	want, err := json.Marshal(fresh)
	require.NoError(t, err)
	got, err := json.Marshal(ds[0].Event)
	require.NoError(t, err)
	assert.JSONEq(t, string(want), string(got))

	// A second store (another machine) computes the same id for the same record.
	other := open(t, dbPath(t), func(o *dedupe.Options) { o.Retention = 0 })
	res, err = other.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	assert.Equal(t, fresh.ID, res.Events[0].ID)
}

func TestPendingOrderAndAck(t *testing.T) {
	s := open(t, dbPath(t), nil)
	page := leads(bot, 1, 6)
	_, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)

	all := pending(t, s, "bus")
	require.Len(t, all, 6)
	for i, d := range all {
		assert.Equal(t, uint64(i+1), d.Seq)
		assert.Equal(t, page[i].ID(), d.Event.ID)
	}

	some, err := s.Pending(t.Context(), "bus", 2, 2)
	require.NoError(t, err)
	require.Len(t, some, 2)
	assert.Equal(t, []uint64{3, 4}, []uint64{some[0].Seq, some[1].Seq})

	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "bus", Seq: 3}, Verdict: event.Acked}}))
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "bus", Seq: 3}, Verdict: event.Acked}}), "acking a missing entry")
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "nobody", Seq: 1}, Verdict: event.Acked}}), "acking for an unknown forwarder")
	left := pending(t, s, "bus")
	seqs := make([]uint64, len(left))
	for i, d := range left {
		seqs[i] = d.Seq
	}
	assert.Equal(t, []uint64{1, 2, 4, 5, 6}, seqs)

	none, err := s.Pending(t.Context(), "nobody", 0, 10)
	require.NoError(t, err)
	assert.Empty(t, none)

	var wg sync.WaitGroup
	for _, d := range left {
		wg.Go(func() {
			assert.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: d.Forwarder, Seq: d.Seq}, Verdict: event.Acked}}))
		})
	}
	wg.Wait()
	assert.Empty(t, pending(t, s, "bus"))

	// Sequences keep rising after the outbox drained: a dispatcher cursor stays valid.
	_, err = s.Ingest(t.Context(), bot, leads(bot, 100, 1))
	require.NoError(t, err)
	next, err := s.Pending(t.Context(), "bus", 6, 0)
	require.NoError(t, err)
	require.Len(t, next, 1)
	assert.Equal(t, uint64(7), next[0].Seq)
}

func TestFailedPersistsAcrossReopen(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	_, err := s.Ingest(t.Context(), bot, leads(bot, 1, 2))
	require.NoError(t, err)

	d := pending(t, s, "bus")[1]
	first := time.Date(2024, 3, 2, 8, 0, 0, 0, time.UTC)
	d.Attempts, d.FirstTry, d.LastError = 3, first, "bus: publish: nats: timeout"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Retrying}}))
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "bus", Seq: 99, Attempts: 1}, Verdict: event.Retrying}}), "missing entry")
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "nobody", Seq: 1, Attempts: 1}, Verdict: event.Retrying}}), "unknown forwarder")
	require.NoError(t, s.Close())

	s = open(t, path, nil)
	ds := pending(t, s, "bus")
	require.Len(t, ds, 2)
	assert.Zero(t, ds[0].Attempts)
	assert.Equal(t, 3, ds[1].Attempts)
	assert.True(t, first.Equal(ds[1].FirstTry))
	assert.Equal(t, "bus: publish: nats: timeout", ds[1].LastError)
	assert.Equal(t, d.Event.ID, ds[1].Event.ID)
}

func TestDeadLetterReplayDrop(t *testing.T) {
	s := open(t, dbPath(t), nil)
	appts := []event.Lead{
		mkLead(bot, event.KindAppointment, 1, t0),
		mkLead(bot, event.KindAppointment, 2, t0),
	}
	_, err := s.Ingest(t.Context(), bot, appts)
	require.NoError(t, err)
	<-s.Changes()

	failed := time.Date(2024, 3, 3, 0, 0, 0, 0, time.UTC)
	bus, sales := pending(t, s, "bus"), pending(t, s, "sales")
	kill := func(d event.Delivery, at time.Time, msg string) {
		d.Attempts, d.FirstTry, d.LastError = 5, at.Add(-time.Minute), msg
		require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Dead, At: at}}))
	}
	kill(sales[1], failed, "sales: HTTP 404")
	kill(bus[0], failed.Add(time.Second), "bus: no responders")
	kill(sales[0], failed.Add(2*time.Second), "sales: HTTP 400")
	// Dead-lettering twice, or an entry that is gone, changes nothing.
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: sales[0], Verdict: event.Dead, At: failed.Add(time.Hour)}}))
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "nobody", Seq: 1}, Verdict: event.Dead, At: failed}}))

	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bus": 1, "sales": 0}, depth)
	count, err := s.DeadCount(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bus": 1, "sales": 2}, count)

	all, err := s.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, []string{"sales", "bus", "sales"}, []string{all[0].Forwarder, all[1].Forwarder, all[2].Forwarder})
	assert.Equal(t, []string{appts[1].ID(), appts[0].ID(), appts[0].ID()}, []string{all[0].Event.ID, all[1].Event.ID, all[2].Event.ID})
	assert.Equal(t, 5, all[0].Attempts)
	assert.Equal(t, "sales: HTTP 404", all[0].LastError)
	assert.True(t, failed.Equal(all[0].Failed))

	onlySales, err := s.DeadLetters(t.Context(), "sales")
	require.NoError(t, err)
	require.Len(t, onlySales, 2)
	assert.Equal(t, "sales: HTTP 404", onlySales[0].LastError)

	// Replay one event for one forwarder: back in the outbox with a fresh attempt budget.
	n, err := s.Replay(t.Context(), "sales", appts[0].ID())
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	select {
	case <-s.Changes():
	default:
		t.Fatal("Replay did not signal Changes")
	}
	back := pending(t, s, "sales")
	require.Len(t, back, 1)
	assert.Equal(t, appts[0].ID(), back[0].Event.ID)
	assert.Greater(t, back[0].Seq, sales[1].Seq)
	assert.Zero(t, back[0].Attempts)
	assert.True(t, back[0].FirstTry.IsZero())
	assert.Empty(t, back[0].LastError)

	n, err = s.Replay(t.Context(), "sales", "no-such-event")
	require.NoError(t, err)
	assert.Zero(t, n)

	// Drop one, then replay everything left.
	n, err = s.Drop(t.Context(), "bus", "")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = s.Replay(t.Context(), "", "")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Len(t, pending(t, s, "sales"), 2)

	left, err := s.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Empty(t, left)
	n, err = s.Drop(t.Context(), "", "")
	require.NoError(t, err)
	assert.Zero(t, n)
}

func TestBackfill(t *testing.T) {
	appt := mkLead(bot, event.KindAppointment, 1, t0)
	lead := mkLead(bot, event.KindLead, 2, t0)

	t.Run("only", func(t *testing.T) {
		s := open(t, dbPath(t), nil)
		res, err := s.Backfill(t.Context(), bot, []event.Lead{appt, lead}, event.BackfillOptions{Only: []string{"sales"}})
		require.NoError(t, err)
		assert.Equal(t, 2, res.New)
		assert.Empty(t, pending(t, s, "bus"))
		sales := pending(t, s, "sales")
		require.Len(t, sales, 1)
		assert.Equal(t, appt.ID(), sales[0].Event.ID)
	})

	t.Run("only leaves unseen records to normal polling", func(t *testing.T) {
		s := open(t, dbPath(t), func(o *dedupe.Options) {
			o.Route = func(event.Event) []string { return []string{"crm", "sales"} }
		})
		res, err := s.Backfill(t.Context(), bot, []event.Lead{lead}, event.BackfillOptions{Only: []string{"crm"}})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		assert.Equal(t, []string{lead.ID()}, ids(res.Events))
		require.Len(t, pending(t, s, "crm"), 1)
		assert.Empty(t, pending(t, s, "sales"))
		bots, err := s.Chatbots(t.Context())
		require.NoError(t, err)
		assert.Zero(t, bots[bot].Seen, "a record queued for some forwarders only is not seen")

		// The next poll takes it as new for every forwarder; crm gets the same event id again.
		res, err = s.Ingest(t.Context(), bot, []event.Lead{lead})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		crm := pending(t, s, "crm")
		require.Len(t, crm, 2)
		assert.Equal(t, []string{lead.ID(), lead.ID()}, []string{crm[0].Event.ID, crm[1].Event.ID})
		sales := pending(t, s, "sales")
		require.Len(t, sales, 1)
		assert.Equal(t, lead.ID(), sales[0].Event.ID)
		bots, err = s.Chatbots(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 1, bots[bot].Seen)

		res, err = s.Ingest(t.Context(), bot, []event.Lead{lead})
		require.NoError(t, err)
		assert.Equal(t, event.Ingested{Duplicate: 1}, res)
	})

	t.Run("only leaves changed content to normal polling", func(t *testing.T) {
		s := open(t, dbPath(t), func(o *dedupe.Options) {
			o.Route = func(event.Event) []string { return []string{"crm", "sales"} }
			o.EmitUpdates = true
		})
		_, err := s.Ingest(t.Context(), bot, []event.Lead{lead})
		require.NoError(t, err)
		changed := lead
		changed.Content = "hello again"

		res, err := s.Backfill(t.Context(), bot, []event.Lead{changed}, event.BackfillOptions{Only: []string{"crm"}})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Updated)
		crm := pending(t, s, "crm")
		require.Len(t, crm, 2)
		assert.Equal(t, event.ActionUpdated, crm[1].Event.Action())
		assert.Len(t, pending(t, s, "sales"), 1)

		res, err = s.Ingest(t.Context(), bot, []event.Lead{changed})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Updated, "the backfill did not store the new content")
		sales := pending(t, s, "sales")
		require.Len(t, sales, 2)
		assert.Equal(t, crm[1].Event.ID, sales[1].Event.ID)
		assert.Len(t, pending(t, s, "crm"), 3)
	})

	t.Run("no baseline and no initialization", func(t *testing.T) {
		s := open(t, dbPath(t), func(o *dedupe.Options) { o.Initial = dedupe.InitialSkip })
		res, err := s.Backfill(t.Context(), bot, []event.Lead{appt}, event.BackfillOptions{})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		assert.Zero(t, res.Baseline)
		bots, err := s.Chatbots(t.Context())
		require.NoError(t, err)
		assert.False(t, bots[bot].Initialized)
		assert.Equal(t, 1, bots[bot].Seen)

		// The first real poll still takes its baseline, and the backfilled record is a duplicate.
		res, err = s.Ingest(t.Context(), bot, []event.Lead{appt, lead})
		require.NoError(t, err)
		assert.Equal(t, event.Ingested{Duplicate: 1, Baseline: 1}, res)
	})

	t.Run("resend", func(t *testing.T) {
		s := open(t, dbPath(t), nil)
		_, err := s.Ingest(t.Context(), bot, []event.Lead{appt, lead})
		require.NoError(t, err)
		first := pending(t, s, "bus")
		for _, d := range first {
			require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "bus", Seq: d.Seq}, Verdict: event.Acked}}))
		}
		newer := mkLead(bot, event.KindLead, 3, t0)
		res, err := s.Backfill(t.Context(), bot, []event.Lead{appt, lead, newer}, event.BackfillOptions{Resend: true, Only: []string{"bus"}})
		require.NoError(t, err)
		assert.Equal(t, 2, res.Duplicate)
		assert.Equal(t, 1, res.New)
		assert.Equal(t, []string{appt.ID(), lead.ID(), newer.ID()}, ids(res.Events))
		for _, ev := range res.Events {
			assert.Equal(t, event.ActionCreated, ev.Action())
		}
		again := pending(t, s, "bus")
		require.Len(t, again, 3)
		assert.Equal(t, first[0].Event.ID, again[0].Event.ID)
		assert.Len(t, pending(t, s, "sales"), 1, "Only kept the resend away from sales")
	})

	t.Run("dry run writes nothing", func(t *testing.T) {
		path := dbPath(t)
		s := open(t, path, nil)
		_, err := s.Ingest(t.Context(), bot, []event.Lead{lead})
		require.NoError(t, err)
		<-s.Changes()
		res, err := s.DryBackfill(t.Context(), bot, []event.Lead{appt, lead}, event.BackfillOptions{Resend: true})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		assert.Equal(t, 1, res.Duplicate)
		assert.Equal(t, []string{appt.ID(), lead.ID()}, ids(res.Events))
		select {
		case <-s.Changes():
			t.Fatal("DryRun signalled Changes")
		default:
		}
		require.NoError(t, s.Close())

		s = open(t, path, nil)
		depth, err := s.Depth(t.Context())
		require.NoError(t, err)
		assert.Equal(t, map[string]int{"bus": 1}, depth)
		bots, err := s.Chatbots(t.Context())
		require.NoError(t, err)
		assert.Equal(t, 1, bots[bot].Seen)
		res, err = s.Ingest(t.Context(), bot, []event.Lead{appt})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New, "the dry run must not have marked the record seen")
	})
}

func TestRecordPoll(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	at1 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	at2 := at1.Add(time.Minute)
	at3 := at2.Add(time.Minute)

	require.NoError(t, s.RecordPoll(t.Context(), bot, at1, nil))
	require.NoError(t, s.RecordPoll(t.Context(), bot, at2, errors.New("leadlist: HTTP 503")))
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	st := bots[bot]
	assert.True(t, at2.Equal(st.LastPoll))
	assert.True(t, at1.Equal(st.LastOK))
	assert.Equal(t, "leadlist: HTTP 503", st.LastError)
	assert.False(t, st.Initialized, "a poll record is not the baseline")

	require.NoError(t, s.RecordPoll(t.Context(), bot, at3, nil))
	require.NoError(t, s.Close())
	s = open(t, path, nil)
	bots, err = s.Chatbots(t.Context())
	require.NoError(t, err)
	st = bots[bot]
	assert.True(t, at3.Equal(st.LastOK))
	assert.True(t, at3.Equal(st.LastPoll))
	assert.Empty(t, st.LastError)
}

func TestPauseResume(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	was, err := s.Resume(t.Context(), "crm")
	require.NoError(t, err)
	assert.False(t, was)

	before := time.Now()
	require.NoError(t, s.Pause(t.Context(), "crm", "crm: HTTP 410 Gone", "hash1"))
	paused, err := s.Paused(t.Context())
	require.NoError(t, err)
	require.Contains(t, paused, "crm")
	since := paused["crm"].Since
	assert.False(t, since.Before(before.Truncate(time.Second)))

	require.NoError(t, s.Pause(t.Context(), "crm", "crm: HTTP 410 Gone again", "hash2"))
	require.NoError(t, s.Close())
	s = open(t, path, nil)
	paused, err = s.Paused(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "crm: HTTP 410 Gone again", paused["crm"].Reason)
	assert.Equal(t, "hash2", paused["crm"].ConfigHash)
	assert.True(t, since.Equal(paused["crm"].Since), "re-pausing keeps Since")

	was, err = s.Resume(t.Context(), "crm")
	require.NoError(t, err)
	assert.True(t, was)
	paused, err = s.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
}

func TestChangesSignalledOnlyForNewEntries(t *testing.T) {
	s := open(t, dbPath(t), func(o *dedupe.Options) { o.Initial = dedupe.InitialSkip })
	noSignal := func(msg string) {
		t.Helper()
		select {
		case <-s.Changes():
			t.Fatal(msg)
		default:
		}
	}
	_, err := s.Ingest(t.Context(), bot, leads(bot, 1, 3))
	require.NoError(t, err)
	noSignal("baseline signalled")
	_, err = s.Ingest(t.Context(), bot, leads(bot, 1, 3))
	require.NoError(t, err)
	noSignal("duplicates signalled")

	// Two writes before the dispatcher looks: one buffered signal, the writer never blocks.
	_, err = s.Ingest(t.Context(), bot, leads(bot, 4, 1))
	require.NoError(t, err)
	_, err = s.Ingest(t.Context(), bot, leads(bot, 5, 1))
	require.NoError(t, err)
	select {
	case <-s.Changes():
	default:
		t.Fatal("new entries not signalled")
	}
	noSignal("signal not coalesced")
}

func TestOpenLockedFailsFast(t *testing.T) {
	path := dbPath(t)
	open(t, path, nil)

	start := time.Now()
	_, err := dedupe.Open(dedupe.Options{Path: path, OpenTimeout: 100 * time.Millisecond})
	require.Error(t, err)
	assert.ErrorIs(t, err, bolt.ErrTimeout)
	assert.Equal(t, fmt.Sprintf("store %s is locked by another leadbridge process: timeout", path), err.Error())
	assert.Less(t, time.Since(start), 10*time.Second, "the second Open must give up, not hang")
}

func TestOpenRefusesNonBboltFile(t *testing.T) {
	random := make([]byte, 64<<10)
	_, _ = rand.Read(random)
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"short text", []byte("neoagent:\n  api_key: x\n")},
		{"one page of random bytes", random[:4096]},
		{"random bytes", random},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			require.NoError(t, os.WriteFile(path, tc.content, 0o644))

			_, err := dedupe.Open(dedupe.Options{Path: path, OpenTimeout: 100 * time.Millisecond})
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), "not a bbolt database")

			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(tc.content, got), "file content changed")
			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "file mode changed")
		})
	}
}

func TestOpenFileMode(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.NoError(t, s.Close())

	require.NoError(t, os.Chmod(path, 0o644))
	var logs bytes.Buffer
	open(t, path, func(o *dedupe.Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	info, err = os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), "0600")
}

func TestOpenValidatesOptions(t *testing.T) {
	_, err := dedupe.Open(dedupe.Options{})
	require.Error(t, err)
	_, err = dedupe.Open(dedupe.Options{Path: dbPath(t), Initial: "flood"})
	require.ErrorContains(t, err, `initial "flood"`)
	_, err = dedupe.Open(dedupe.Options{Path: filepath.Join(t.TempDir(), "missing", "dir", "x.db")})
	require.ErrorContains(t, err, "missing/dir/x.db")
}

func TestClosedStoreErrorsNameThePath(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	require.NoError(t, s.Close())
	_, err := s.Ingest(t.Context(), bot, leads(bot, 1, 1))
	require.ErrorIs(t, err, bolt.ErrDatabaseNotOpen)
	assert.Contains(t, err.Error(), path)
}

func TestOpenReadOnlyRefusesMissingOrEmptyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leadbridge.db")
	_, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.EqualError(t, err, fmt.Sprintf("store %s does not exist", path))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a read-only open created something")

	require.NoError(t, os.WriteFile(path, nil, 0o600))
	_, err = dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.ErrorContains(t, err, path)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Zero(t, info.Size(), "a read-only open initialized the file")
}

func TestOpenReadOnlyReadsStateAndRefusesWrites(t *testing.T) {
	path := dbPath(t)
	failed := time.Date(2024, 3, 3, 0, 0, 0, 0, time.UTC)
	polled := time.Date(2024, 3, 3, 1, 0, 0, 0, time.UTC)
	appts := []event.Lead{mkLead(bot, event.KindAppointment, 1, t0), mkLead(bot, event.KindAppointment, 2, t0)}
	daemon := open(t, path, nil)
	_, err := daemon.Ingest(t.Context(), bot, appts)
	require.NoError(t, err)
	d := pending(t, daemon, "sales")[0]
	d.Attempts, d.LastError = 5, "sales: HTTP 400"
	require.NoError(t, daemon.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Dead, At: failed}}))
	require.NoError(t, daemon.Pause(t.Context(), "bus", "bus: HTTP 410 Gone", "hash"))
	require.NoError(t, daemon.RecordPoll(t.Context(), bot, polled, nil))

	// While the daemon holds the store, a read-only open is refused too.
	_, err = dedupe.Open(dedupe.Options{Path: path, ReadOnly: true, OpenTimeout: 100 * time.Millisecond})
	require.ErrorIs(t, err, bolt.ErrTimeout)
	assert.Contains(t, err.Error(), "locked by another leadbridge process")
	require.NoError(t, daemon.Close())

	// Too-open permissions and an old mtime: a read-only session must change neither.
	require.NoError(t, os.Chmod(path, 0o644))
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, os.Chtimes(path, mtime, mtime))
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	ro, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true, Route: routeAll})
	require.NoError(t, err)
	// Read-only opens share the lock.
	ro2, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true, OpenTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, ro2.Close())

	bots, err := ro.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, bots[bot].Seen)
	assert.True(t, polled.Equal(bots[bot].LastOK))
	depth, err := ro.Depth(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bus": 2, "sales": 1}, depth)
	dead, err := ro.DeadCount(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"sales": 1}, dead)
	letters, err := ro.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, "sales: HTTP 400", letters[0].LastError)
	paused, err := ro.Paused(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "bus: HTTP 410 Gone", paused["bus"].Reason)
	sales, err := ro.Pending(t.Context(), "sales", 0, 0)
	require.NoError(t, err)
	require.Len(t, sales, 1)
	assert.Equal(t, appts[1].ID(), sales[0].Event.ID)

	for name, write := range map[string]func() error{
		"ack": func() error {
			return ro.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "sales", Seq: sales[0].Seq}, Verdict: event.Acked}})
		},
		"replay": func() error { _, err := ro.Replay(t.Context(), "", ""); return err },
		"drop":   func() error { _, err := ro.Drop(t.Context(), "", ""); return err },
		"failed": func() error {
			return ro.Record(t.Context(), []event.Outcome{{Delivery: sales[0], Verdict: event.Retrying}})
		},
		"dead-letter": func() error {
			return ro.Record(t.Context(), []event.Outcome{{Delivery: sales[0], Verdict: event.Dead, At: failed}})
		},
		"ingest": func() error { _, err := ro.Ingest(t.Context(), bot, leads(bot, 10, 1)); return err },
		"backfill": func() error {
			_, err := ro.Backfill(t.Context(), bot, appts, event.BackfillOptions{Resend: true})
			return err
		},
		"record poll": func() error { return ro.RecordPoll(t.Context(), bot, time.Now(), nil) },
		"pause":       func() error { return ro.Pause(t.Context(), "sales", "x", "y") },
		"resume":      func() error { _, err := ro.Resume(t.Context(), "bus"); return err },
		"prune":       func() error { _, err := ro.Prune(t.Context(), time.Now().Add(1000*time.Hour)); return err },
	} {
		err := write()
		require.ErrorIs(t, err, dedupe.ErrReadOnly, name)
		assert.Contains(t, err.Error(), path, name)
		assert.Contains(t, err.Error(), "store opened read-only", name)
	}
	letters, err = ro.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, letters, 1, "Replay changed nothing")
	require.NoError(t, ro.Close())

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "file content changed")
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, mtime.Equal(info.ModTime()), "mtime changed to %s", info.ModTime())
	assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "file mode changed")
}

// A bbolt file that lacks leadbridge's buckets (none here) reads as an empty store.
func TestOpenReadOnlyMissingBucketsReadEmpty(t *testing.T) {
	path := dbPath(t)
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	s, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	defer s.Close()
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Empty(t, bots)
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth)
	dead, err := s.DeadCount(t.Context())
	require.NoError(t, err)
	assert.Empty(t, dead)
	for _, fwd := range []string{"", "bus"} {
		letters, err := s.DeadLetters(t.Context(), fwd)
		require.NoError(t, err)
		assert.Empty(t, letters)
	}
	paused, err := s.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
	ds, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	assert.Empty(t, ds)
}

// TestCanceledContextTouchesNothing: an operation whose ctx is done when it starts
// returns ctx's error, naming the store and the operation, and writes nothing.
func TestCanceledContextTouchesNothing(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	done, cancel := context.WithCancel(t.Context())
	cancel()

	_, err := s.Ingest(done, bot, leads(bot, 0, 3))
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "ingest "+bot)
	err = s.IngestPage(done, bot, func(func([]event.Lead, bool) (event.Ingested, error)) error {
		t.Fatal("read called although ctx is done")
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.RecordPoll(done, bot, t0, nil), context.Canceled)
	_, err = s.Depth(done)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.Pause(done, "bus", "gone", "h"), context.Canceled)

	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth, "no delivery was queued")
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Empty(t, bots, "no chatbot was marked initialized or polled")
	paused, err := s.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
	res, err := s.Ingest(t.Context(), bot, leads(bot, 0, 3))
	require.NoError(t, err)
	assert.Equal(t, 3, res.New, "the records are still new")
}
