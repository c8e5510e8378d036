// Package storetest is the conformance suite every store backend passes: the behaviour
// the poller, the Dispatcher, the operator commands and the daemon rely on, asserted
// through the methods they call and never through a backend's internals. A backend's
// test calls Run with a function that sets up fresh backing storage (a bbolt file in
// t.TempDir(), an in-process nats-server) and returns an Opener for it; the suite opens,
// closes and reopens stores on that storage. It is imported by tests only.
package storetest

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/leadbridge/leadbridge/poller"
)

// Store is what a backend provides: what the poller, the Dispatcher and the operator
// commands use, plus what the daemon calls itself (Backfill, Prune, Close).
type Store interface {
	poller.Store
	forwarders.Outbox
	ops.LocalStore
	Backfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error)
	Prune(ctx context.Context, now time.Time) (int, error)
	// Activity and ActivityEvent read the bounded log of delivery attempts that the web
	// console shows (console.ActivityLog).
	Activity(ctx context.Context, q event.ActivityQuery) ([]event.Attempt, error)
	ActivityEvent(ctx context.Context, id string) (ev event.Event, found bool, err error)
	Close() error
}

// Initial values for Config.Initial (the store's poll.initial).
const (
	InitialSkip = "skip"
	InitialEmit = "emit"
)

// Config is what the suite asks of a store it opens: the shared options every backend
// takes in its own Options type.
type Config struct {
	Route       func(event.Event) []string // forwarders that want an event
	Initial     string                     // InitialSkip or InitialEmit
	EmitUpdates bool
	Retention   time.Duration    // <= 0 keeps every seen key
	Now         func() time.Time // the store's wall clock
}

// Opener opens a store on the backing storage of one test; it may be called again after
// Close, to reopen the same state.
type Opener func(Config) (Store, error)

// The suite's records are created on t0's day.
const bot = "3254a9d0424c4806b9ea3d0763ccf001"

var t0 = time.Date(2024, 3, 1, 10, 0, 0, 123456789, time.UTC)

// Run runs the suite; backend sets up fresh backing storage for one test and returns
// how to open stores on it.
func Run(t *testing.T, backend func(t *testing.T) Opener) {
	for _, tc := range []struct {
		name string
		fn   func(*testing.T, *rig)
	}{
		{"IngestNewDuplicateUpdated", testNewDuplicateUpdated},
		{"IngestRoutesPerForwarder", testRoutesPerForwarder},
		{"IngestNilRoute", testNilRoute},
		{"IngestDuplicateWithinPageCountsOnce", testDuplicateWithinPage},
		{"IngestRejectsARecordAndTakesTheRest", testRejected},
		{"InitialSkipBaselineSurvivesReopen", testBaselineSurvivesReopen},
		{"InitialEmitSendsFirstPageOnce", testInitialEmit},
		{"IngestPageBaselineSpansItsParts", testBaselineSpansParts},
		{"PendingOrderEntryAndAck", testPendingOrderAndAck},
		{"RetryStatePersistsAcrossReopen", testRetryPersists},
		{"DeadLetterReplayDrop", testDeadLetters},
		{"Backfill", testBackfill},
		{"MoveAndDropPending", testMoveDropPending},
		{"RecordPollAndLastOK", testRecordPoll},
		{"PauseResume", testPauseResume},
		{"ChangesSignalledOnlyForNewEntries", testChanges},
		{"RetentionStaleAndPrune", testRetention},
		{"SeenCountsEachChatbotsKeys", testSeenCount},
		{"EventsSurviveReopenByteForByte", testEventSurvives},
		{"ActivityRecordedAndFiltered", testActivityRecorded},
		{"ActivityKeepsTheNewestPerForwarder", testActivityKeepsTheNewest},
		{"ActivityForgetsAttemptsAWeekOld", testActivityForgetsAWeekAgo},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, &rig{t: t, open: backend(t), backend: backend})
		})
	}
}

// rig opens stores of one test and closes them when it ends.
type rig struct {
	t       *testing.T
	open    Opener
	backend func(t *testing.T) Opener
}

// sub is a rig for subtest t, on fresh backing storage of its own.
func (r *rig) sub(t *testing.T) *rig {
	return &rig{t: t, open: r.backend(t), backend: r.backend}
}

// clock is a wall clock a test moves.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) pass(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// store wraps a Store so that the rig closes it once, at the end or when told.
type store struct {
	Store
	once sync.Once
	err  error
}

func (s *store) Close() error {
	s.once.Do(func() { s.err = s.Store.Close() })
	return s.err
}

// routeAll sends every event to "bus", and appointments also to "sales".
func routeAll(ev event.Event) []string {
	if ev.Kind() == event.KindAppointment {
		return []string{"bus", "sales"}
	}
	return []string{"bus"}
}

// with opens a store shaped by the defaults (emit, routeAll, a day's retention, the
// clock at t0+12h) and then mod.
func (r *rig) with(mod func(*Config)) *store {
	r.t.Helper()
	c := Config{Route: routeAll, Initial: InitialEmit, Retention: 24 * time.Hour,
		Now: func() time.Time { return t0.Add(12 * time.Hour) }}
	if mod != nil {
		mod(&c)
	}
	st, err := r.open(c)
	require.NoError(r.t, err)
	s := &store{Store: st}
	r.t.Cleanup(func() { _ = s.Close() })
	return s
}

func leads(serial string, from, n int) []event.Lead {
	out := make([]event.Lead, n)
	for i := range out {
		s := from + i
		out[i] = leadtest.Lead(serial, event.KindLead, int64(s), t0.Add(time.Duration(s)*time.Minute))
	}
	return out
}

func ids(evs []event.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func eventIDs(ds []event.Delivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Event.ID
	}
	return out
}

// ingest takes a whole page in one part, as the poller's IngestPage does for a short one.
func ingest(t *testing.T, s Store, serial string, page []event.Lead) event.Ingested {
	t.Helper()
	var res event.Ingested
	require.NoError(t, s.IngestPage(t.Context(), serial, func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		var err error
		res, err = take(page, true)
		return err
	}))
	return res
}

// parts is a read function for IngestPage that hands over each part in turn, keeping
// take's results, and fails with fail once failAfter parts are taken.
func parts(got *[]event.Ingested, failAfter int, fail error, ps ...[]event.Lead) func(func([]event.Lead, bool) (event.Ingested, error)) error {
	return func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		for i, p := range ps {
			if fail != nil && i == failAfter {
				return fail
			}
			res, err := take(p, false)
			if err != nil {
				return err
			}
			*got = append(*got, res)
		}
		return nil
	}
}

func pending(t *testing.T, s Store, fwd string) []event.Delivery {
	t.Helper()
	ds, err := s.Pending(t.Context(), fwd, 0, 0)
	require.NoError(t, err)
	return ds
}

// nonZero drops the zero counts: a backend may or may not list a forwarder whose
// entries are all gone.
func nonZero(m map[string]int) map[string]int {
	out := maps.Clone(m)
	maps.DeleteFunc(out, func(_ string, n int) bool { return n == 0 })
	return out
}

func depth(t *testing.T, s Store) map[string]int {
	t.Helper()
	d, err := s.Depth(t.Context())
	require.NoError(t, err)
	return nonZero(d)
}

func chatbot(t *testing.T, s Store, serial string) event.ChatbotState {
	t.Helper()
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	return bots[serial]
}

func ack(t *testing.T, s Store, d event.Delivery) {
	t.Helper()
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: d.Forwarder, Seq: d.Seq}, Verdict: event.Acked}}))
}

func noSignal(t *testing.T, s Store, msg string) {
	t.Helper()
	select {
	case <-s.Changes():
		t.Fatal(msg)
	default:
	}
}

func drainChanges(s Store) {
	select {
	case <-s.Changes():
	default:
	}
}

func testNewDuplicateUpdated(t *testing.T, r *rig) {
	for _, tc := range []struct {
		name        string
		emitUpdates bool
		want        event.Ingested
		wantBus     int
	}{
		{name: "updates off", want: event.Ingested{Duplicate: 3}, wantBus: 3},
		{name: "updates on", emitUpdates: true, want: event.Ingested{Duplicate: 2, Updated: 1}, wantBus: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := r.sub(t)
			s := r.with(func(c *Config) { c.EmitUpdates = tc.emitUpdates })
			page := leads(bot, 1, 3)
			res := ingest(t, s, bot, page)
			assert.Equal(t, 3, res.New)
			assert.Equal(t, []string{page[0].ID(), page[1].ID(), page[2].ID()}, ids(res.Events))
			for _, ev := range res.Events {
				assert.Equal(t, event.ActionCreated, ev.Action())
			}
			assert.Equal(t, event.Ingested{Duplicate: 3}, ingest(t, s, bot, page))

			changed := append([]event.Lead(nil), page...)
			changed[1].Count, changed[1].Content = 2, "hello again"
			res = ingest(t, s, bot, changed)
			if tc.emitUpdates {
				require.Len(t, res.Events, 1)
				assert.Equal(t, event.ActionUpdated, res.Events[0].Action())
				assert.Equal(t, event.NewUpdated(changed[1], time.Now()).ID, res.Events[0].ID)
				assert.NotEqual(t, changed[1].ID(), res.Events[0].ID, "an update has an id of its own")
				assert.Equal(t, 2, res.Events[0].Data.Count)
				tc.want.Events = res.Events
			}
			assert.Equal(t, tc.want, res)
			assert.Len(t, pending(t, s, "bus"), tc.wantBus)

			// The new content is stored: the same content again is a plain duplicate.
			assert.Equal(t, event.Ingested{Duplicate: 3}, ingest(t, s, bot, changed))
			assert.Len(t, pending(t, s, "bus"), tc.wantBus)

			if tc.emitUpdates {
				// Back to the old content and then to the changed one again: each change
				// is announced, the second with the same id as the first.
				assert.Equal(t, 1, ingest(t, s, bot, page).Updated)
				assert.Equal(t, 1, ingest(t, s, bot, changed).Updated)
				assert.Len(t, pending(t, s, "bus"), tc.wantBus+2)
			}
		})
	}
}

func testRoutesPerForwarder(t *testing.T, r *rig) {
	s := r.with(func(c *Config) {
		c.Route = func(ev event.Event) []string {
			if ev.Kind() == event.KindAppointment {
				return []string{"sales", "bus", "sales"} // a repeated name yields one entry
			}
			return []string{"bus"}
		}
	})
	lead := leadtest.Lead(bot, event.KindLead, 1, t0)
	appt := leadtest.Lead(bot, event.KindAppointment, 2, t0)
	assert.Equal(t, 2, ingest(t, s, bot, []event.Lead{lead, appt}).New)

	bus := pending(t, s, "bus")
	assert.Equal(t, []string{lead.ID(), appt.ID()}, eventIDs(bus))
	sales := pending(t, s, "sales")
	require.Len(t, sales, 1)
	assert.Equal(t, appt.ID(), sales[0].Event.ID)
	assert.Equal(t, "sales", sales[0].Forwarder)
	assert.False(t, sales[0].Enqueued.IsZero())
	assert.Zero(t, sales[0].Attempts)
	assert.True(t, sales[0].FirstTry.IsZero())
	assert.Equal(t, map[string]int{"bus": 2, "sales": 1}, depth(t, s))
}

func testNilRoute(t *testing.T, r *rig) {
	s := r.with(func(c *Config) { c.Route = nil })
	res := ingest(t, s, bot, leads(bot, 1, 2))
	assert.Equal(t, 2, res.New)
	assert.Len(t, res.Events, 2)
	assert.Empty(t, depth(t, s))
	noSignal(t, s, "Changes signalled without outbox entries")
	assert.Equal(t, event.Ingested{Duplicate: 2}, ingest(t, s, bot, leads(bot, 1, 2)), "taken all the same")
}

func testDuplicateWithinPage(t *testing.T, r *rig) {
	s := r.with(nil)
	l := leadtest.Lead(bot, event.KindAppointment, 7, t0)
	res := ingest(t, s, bot, []event.Lead{l, l, l})
	assert.Equal(t, 1, res.New)
	assert.Zero(t, res.Duplicate)
	assert.Len(t, res.Events, 1)
	assert.Len(t, pending(t, s, "bus"), 1)
	assert.Len(t, pending(t, s, "sales"), 1)
	assert.Equal(t, 1, chatbot(t, s, bot).Seen)
}

func testRejected(t *testing.T, r *rig) {
	s := r.with(nil)
	page := leads(bot, 1, 4)
	page[1].Chatbot = "another"
	page[2].Kind = "booking"
	var got []event.Ingested
	require.NoError(t, s.IngestPage(t.Context(), bot, parts(&got, 0, nil, page[:1], page[1:])))
	require.Len(t, got, 2)
	res := got[1]
	assert.Equal(t, 1, res.New)
	require.Len(t, res.Rejected, 2)
	assert.Equal(t, 1, res.Rejected[0].Index, "indices count from the page's first record")
	assert.Equal(t, page[1].ID(), res.Rejected[0].EventID)
	assert.Contains(t, res.Rejected[0].Reason, "chatbot")
	assert.Equal(t, 2, res.Rejected[1].Index)
	assert.Contains(t, res.Rejected[1].Reason, "kind")
	for _, rj := range res.Rejected {
		assert.NotContains(t, rj.Reason, "person", "a reason never carries personal data")
	}
	assert.Equal(t, []string{page[0].ID(), page[3].ID()}, eventIDs(pending(t, s, "bus")))
	// Fixed, they are taken: a rejected record was not marked seen.
	fixed := leads(bot, 1, 4)
	assert.Equal(t, 2, ingest(t, s, bot, fixed).New)
}

func testBaselineSurvivesReopen(t *testing.T, r *rig) {
	skip := func(c *Config) { c.Initial = InitialSkip }
	s := r.with(skip)
	assert.Equal(t, event.Ingested{Baseline: 5}, ingest(t, s, bot, leads(bot, 1, 5)))
	assert.Empty(t, depth(t, s))
	noSignal(t, s, "a baseline signalled Changes")

	const other = "otherbot"
	assert.Equal(t, event.Ingested{}, ingest(t, s, other, nil), "an empty first page")
	st := chatbot(t, s, bot)
	assert.True(t, st.Initialized)
	assert.Equal(t, 5, st.Seen)
	assert.True(t, chatbot(t, s, other).Initialized, "an empty first page still completes the baseline")

	require.NoError(t, s.Close())
	s = r.with(skip)
	res := ingest(t, s, bot, leads(bot, 1, 6))
	assert.Equal(t, 5, res.Duplicate)
	assert.Equal(t, 1, res.New)
	assert.Zero(t, res.Baseline)
	assert.Equal(t, []string{leads(bot, 6, 1)[0].ID()}, ids(res.Events))
	assert.Equal(t, 1, ingest(t, s, other, leads(other, 1, 1)).New)
	assert.Equal(t, event.Ingested{Baseline: 2}, ingest(t, s, "third", leads("third", 1, 2)), "a chatbot first seen later gets its own baseline")
	assert.Len(t, pending(t, s, "bus"), 2)
}

func testInitialEmit(t *testing.T, r *rig) {
	s := r.with(nil)
	assert.Equal(t, 4, ingest(t, s, bot, leads(bot, 1, 4)).New)
	require.NoError(t, s.Close())
	s = r.with(nil)
	assert.Equal(t, event.Ingested{Duplicate: 4}, ingest(t, s, bot, leads(bot, 1, 4)))
	assert.Len(t, pending(t, s, "bus"), 4)
}

func testBaselineSpansParts(t *testing.T, r *rig) {
	s := r.with(func(c *Config) { c.Initial = InitialSkip })
	all := leads(bot, 1, 5)

	// A first page cut short: its first part is baseline, the chatbot not initialized.
	boom := errors.New("the body broke off")
	var got []event.Ingested
	require.ErrorIs(t, s.IngestPage(t.Context(), bot, parts(&got, 1, boom, all[:2], all[2:])), boom)
	require.Equal(t, []event.Ingested{{Baseline: 2}}, got)
	assert.False(t, chatbot(t, s, bot).Initialized)

	got = nil
	require.NoError(t, s.IngestPage(t.Context(), bot, parts(&got, 0, nil, all[:3], all[2:4], all[4:])))
	assert.Equal(t, []event.Ingested{{Duplicate: 2, Baseline: 1}, {Baseline: 1}, {Baseline: 1}}, got)
	st := chatbot(t, s, bot)
	assert.True(t, st.Initialized)
	assert.Equal(t, 5, st.Seen)
	assert.Empty(t, depth(t, s))

	got = nil
	next := leads(bot, 6, 2)
	require.NoError(t, s.IngestPage(t.Context(), bot, parts(&got, 0, nil, all, next[:1], next[1:])))
	require.Len(t, got, 3)
	assert.Equal(t, 5, got[0].Duplicate)
	assert.Equal(t, []string{next[0].ID()}, ids(got[1].Events))
	assert.Equal(t, []string{next[1].ID()}, ids(got[2].Events))
	assert.Len(t, pending(t, s, "bus"), 2)

	// The part marked last ends the page: a part after it is refused.
	err := s.IngestPage(t.Context(), "lastbot", func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		res, err := take(leads("lastbot", 1, 1), true)
		require.NoError(t, err)
		assert.Equal(t, event.Ingested{Baseline: 1}, res)
		assert.True(t, chatbot(t, s, "lastbot").Initialized, "the last part marks the chatbot initialized")
		_, err = take(nil, false)
		assert.ErrorContains(t, err, "after the page failed or ended")
		return nil
	})
	require.NoError(t, err)
}

func testPendingOrderAndAck(t *testing.T, r *rig) {
	s := r.with(nil)
	page := leads(bot, 1, 6)
	ingest(t, s, bot, page)

	all := pending(t, s, "bus")
	require.Len(t, all, 6)
	assert.Equal(t, eventIDs(all), ids(func() []event.Event {
		evs := make([]event.Event, len(page))
		for i, l := range page {
			evs[i] = event.NewCreated(l)
		}
		return evs
	}()), "oldest first")
	for i := 1; i < len(all); i++ {
		assert.Greater(t, all[i].Seq, all[i-1].Seq, "Seq rises")
		assert.Equal(t, "bus", all[i].Forwarder)
	}

	some, err := s.Pending(t.Context(), "bus", all[1].Seq, 2)
	require.NoError(t, err)
	assert.Equal(t, all[2:4], some, "after and limit")

	d, found, err := s.Entry(t.Context(), "bus", all[2].Seq)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, all[2], d)

	ack(t, s, all[2])
	ack(t, s, all[2]) // acking a missing entry changes nothing
	ack(t, s, event.Delivery{Forwarder: "nobody", Seq: 1})
	_, found, err = s.Entry(t.Context(), "bus", all[2].Seq)
	require.NoError(t, err)
	assert.False(t, found, "an acked entry is gone")
	_, found, err = s.Entry(t.Context(), "sales", all[0].Seq)
	require.NoError(t, err)
	assert.False(t, found, "another forwarder's Seq is not this one's entry")
	left := pending(t, s, "bus")
	assert.Equal(t, append(append([]event.Delivery{}, all[:2]...), all[3:]...), left)

	none, err := s.Pending(t.Context(), "nobody", 0, 10)
	require.NoError(t, err)
	assert.Empty(t, none)

	var wg sync.WaitGroup
	for _, d := range left {
		wg.Go(func() {
			assert.NoError(t, s.Record(context.Background(), []event.Outcome{{Delivery: event.Delivery{Forwarder: d.Forwarder, Seq: d.Seq}, Verdict: event.Acked}}))
		})
	}
	wg.Wait()
	assert.Empty(t, pending(t, s, "bus"))
	assert.Empty(t, depth(t, s))

	// Sequences keep rising after the outbox drained, across a reopen too: a cursor
	// stays valid.
	require.NoError(t, s.Close())
	s = r.with(nil)
	ingest(t, s, bot, leads(bot, 100, 1))
	next, err := s.Pending(t.Context(), "bus", all[5].Seq, 0)
	require.NoError(t, err)
	require.Len(t, next, 1)
	assert.Greater(t, next[0].Seq, all[5].Seq)
}

func testRetryPersists(t *testing.T, r *rig) {
	s := r.with(nil)
	ingest(t, s, bot, leads(bot, 1, 2))
	d := pending(t, s, "bus")[1]
	first := time.Date(2024, 3, 2, 8, 0, 0, 0, time.UTC)
	d.Attempts, d.FirstTry, d.NextTry, d.LastError = 3, first, first.Add(time.Minute), "bus: publish: nats: timeout"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Retrying}}))
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "bus", Seq: d.Seq + 1000, Attempts: 1}, Verdict: event.Retrying}}), "a missing entry")
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "nobody", Seq: 1, Attempts: 1}, Verdict: event.Retrying}}), "an unknown forwarder")
	require.NoError(t, s.Close())

	s = r.with(nil)
	ds := pending(t, s, "bus")
	require.Len(t, ds, 2)
	assert.Zero(t, ds[0].Attempts)
	got := ds[1]
	assert.Equal(t, 3, got.Attempts)
	assert.True(t, first.Equal(got.FirstTry))
	assert.True(t, first.Add(time.Minute).Equal(got.NextTry))
	assert.Equal(t, "bus: publish: nats: timeout", got.LastError)
	assert.Equal(t, d.Event.ID, got.Event.ID)
	assert.Equal(t, d.Seq, got.Seq)
	e, found, err := s.Entry(t.Context(), "bus", d.Seq)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, got, e)

	// A second failure updates the state; an ack then removes it for good.
	got.Attempts, got.LastError = 4, "bus: no responders"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: got, Verdict: event.Retrying}}))
	assert.Equal(t, 4, pending(t, s, "bus")[1].Attempts)
	ack(t, s, got)
	assert.Len(t, pending(t, s, "bus"), 1)
}

func testDeadLetters(t *testing.T, r *rig) {
	s := r.with(nil)
	appts := []event.Lead{leadtest.Lead(bot, event.KindAppointment, 1, t0), leadtest.Lead(bot, event.KindAppointment, 2, t0)}
	ingest(t, s, bot, appts)
	drainChanges(s)

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

	assert.Equal(t, map[string]int{"bus": 1}, depth(t, s))
	count, err := s.DeadCount(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bus": 1, "sales": 2}, nonZero(count))

	all, err := s.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, []string{"sales", "bus", "sales"}, []string{all[0].Forwarder, all[1].Forwarder, all[2].Forwarder}, "oldest failure first")
	assert.Equal(t, []string{appts[1].ID(), appts[0].ID(), appts[0].ID()}, []string{all[0].Event.ID, all[1].Event.ID, all[2].Event.ID})
	assert.Equal(t, 5, all[0].Attempts)
	assert.Equal(t, "sales: HTTP 404", all[0].LastError)
	assert.True(t, failed.Equal(all[0].Failed))
	onlySales, err := s.DeadLetters(t.Context(), "sales")
	require.NoError(t, err)
	require.Len(t, onlySales, 2)
	assert.Equal(t, "sales: HTTP 404", onlySales[0].LastError)

	// Dead letters survive a reopen.
	require.NoError(t, s.Close())
	s = r.with(nil)
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

func testBackfill(t *testing.T, r *rig) {
	appt := leadtest.Lead(bot, event.KindAppointment, 1, t0)
	lead := leadtest.Lead(bot, event.KindLead, 2, t0)
	crmSales := func(c *Config) { c.Route = func(event.Event) []string { return []string{"crm", "sales"} } }

	t.Run("only", func(t *testing.T) {
		r := r.sub(t)
		s := r.with(nil)
		res, err := s.Backfill(t.Context(), bot, []event.Lead{appt, lead}, event.BackfillOptions{Only: []string{"sales"}})
		require.NoError(t, err)
		assert.Equal(t, 2, res.New)
		assert.Empty(t, pending(t, s, "bus"))
		assert.Equal(t, []string{appt.ID()}, eventIDs(pending(t, s, "sales")))
	})
	t.Run("only leaves unseen records to polling", func(t *testing.T) {
		r := r.sub(t)
		s := r.with(crmSales)
		res, err := s.Backfill(t.Context(), bot, []event.Lead{lead}, event.BackfillOptions{Only: []string{"crm"}})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		assert.Equal(t, []string{lead.ID()}, ids(res.Events))
		assert.Empty(t, pending(t, s, "sales"))
		assert.Zero(t, chatbot(t, s, bot).Seen, "a record queued for some forwarders only is not seen")
		assert.Equal(t, 1, ingest(t, s, bot, []event.Lead{lead}).New)
		assert.Equal(t, []string{lead.ID(), lead.ID()}, eventIDs(pending(t, s, "crm")), "crm gets it again with the same id")
		assert.Equal(t, []string{lead.ID()}, eventIDs(pending(t, s, "sales")))
		assert.Equal(t, 1, chatbot(t, s, bot).Seen)
		assert.Equal(t, event.Ingested{Duplicate: 1}, ingest(t, s, bot, []event.Lead{lead}))
	})
	t.Run("only leaves changed content to polling", func(t *testing.T) {
		r := r.sub(t)
		s := r.with(func(c *Config) { crmSales(c); c.EmitUpdates = true })
		ingest(t, s, bot, []event.Lead{lead})
		changed := lead
		changed.Content = "hello again"
		res, err := s.Backfill(t.Context(), bot, []event.Lead{changed}, event.BackfillOptions{Only: []string{"crm"}})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Updated)
		crm := pending(t, s, "crm")
		require.Len(t, crm, 2)
		assert.Equal(t, event.ActionUpdated, crm[1].Event.Action())
		assert.Len(t, pending(t, s, "sales"), 1)
		assert.Equal(t, 1, ingest(t, s, bot, []event.Lead{changed}).Updated, "the backfill did not store the new content")
		sales := pending(t, s, "sales")
		require.Len(t, sales, 2)
		assert.Equal(t, crm[1].Event.ID, sales[1].Event.ID, "the same update, the same id")
		assert.Len(t, pending(t, s, "crm"), 3)
	})
	t.Run("no baseline and no initialization", func(t *testing.T) {
		r := r.sub(t)
		s := r.with(func(c *Config) { c.Initial = InitialSkip })
		res, err := s.Backfill(t.Context(), bot, []event.Lead{appt}, event.BackfillOptions{})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		assert.Zero(t, res.Baseline)
		st := chatbot(t, s, bot)
		assert.False(t, st.Initialized)
		assert.Equal(t, 1, st.Seen)
		assert.Equal(t, event.Ingested{Duplicate: 1, Baseline: 1}, ingest(t, s, bot, []event.Lead{appt, lead}))
	})
	t.Run("resend after delivery", func(t *testing.T) {
		r := r.sub(t)
		s := r.with(nil)
		ingest(t, s, bot, []event.Lead{appt, lead})
		first := pending(t, s, "bus")
		for _, d := range first {
			ack(t, s, d)
		}
		newer := leadtest.Lead(bot, event.KindLead, 3, t0)
		res, err := s.Backfill(t.Context(), bot, []event.Lead{appt, lead, newer}, event.BackfillOptions{Resend: true, Only: []string{"bus"}})
		require.NoError(t, err)
		assert.Equal(t, 2, res.Duplicate)
		assert.Equal(t, 1, res.New)
		assert.Equal(t, []string{appt.ID(), lead.ID(), newer.ID()}, ids(res.Events))
		for _, ev := range res.Events {
			assert.Equal(t, event.ActionCreated, ev.Action())
		}
		assert.Equal(t, []string{appt.ID(), lead.ID(), newer.ID()}, eventIDs(pending(t, s, "bus")))
		assert.Len(t, pending(t, s, "sales"), 1, "Only kept the resend away from sales")
		// A second resend right after queues them again: an operator asked twice.
		_, err = s.Backfill(t.Context(), bot, []event.Lead{appt}, event.BackfillOptions{Resend: true, Only: []string{"bus"}})
		require.NoError(t, err)
		assert.Len(t, pending(t, s, "bus"), 4)
	})
	t.Run("dry run writes nothing", func(t *testing.T) {
		r := r.sub(t)
		s := r.with(nil)
		ingest(t, s, bot, []event.Lead{lead})
		drainChanges(s)
		res, err := s.DryBackfill(t.Context(), bot, []event.Lead{appt, lead}, event.BackfillOptions{Resend: true})
		require.NoError(t, err)
		assert.Equal(t, 1, res.New)
		assert.Equal(t, 1, res.Duplicate)
		assert.Equal(t, []string{appt.ID(), lead.ID()}, ids(res.Events))
		noSignal(t, s, "a dry run signalled Changes")
		require.NoError(t, s.Close())
		s = r.with(nil)
		assert.Equal(t, map[string]int{"bus": 1}, depth(t, s))
		assert.Equal(t, 1, chatbot(t, s, bot).Seen)
		assert.Equal(t, 1, ingest(t, s, bot, []event.Lead{appt}).New, "the dry run marked nothing seen")
	})
}

func testMoveDropPending(t *testing.T, r *rig) {
	s := r.with(func(c *Config) { c.Route = func(event.Event) []string { return []string{"crm"} } })
	ingest(t, s, bot, leads(bot, 0, 3))
	crm := pending(t, s, "crm")
	require.Len(t, crm, 3)
	failed := crm[0]
	failed.Attempts, failed.FirstTry, failed.NextTry, failed.LastError = 4, t0, t0.Add(time.Hour), "webhook crm: HTTP 503"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: failed, Verdict: event.Retrying}}))
	require.NoError(t, s.Close())

	s = r.with(func(c *Config) { c.Route = func(event.Event) []string { return []string{"crm-v2"} } })
	_, err := s.Backfill(t.Context(), bot, leads(bot, 2, 2), event.BackfillOptions{Resend: true})
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
	assert.NotContains(t, depth(t, s), "crm")
	got := pending(t, s, "crm-v2")
	assert.Equal(t, []string{leads(bot, 2, 1)[0].ID(), leads(bot, 3, 1)[0].ID(), crm[0].Event.ID, crm[1].Event.ID}, eventIDs(got))
	m := got[2]
	assert.Equal(t, "crm-v2", m.Forwarder)
	assert.True(t, crm[0].Enqueued.Equal(m.Enqueued))
	assert.Zero(t, m.Attempts, "a fresh start against the new target")
	assert.True(t, m.FirstTry.IsZero())
	assert.True(t, m.NextTry.IsZero())
	assert.Empty(t, m.LastError)
	assert.Greater(t, m.Seq, got[1].Seq, "moved entries come after")

	moved, already, err = s.MovePending(t.Context(), "crm", "crm-v2")
	require.NoError(t, err)
	assert.Zero(t, moved+already)
	for _, bad := range [][2]string{{"", "x"}, {"x", ""}, {"crm-v2", "crm-v2"}} {
		_, _, err := s.MovePending(t.Context(), bad[0], bad[1])
		assert.ErrorContains(t, err, "two different forwarder names", "%q", bad)
	}
	assert.Len(t, pending(t, s, "crm-v2"), 4, "bad moves changed nothing")

	n, err := s.DropPending(t.Context(), "crm-v2")
	require.NoError(t, err)
	assert.Equal(t, 4, n)
	assert.Empty(t, depth(t, s))
	n, err = s.DropPending(t.Context(), "crm-v2")
	require.NoError(t, err)
	assert.Zero(t, n)
	_, err = s.DropPending(t.Context(), "")
	assert.ErrorContains(t, err, "want a forwarder name")
}

func testRecordPoll(t *testing.T, r *rig) {
	s := r.with(nil)
	at1 := time.Date(2024, 3, 1, 0, 0, 0, 0, time.UTC)
	at2, at3 := at1.Add(time.Minute), at1.Add(2*time.Minute)
	last, err := s.LastOK(t.Context(), bot)
	require.NoError(t, err)
	assert.True(t, last.IsZero())

	require.NoError(t, s.RecordPoll(t.Context(), bot, at1, nil))
	require.NoError(t, s.RecordPoll(t.Context(), bot, at2, errors.New("leadlist: HTTP 503")))
	st := chatbot(t, s, bot)
	assert.True(t, at2.Equal(st.LastPoll))
	assert.True(t, at1.Equal(st.LastOK))
	assert.Equal(t, "leadlist: HTTP 503", st.LastError)
	assert.False(t, st.Initialized, "a poll record is not the baseline")
	last, err = s.LastOK(t.Context(), bot)
	require.NoError(t, err)
	assert.True(t, at1.Equal(last))

	require.NoError(t, s.RecordPoll(t.Context(), bot, at3, nil))
	require.NoError(t, s.Close())
	s = r.with(nil)
	st = chatbot(t, s, bot)
	assert.True(t, at3.Equal(st.LastOK))
	assert.True(t, at3.Equal(st.LastPoll))
	assert.Empty(t, st.LastError)
	last, err = s.LastOK(t.Context(), bot)
	require.NoError(t, err)
	assert.True(t, at3.Equal(last), "LastOK is read back after a reopen")

	// Ingest and RecordPoll both change a chatbot's state; neither loses the other's.
	ingest(t, s, bot, leads(bot, 1, 2))
	require.NoError(t, s.RecordPoll(t.Context(), bot, at3.Add(time.Minute), nil))
	st = chatbot(t, s, bot)
	assert.Equal(t, 2, st.Seen)
	assert.True(t, st.Initialized)
	assert.True(t, at3.Add(time.Minute).Equal(st.LastOK))
}

func testPauseResume(t *testing.T, r *rig) {
	s := r.with(nil)
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
	s = r.with(nil)
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

func testChanges(t *testing.T, r *rig) {
	s := r.with(func(c *Config) { c.Initial = InitialSkip })
	ingest(t, s, bot, leads(bot, 1, 3))
	noSignal(t, s, "baseline signalled")
	ingest(t, s, bot, leads(bot, 1, 3))
	noSignal(t, s, "duplicates signalled")
	ingest(t, s, bot, leads(bot, 4, 1))
	ingest(t, s, bot, leads(bot, 5, 1))
	select {
	case <-s.Changes():
	default:
		t.Fatal("new entries not signalled")
	}
	noSignal(t, s, "signal not coalesced")
}

func testRetention(t *testing.T, r *rig) {
	clk := &clock{t: t0}
	s := r.with(func(c *Config) { c.Now = clk.now })
	old := leadtest.Lead(bot, event.KindLead, 1, t0.Add(-23*time.Hour))
	gone := leadtest.Lead(bot, event.KindLead, 2, t0.Add(-time.Hour))
	other := leadtest.Lead("otherbot", event.KindLead, 3, t0.Add(-20*time.Hour))
	ancient := leadtest.Lead(bot, event.KindLead, 4, t0.Add(-30*24*time.Hour))
	res := ingest(t, s, bot, []event.Lead{old, gone, ancient})
	assert.Equal(t, 2, res.New)
	assert.Equal(t, 1, res.Stale, "a record older than the retention is not taken")
	ingest(t, s, "otherbot", []event.Lead{other})

	clk.pass(5 * time.Hour)
	assert.Equal(t, 1, ingest(t, s, bot, []event.Lead{old}).Duplicate, "the API still returns it")

	clk.pass(20 * time.Hour)
	n, err := s.Prune(t.Context(), clk.now())
	require.NoError(t, err)
	assert.Equal(t, 2, n, "gone and other were neither created nor seen within a day")
	assert.Equal(t, 1, chatbot(t, s, bot).Seen)
	assert.Equal(t, 0, chatbot(t, s, "otherbot").Seen)
	assert.Equal(t, event.Ingested{Duplicate: 1, Stale: 2}, ingest(t, s, bot, []event.Lead{old, gone, ancient}),
		"the kept key is a duplicate, the pruned and the ancient records are stale")
	assert.Equal(t, []string{old.ID(), gone.ID()}, eventIDs(pending(t, s, "bus"))[:2], "only the fresh records were ever queued")
	assert.Len(t, pending(t, s, "bus"), 3, "and other's")

	res2, err := s.Backfill(t.Context(), bot, []event.Lead{ancient}, event.BackfillOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{ancient.ID()}, ids(res2.Events), "a backfill asked for it: it is taken")

	require.NoError(t, s.Close())
	keep := r.with(func(c *Config) { c.Retention = 0 })
	n, err = keep.Prune(t.Context(), t0.Add(1000*time.Hour))
	require.NoError(t, err)
	assert.Zero(t, n, "retention 0 keeps everything")
}

// testSeenCount: a chatbot's Seen is the number of its seen keys, after ingest, after
// its keys expire by retention and after a reopen, also for chatbots whose serials start
// alike.
func testSeenCount(t *testing.T, r *rig) {
	clk := &clock{t: t0}
	s := r.with(func(c *Config) { c.Now = clk.now })
	long, short := bot+"0", bot // long's keys sort right beside short's
	ingest(t, s, long, leads(long, 0, 2))
	ingest(t, s, short, leads(short, 0, 3))
	ingest(t, s, short, leads(short, 2, 2)) // one repeat, one new
	_, err := s.Backfill(t.Context(), long, leads(long, 5, 1), event.BackfillOptions{Only: []string{"bus"}})
	require.NoError(t, err) // marks nothing seen
	assert.Equal(t, 4, chatbot(t, s, short).Seen)
	assert.Equal(t, 2, chatbot(t, s, long).Seen)

	clk.pass(10 * time.Hour)
	ingest(t, s, long, leads(long, 7, 1))
	clk.pass(20 * time.Hour)
	n, err := s.Prune(t.Context(), clk.now())
	require.NoError(t, err)
	assert.Equal(t, 6, n, "all but the key taken ten hours later expired")
	assert.Zero(t, chatbot(t, s, short).Seen)
	assert.Equal(t, 1, chatbot(t, s, long).Seen)

	require.NoError(t, s.Close())
	s = r.with(func(c *Config) { c.Now = clk.now })
	assert.Zero(t, chatbot(t, s, short).Seen)
	assert.Equal(t, 1, chatbot(t, s, long).Seen, "the same after a reopen")
}

func testEventSurvives(t *testing.T, r *rig) {
	l := leadtest.Lead(bot, event.KindAppointment, 31313, time.Date(2023, 11, 22, 11, 13, 44, 54019000, time.FixedZone("CST", 8*3600)))
	l.Name, l.Content = "Zoë <b>&", "line1\nline2 \u2028 \"quoted\""
	s := r.with(func(c *Config) { c.Retention = 0 })
	res := ingest(t, s, bot, []event.Lead{l})
	require.Len(t, res.Events, 1)
	require.NoError(t, s.Close())
	s = r.with(func(c *Config) { c.Retention = 0 })
	ds := pending(t, s, "bus")
	require.Len(t, ds, 1)
	assert.Equal(t, event.NewCreated(l), ds[0].Event)
}
