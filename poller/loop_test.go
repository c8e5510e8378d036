package poller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// The doc example's records, served by the fake server for loop tests.
const (
	docLead        = `{"Type":"Lead","Name":"test","Email":"test@qq.com","PhoneNumber":"+1 555 0100","CreateTime":"2023-11-23T18:36:21.512302-08:00","Content":"test","SessionID":31305,"URI":"www.xxx.com","Count":2}`
	docAppointment = `{"Type":"Appointment","Name":"test444","Email":"test444@qq.com","PhoneNumber":"","CreateTime":"2023-11-21T19:13:44.054019-08:00","Content":"Please share anything","SessionID":31313,"URI":"www.xxx.com","Count":2}`
)

// personal is text from the records above that no log line may carry.
var personal = []string{"test@qq.com", "test444", "Please share anything", "555 0100"}

// pollNow is a fixed clock inside the window that holds both doc records.
var pollNow = time.Date(2023, 11, 24, 12, 0, 0, 0, time.UTC)

// testForwarder is the one forwarder the test stores route every event to.
const testForwarder = "webhook"

// openStore opens a real dedupe store on a file in t.TempDir() (unless opts.Path is set),
// routing every event to testForwarder unless opts.Route is set, and closes it when the
// test ends, failing the test if the close fails.
func openStore(t *testing.T, opts dedupe.Options) *dedupe.Store {
	t.Helper()
	if opts.Route == nil {
		opts.Route = leadtest.RouteTo(testForwarder)
	}
	s := leadtest.OpenStore(t, opts)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// chatbotStates returns what the store holds about every chatbot.
func chatbotStates(t *testing.T, s *dedupe.Store) map[string]event.ChatbotState {
	t.Helper()
	states, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	return states
}

// eventIDs returns the ids of the events in deliveries.
func eventIDs(deliveries []event.Delivery) []string {
	var ids []string
	for _, d := range deliveries {
		ids = append(ids, d.Event.ID)
	}
	return ids
}

// closeOnRecordTaken is a store log handler that closes the store the moment an Ingest
// has committed (dedupe logs "record taken" once the page is durable), so that the
// RecordPoll which follows in the same poll fails for real.
type closeOnRecordTaken struct {
	store *dedupe.Store
	once  sync.Once
}

func (h *closeOnRecordTaken) Enabled(context.Context, slog.Level) bool { return true }

func (h *closeOnRecordTaken) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "record taken" {
		h.once.Do(func() { _ = h.store.Close() })
	}
	return nil
}

func (h *closeOnRecordTaken) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h *closeOnRecordTaken) WithGroup(string) slog.Handler { return h }

// logSink collects JSON log lines from concurrent writers.
type logSink struct{ leadtest.LogBuffer }

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// lines returns the logged records whose message is msg.
func (s *logSink) lines(t *testing.T, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(s.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// assertNoPersonalData checks the logs carry neither personal data nor the API key.
func (s *logSink) assertNoPersonalData(t *testing.T) {
	t.Helper()
	logs := s.String()
	for _, p := range append(personal, testKey) {
		assert.NotContains(t, logs, p)
	}
}

// onPollCalls records OnPoll calls.
type onPollCalls struct {
	mu    sync.Mutex
	calls []onPollCall
}

type onPollCall struct {
	serial string
	res    event.Ingested
	err    error
}

func (o *onPollCalls) hook(bot event.Chatbot, _ time.Duration, res event.Ingested, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, onPollCall{bot.Serial, res, err})
}

func (o *onPollCalls) all() []onPollCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]onPollCall(nil), o.calls...)
}

func TestPollOnceIngestsEveryPoll(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead, docAppointment)
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	sink, hooks := &logSink{}, &onPollCalls{}
	l := &Loop{
		Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Logger: sink.logger(), OnPoll: hooks.hook, Now: func() time.Time { return pollNow },
	}

	for i := range 3 {
		res, err := l.PollOnce(context.Background(), mainSite)
		require.NoError(t, err)
		if i == 0 {
			assert.Equal(t, 2, res.New)
		} else {
			assert.Equal(t, 2, res.Duplicate, "the store, not the poller, tells repeats apart")
		}
	}

	calls := hooks.all()
	require.Len(t, calls, 3)
	first := calls[0].res
	assert.Equal(t, 2, first.New)
	require.Len(t, first.Events, 2)
	for _, ev := range first.Events {
		assert.Equal(t, mainSite.Serial, ev.Data.Chatbot)
		assert.Equal(t, mainSite.Name, ev.Data.ChatbotName)
	}
	for _, c := range calls[1:] {
		assert.Equal(t, event.Ingested{Duplicate: 2}, c.res, "the same records are handed to the store on every poll")
	}

	// The store holds both records once, with one delivery each, and every poll as a success.
	outbox := leadtest.Pending(t, store, testForwarder)
	require.Len(t, outbox, 2)
	assert.Equal(t, []string{first.Events[0].ID, first.Events[1].ID}, eventIDs(outbox))
	assert.Equal(t, event.ChatbotState{Initialized: true, LastPoll: pollNow, LastOK: pollNow, Seen: 2},
		chatbotStates(t, store)[mainSite.Serial])

	for _, h := range srv.hitsFor(mainSite.Serial) {
		assert.Equal(t, "2023-11-22", h.start)
		assert.Equal(t, "2023-11-25", h.end)
	}

	events := sink.lines(t, "new event")
	require.Len(t, events, 2)
	ids := map[string]bool{}
	for _, d := range outbox {
		ids[d.Event.Data.ID()] = true
	}
	for _, e := range events {
		assert.Equal(t, "INFO", e["level"])
		assert.Equal(t, mainSite.Serial, e["chatbot"])
		assert.Contains(t, []any{"lead", "appointment"}, e["kind"])
		assert.True(t, ids[e["event_id"].(string)], "event_id is the record's event id")
		assert.Contains(t, []any{31305.0, 31313.0}, e["session_id"])
	}
	polled := sink.lines(t, "polled")
	require.Len(t, polled, 3)
	assert.Equal(t, "DEBUG", polled[0]["level"])
	assert.Equal(t, 2.0, polled[0]["new"])
	assert.Equal(t, 2.0, polled[2]["dup"])
	assert.Contains(t, polled[0], "took")
	sink.assertNoPersonalData(t)
}

// A poll that takes many records logs the first maxAnnounced one by one at info ("new
// event"), the rest at debug, and one info line with how many there were, so that a burst
// does not write a log line per record.
func TestPollOnceLogsABurstOfNewEventsInOneLine(t *testing.T) {
	srv := newLeadListServer(t)
	var docs []string
	for i := range maxAnnounced + 5 {
		docs = append(docs, fmt.Sprintf(`{"Type":"Lead","Name":"n","Email":"e@qq.com","CreateTime":"2023-11-23T18:%02d:21-08:00","Content":"c","SessionID":%d}`, i, 40000+i))
	}
	srv.setRecords(mainSite.Serial, docs...)
	store, sink := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit}), &logSink{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Logger: sink.logger(), Now: func() time.Time { return pollNow }}

	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	require.Equal(t, maxAnnounced+5, res.New)
	levels := map[any]int{}
	for _, line := range sink.lines(t, "new event") {
		levels[line["level"]]++
	}
	assert.Equal(t, map[any]int{"INFO": maxAnnounced, "DEBUG": 5}, levels, "every event is logged, the first %d at info", maxAnnounced)
	summary := sink.lines(t, "more new events than are logged one by one: the rest are logged at debug")
	require.Len(t, summary, 1)
	assert.Equal(t, "INFO", summary[0]["level"])
	assert.Equal(t, float64(maxAnnounced+5), summary[0]["new_events"])
	assert.Equal(t, float64(5), summary[0]["not_logged"])

	// A poll of a few new records logs each at info and no summary.
	srv.setRecords(mainSite.Serial, append(docs, docLead)...)
	sink.Reset()
	res, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	require.Equal(t, 1, res.New)
	require.Len(t, sink.lines(t, "new event"), 1)
	assert.Equal(t, "INFO", sink.lines(t, "new event")[0]["level"])
	assert.Empty(t, sink.lines(t, "more new events than are logged one by one: the rest are logged at debug"))
}

func TestPollOnceLogsSkippedRecords(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead,
		`{"Type":"Ticket","Name":"test444","Email":"test444@qq.com","CreateTime":"2023-11-23T18:36:21-08:00"}`,
		`{"Type":"Lead","Name":"test444","Content":"Please share anything","SessionID":"555 0100"}`)
	store, sink := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit}), &logSink{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Logger: sink.logger(), Now: func() time.Time { return pollNow }}

	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)
	assert.Equal(t, 1, chatbotStates(t, store)[mainSite.Serial].Seen, "only the decodable record is stored")

	skipped := sink.lines(t, "skipped undecodable LeadList record")
	require.Len(t, skipped, 2)
	for i, s := range skipped {
		assert.Equal(t, "WARN", s["level"])
		assert.Equal(t, mainSite.Serial, s["chatbot"])
		assert.Equal(t, float64(i+1), s["index"])
		assert.NotEmpty(t, s["reason"])
	}
	assert.Contains(t, skipped[0]["reason"], "unknown record Type")
	assert.Contains(t, skipped[1]["reason"], "CreateTime")
	sink.assertNoPersonalData(t)
}

func TestPollOnceFailures(t *testing.T) {
	// A Route naming a forwarder without a name makes the real store fail the page: bbolt
	// refuses the outbox bucket and the page's transaction rolls back.
	unnamed := func(event.Event) []string { return []string{""} }
	const (
		closeBefore      = "before the poll"
		closeAfterIngest = "after the ingest commits"
	)
	cases := []struct {
		name      string
		reply     reply
		route     func(event.Event) []string
		closeAt   string // when the store gets closed, "" for never
		wantIs    error
		wantOps   []string // the store operations the error names
		wantLevel string
		recorded  bool // the store holds the failed poll
		wantTaken int  // records the store took, with one delivery each
	}{
		{name: "API answers 500", reply: reply{status: 500}, wantLevel: "WARN", recorded: true},
		{name: "API says Success false", reply: reply{body: `{"Success":false,"Code":403,"Message":"forbidden"}`}, wantLevel: "WARN", recorded: true},
		{name: "store cannot ingest", reply: reply{body: okBody(docLead)}, route: unnamed,
			wantIs: bolterrors.ErrBucketNameRequired, wantOps: []string{"store ingest"}, wantLevel: "ERROR", recorded: true},
		{name: "store cannot record the poll", reply: reply{body: okBody(docLead)}, closeAt: closeAfterIngest,
			wantIs: bolterrors.ErrDatabaseNotOpen, wantOps: []string{"store record poll"}, wantLevel: "ERROR", wantTaken: 1},
		{name: "store is closed", reply: reply{body: okBody(docLead)}, closeAt: closeBefore,
			wantIs: bolterrors.ErrDatabaseNotOpen, wantOps: []string{"store ingest", "store record poll"}, wantLevel: "ERROR"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLeadListServer(t)
			srv.script(mainSite.Serial, tc.reply)
			opts := dedupe.Options{Path: filepath.Join(t.TempDir(), "s.db"), Initial: dedupe.InitialEmit, Route: tc.route}
			closer := &closeOnRecordTaken{}
			if tc.closeAt == closeAfterIngest {
				opts.Logger = slog.New(closer)
			}
			store := openStore(t, opts)
			closer.store = store
			if tc.closeAt == closeBefore {
				require.NoError(t, store.Close())
			}
			sink, hooks := &logSink{}, &onPollCalls{}
			l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
				Logger: sink.logger(), OnPoll: hooks.hook, Now: func() time.Time { return pollNow }}

			_, err := l.PollOnce(context.Background(), mainSite)
			require.Error(t, err)
			assert.Contains(t, err.Error(), mainSite.Serial)
			if tc.wantIs != nil {
				assert.ErrorIs(t, err, tc.wantIs)
			}
			for _, op := range tc.wantOps {
				assert.Contains(t, err.Error(), op)
			}
			calls := hooks.all()
			require.Len(t, calls, 1)
			assert.Equal(t, err, calls[0].err)
			assert.Equal(t, tc.wantTaken, calls[0].res.New)

			// Reopen the file to see what the poll left in it.
			require.NoError(t, store.Close())
			reopened := openStore(t, dedupe.Options{Path: opts.Path})
			st := chatbotStates(t, reopened)[mainSite.Serial]
			if tc.recorded {
				assert.Equal(t, pollNow, st.LastPoll, "a failed poll is recorded too")
				assert.Equal(t, err.Error(), st.LastError)
			} else {
				assert.Zero(t, st.LastPoll)
			}
			assert.Zero(t, st.LastOK)
			assert.Equal(t, tc.wantTaken, st.Seen)
			assert.Equal(t, tc.wantTaken > 0, st.Initialized, "a page the store did not take leaves no trace")
			assert.Len(t, leadtest.Pending(t, reopened, testForwarder), tc.wantTaken)

			failed := append(sink.lines(t, "LeadList poll failed"), sink.lines(t, "store failed to take polled records")...)
			require.Len(t, failed, 1)
			assert.Equal(t, tc.wantLevel, failed[0]["level"])
			assert.Equal(t, mainSite.Serial, failed[0]["chatbot"])
			assert.Empty(t, sink.lines(t, "polled"))
			sink.assertNoPersonalData(t)
		})
	}
}

func TestPollOnceCancelledIsNotRecorded(t *testing.T) {
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial, reply{delay: 5 * time.Second})
	store, sink, hooks := openStore(t, dedupe.Options{}), &logSink{}, &onPollCalls{}
	l := &Loop{Client: srv.client(10 * time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Logger: sink.logger(), OnPoll: hooks.hook}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := l.PollOnce(ctx, mainSite)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, chatbotStates(t, store), "the store never heard of the chatbot")
	assert.Empty(t, hooks.all())
	assert.Empty(t, sink.String())
}

func TestWindowFor(t *testing.T) {
	pst := time.FixedZone("PST", -8*3600)
	noon := time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC)
	const day = 24 * time.Hour
	cases := []struct {
		name        string
		lookback    time.Duration
		maxLookback time.Duration
		lastOK      time.Time // zero: never polled successfully
		now         time.Time
		start, end  time.Time
		catchUp     bool
		lostFrom    time.Time // zero: nothing cut at MaxLookback
		future      bool      // lastOK is suspect: later than now
	}{
		{name: "midday, default lookback 48h", now: noon, start: date(2025, 3, 8), end: date(2025, 3, 11)},
		{name: "just before midnight", lookback: 48 * time.Hour, now: time.Date(2025, 3, 10, 23, 59, 59, 999, time.UTC), start: date(2025, 3, 8), end: date(2025, 3, 11)},
		{name: "exactly midnight", lookback: 48 * time.Hour, now: time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), start: date(2025, 3, 8), end: date(2025, 3, 11)},
		{name: "local evening is the next UTC day", lookback: 48 * time.Hour, now: time.Date(2025, 3, 10, 20, 0, 0, 0, pst), start: date(2025, 3, 9), end: date(2025, 3, 12)},
		{name: "short lookback crosses midnight", lookback: time.Hour, now: time.Date(2025, 3, 10, 0, 30, 0, 0, time.UTC), start: date(2025, 3, 9), end: date(2025, 3, 11)},
		{name: "month and year end", lookback: 48 * time.Hour, now: time.Date(2024, 12, 31, 23, 0, 0, 0, time.UTC), start: date(2024, 12, 29), end: date(2025, 1, 1)},
		{name: "leap day", lookback: 48 * time.Hour, now: time.Date(2024, 3, 1, 1, 0, 0, 0, time.UTC), start: date(2024, 2, 28), end: date(2024, 3, 2)},
		{name: "last success a minute ago: plain window", maxLookback: 88 * day, lastOK: noon.Add(-time.Minute), now: noon,
			start: date(2025, 3, 8), end: date(2025, 3, 11)},
		{name: "gap its day margin keeps inside the lookback", maxLookback: 88 * day, lastOK: time.Date(2025, 3, 9, 0, 0, 0, 0, time.UTC), now: noon,
			start: date(2025, 3, 8), end: date(2025, 3, 11)},
		{name: "gap longer than the lookback: from the day before the last success", maxLookback: 88 * day,
			lastOK: time.Date(2025, 3, 5, 3, 0, 0, 0, pst), now: noon, start: date(2025, 3, 4), end: date(2025, 3, 11), catchUp: true},
		{name: "gap exactly at MaxLookback is not cut", maxLookback: 10 * day, lastOK: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), now: noon,
			start: date(2025, 2, 28), end: date(2025, 3, 11), catchUp: true},
		{name: "gap beyond MaxLookback is cut", maxLookback: 10 * day, lastOK: time.Date(2025, 2, 20, 12, 0, 0, 0, time.UTC), now: noon,
			start: date(2025, 2, 28), end: date(2025, 3, 11), catchUp: true, lostFrom: date(2025, 2, 19)},
		{name: "MaxLookback 0: no catch-up beyond the lookback", lastOK: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), now: noon,
			start: date(2025, 3, 8), end: date(2025, 3, 11), lostFrom: date(2025, 2, 28)},
		{name: "MaxLookback below the lookback counts as the lookback", maxLookback: day, lastOK: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), now: noon,
			start: date(2025, 3, 8), end: date(2025, 3, 11), lostFrom: date(2025, 2, 28)},
		{name: "last success in the future: as far back as MaxLookback", maxLookback: 10 * day, lastOK: noon.Add(72 * time.Hour), now: noon,
			start: date(2025, 2, 28), end: date(2025, 3, 11), catchUp: true, future: true},
		{name: "last success in the future, MaxLookback 0: the plain window", lastOK: noon.Add(72 * time.Hour), now: noon,
			start: date(2025, 3, 8), end: date(2025, 3, 11), future: true},
		{name: "last success a minute in the future: taken as now", maxLookback: 10 * day, lastOK: noon.Add(time.Minute), now: noon,
			start: date(2025, 3, 8), end: date(2025, 3, 11)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := &Loop{Lookback: tc.lookback, MaxLookback: tc.maxLookback}
			w := l.windowFor(mainSite, tc.now, tc.lastOK)
			assert.Equal(t, tc.start, w.Start)
			assert.Equal(t, tc.end, w.End)
			assert.Same(t, time.UTC, w.Start.Location())
			assert.Equal(t, tc.catchUp, w.catchUp)
			assert.Equal(t, tc.lostFrom, w.lostFrom)
			assert.Equal(t, tc.future, w.future)
			plain := (&Loop{Lookback: tc.lookback}).windowFor(mainSite, tc.now, time.Time{})
			assert.Equal(t, plain, l.windowFor(event.Chatbot{Serial: "bot-never-polled"}, tc.now, time.Time{}), "other chatbots keep the plain window")
		})
	}
}

func TestPollAllJoinsErrors(t *testing.T) {
	srv := newLeadListServer(t)
	bots := []event.Chatbot{
		{Serial: "bot-ok-1"}, {Serial: "bot-failing-500"}, {Serial: "bot-ok-2"},
		{Serial: "bot-failing-api"}, {Serial: "bot-ok-3"}, {Serial: "bot-ok-4"}, {Serial: "bot-ok-5"},
	}
	for _, b := range bots {
		srv.always(b.Serial, reply{delay: 50 * time.Millisecond, body: okBody(docLead)})
	}
	srv.always("bot-failing-500", reply{status: 500})
	srv.always("bot-failing-api", reply{body: `{"Success":false,"Code":404,"Message":"no_such_chatbot"}`})
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: bots, Now: func() time.Time { return pollNow }}

	err := l.PollAll(context.Background())
	require.Error(t, err)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 500, se.Code)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "no_such_chatbot", ae.Message)
	assert.Contains(t, err.Error(), `"bot-failing-500"`)
	assert.Contains(t, err.Error(), `"bot-failing-api"`)
	assert.NotContains(t, err.Error(), "bot-ok")

	states := chatbotStates(t, store)
	delivered := map[string]int{}
	for _, d := range leadtest.Pending(t, store, testForwarder) {
		delivered[d.Event.Chatbot()]++
	}
	for _, b := range bots {
		assert.Len(t, srv.hitsFor(b.Serial), 1, b.Serial)
		st := states[b.Serial]
		assert.Equal(t, pollNow, st.LastPoll, b.Serial)
		if strings.HasPrefix(b.Serial, "bot-ok") {
			assert.Equal(t, event.ChatbotState{Initialized: true, LastPoll: pollNow, LastOK: pollNow, Seen: 1}, st, b.Serial)
			assert.Equal(t, 1, delivered[b.Serial], b.Serial)
		} else {
			assert.Contains(t, st.LastError, b.Serial)
			assert.Zero(t, st.Seen, b.Serial)
			assert.Zero(t, delivered[b.Serial], b.Serial)
		}
	}
	assert.LessOrEqual(t, srv.peakConcurrency(), pollAllConcurrency)

	healthy := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: bots[:1]}
	assert.NoError(t, healthy.PollAll(context.Background()))
}

func TestLoopValidates(t *testing.T) {
	c, store := NewClient("http://127.0.0.1:1", testKey, time.Second), openStore(t, dedupe.Options{})
	cases := []struct {
		name string
		loop *Loop
		want string
	}{
		{"no client", &Loop{Store: store, Chatbots: []event.Chatbot{mainSite}}, "no Client for chatbot"},
		{"no store", &Loop{Client: c, Chatbots: []event.Chatbot{mainSite}}, "Store is nil"},
		{"no chatbots", &Loop{Client: c, Store: store}, "no chatbots"},
		{"empty serial", &Loop{Client: c, Store: store, Chatbots: []event.Chatbot{{Name: "x"}}}, "chatbot 0 has no serial"},
		{"duplicate serial", &Loop{Client: c, Store: store, Chatbots: []event.Chatbot{mainSite, mainSite}}, "listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorContains(t, tc.loop.Run(context.Background()), tc.want)
			assert.ErrorContains(t, tc.loop.PollAll(context.Background()), tc.want)
		})
	}
}

func TestBackOffPolicy(t *testing.T) {
	l := &Loop{Interval: 20 * time.Millisecond, MaxBackoff: 160 * time.Millisecond}
	bo := l.newBackOff(l.intervalOf(mainSite))
	assert.Zero(t, bo.MaxElapsedTime, "a failing chatbot is retried forever")
	var waits []time.Duration
	for range 6 {
		waits = append(waits, bo.NextBackOff())
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 160 * ms, 160 * ms}, waits)
	bo.Reset()
	assert.Equal(t, 20*ms, bo.NextBackOff(), "a success starts over")

	assert.Equal(t, 5*time.Second, (&Loop{}).newBackOff(DefaultInterval).InitialInterval, "a long interval starts at 5s")
	assert.Equal(t, DefaultMaxBackoff, (&Loop{}).newBackOff(DefaultInterval).MaxInterval)
	assert.Zero(t, (&Loop{}).newBackOff(DefaultInterval).RandomizationFactor, "Jitter 0 means none, as poll.jitter: 0 does")
	assert.Equal(t, 0.1, (&Loop{Jitter: 0.1}).newBackOff(DefaultInterval).RandomizationFactor)
	assert.Zero(t, (&Loop{Jitter: -1}).newBackOff(DefaultInterval).RandomizationFactor)
	assert.Equal(t, 1.0, (&Loop{Jitter: 3}).newBackOff(DefaultInterval).RandomizationFactor)
	assert.Equal(t, time.Second, (&Loop{MaxBackoff: time.Second}).newBackOff(DefaultInterval).InitialInterval)

	cases := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"plain failure takes the backoff", errors.New("boom"), 20 * ms},
		{"longer Retry-After wins", &StatusError{Code: 429, RetryAfter: time.Hour}, time.Hour},
		{"shorter Retry-After loses", &StatusError{Code: 503, RetryAfter: ms}, 20 * ms},
		{"an absurd Retry-After is cut to an hour", &StatusError{Code: 429, RetryAfter: 24 * time.Hour}, time.Hour},
		{"wrapped Retry-After is found", errors.Join(&StatusError{Code: 429, RetryAfter: time.Minute}, errors.New("x")), time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, retryWait(l.newBackOff(l.intervalOf(mainSite)), tc.err))
		})
	}
}

// runLoop runs l in the background and returns a stop function that cancels it and
// waits, failing the test if Run does not return promptly.
func runLoop(t *testing.T, l *Loop) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(5 * time.Second):
				t.Error("Run did not return after its context was cancelled")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// gaps returns the time between consecutive requests.
func gaps(hits []hit) []time.Duration {
	var out []time.Duration
	for i := 1; i < len(hits); i++ {
		out = append(out, hits[i].at.Sub(hits[i-1].at))
	}
	return out
}

func TestRunFailingChatbotDoesNotStallHealthy(t *testing.T) {
	healthy, failing := event.Chatbot{Serial: "bot-healthy"}, event.Chatbot{Serial: "bot-failing"}
	srv := newLeadListServer(t)
	srv.setRecords(healthy.Serial, docLead, docAppointment)
	srv.always(failing.Serial, reply{status: 500, delay: 30 * time.Millisecond})
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	hooks, sink := &onPollCalls{}, &logSink{}
	const interval, maxBackoff = 20 * time.Millisecond, 160 * time.Millisecond
	l := &Loop{
		Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{failing, healthy},
		Interval: interval, MaxBackoff: maxBackoff, OnPoll: hooks.hook, Logger: sink.logger(),
		Now: func() time.Time { return pollNow },
	}
	stop := runLoop(t, l)
	require.Eventually(t, func() bool {
		return len(srv.hitsFor(healthy.Serial)) >= 10 && len(srv.hitsFor(failing.Serial)) >= 5
	}, 10*time.Second, 10*time.Millisecond)
	stop()

	healthyHits, failingHits := srv.hitsFor(healthy.Serial), srv.hitsFor(failing.Serial)
	assert.Greater(t, len(healthyHits), len(failingHits))

	// The failing chatbot's waits double from Interval up to MaxBackoff (±10% jitter).
	for i, gap := range gaps(failingHits)[:4] {
		least := time.Duration(0.9 * float64(min(interval<<i, maxBackoff)))
		assert.GreaterOrEqual(t, gap, least, "wait after failure %d", i+1)
	}

	// Every successful poll of the healthy chatbot handed the same records to the store:
	// the first poll's were new, every later poll's were the same two again.
	var healthyPolls []event.Ingested
	for _, c := range hooks.all() {
		if c.serial == failing.Serial {
			var se *StatusError
			assert.ErrorAs(t, c.err, &se)
		} else {
			assert.NoError(t, c.err)
			healthyPolls = append(healthyPolls, c.res)
		}
	}
	assert.GreaterOrEqual(t, len(healthyPolls), len(healthyHits)-1)
	require.NotEmpty(t, healthyPolls)
	assert.Equal(t, 2, healthyPolls[0].New)
	for _, res := range healthyPolls[1:] {
		assert.Equal(t, event.Ingested{Duplicate: 2}, res)
	}
	states := chatbotStates(t, store)
	assert.Equal(t, event.ChatbotState{Initialized: true, LastPoll: pollNow, LastOK: pollNow, Seen: 2}, states[healthy.Serial])
	assert.Zero(t, states[failing.Serial].Seen, "the failing chatbot handed the store nothing")
	assert.False(t, states[failing.Serial].Initialized)
	assert.Zero(t, states[failing.Serial].LastOK)
	assert.Contains(t, states[failing.Serial].LastError, "HTTP 500")
	outbox := leadtest.Pending(t, store, testForwarder)
	assert.Len(t, outbox, 2)
	for _, d := range outbox {
		assert.Equal(t, healthy.Serial, d.Event.Chatbot())
	}
	failures := sink.lines(t, "LeadList poll failed")
	require.NotEmpty(t, failures)
	for _, f := range failures {
		assert.Equal(t, "WARN", f["level"])
		assert.Equal(t, failing.Serial, f["chatbot"])
		assert.Positive(t, f["retry_in"], "a failure log says when the next try is")
	}
	sink.assertNoPersonalData(t)
}

func TestRunBackoffResetsAfterSuccess(t *testing.T) {
	srv := newLeadListServer(t)
	fail := reply{status: 502}
	srv.script(mainSite.Serial, fail, fail, fail, fail, fail, reply{body: okBody()}, fail)
	l := &Loop{Client: srv.client(time.Second), Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{mainSite},
		Interval: 20 * time.Millisecond, MaxBackoff: 2 * time.Second}
	stop := runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) >= 8 }, 10*time.Second, 10*time.Millisecond)
	stop()

	g := gaps(srv.hitsFor(mainSite.Serial))
	// After five failures the wait has grown to about 320ms...
	assert.GreaterOrEqual(t, g[4], time.Duration(0.9*float64(320*time.Millisecond)))
	// ...and after the success, the next failure starts again from Interval rather than
	// going on to 640ms.
	assert.Less(t, g[6], 500*time.Millisecond)
}

func TestRunHonoursRetryAfter(t *testing.T) {
	limited, other := event.Chatbot{Serial: "bot-limited"}, event.Chatbot{Serial: "bot-other"}
	srv := newLeadListServer(t)
	srv.script(limited.Serial, reply{status: 429, header: map[string]string{"Retry-After": "1"}})
	l := &Loop{Client: srv.client(time.Second), Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{limited, other},
		Interval: 20 * time.Millisecond}
	stop := runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(limited.Serial)) >= 2 }, 10*time.Second, 10*time.Millisecond)
	stop()

	hits := srv.hitsFor(limited.Serial)
	assert.GreaterOrEqual(t, hits[1].at.Sub(hits[0].at), time.Second, "Retry-After: 1 outweighs a 20ms backoff")
	var between int
	for _, h := range srv.hitsFor(other.Serial) {
		if h.at.After(hits[0].at) && h.at.Before(hits[1].at) {
			between++
		}
	}
	assert.GreaterOrEqual(t, between, 3, "the other chatbot kept polling meanwhile")
}

func TestRunStopsPromptlyOnCancel(t *testing.T) {
	inFlight, waiting := event.Chatbot{Serial: "bot-in-flight"}, event.Chatbot{Serial: "bot-waiting"}
	srv := newLeadListServer(t)
	srv.always(inFlight.Serial, reply{delay: time.Minute})
	srv.always(waiting.Serial, reply{status: 429, header: map[string]string{"Retry-After": "3600"}})
	l := &Loop{Client: srv.client(time.Minute), Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{inFlight, waiting},
		Interval: 20 * time.Millisecond}
	stop := runLoop(t, l)
	require.Eventually(t, func() bool {
		return len(srv.hitsFor(inFlight.Serial)) == 1 && len(srv.hitsFor(waiting.Serial)) == 1
	}, 10*time.Second, 10*time.Millisecond)
	stop() // fails the test unless Run returns nil within 5s
}

// docLater is a record that appears after the chatbot's first polls.
const docLater = `{"Type":"Lead","Name":"test","Email":"test@qq.com","PhoneNumber":"+1 555 0100","CreateTime":"2023-11-24T09:15:00-08:00","Content":"test","SessionID":31400,"URI":"www.xxx.com","Count":1}`

func TestRunWithStoreSendsEachRecordOnce(t *testing.T) {
	cases := []struct {
		initial      string
		wantFirst    event.Ingested // the first poll's counts (Events left out)
		wantBaseline int            // records sent nowhere because the first poll only marked them seen
	}{
		{initial: dedupe.InitialEmit, wantFirst: event.Ingested{New: 2}},
		{initial: dedupe.InitialSkip, wantFirst: event.Ingested{Baseline: 2}, wantBaseline: 2},
	}
	for _, tc := range cases {
		t.Run("initial "+tc.initial, func(t *testing.T) {
			srv := newLeadListServer(t)
			srv.setRecords(mainSite.Serial, docLead, docAppointment)
			store, hooks, sink := openStore(t, dedupe.Options{Initial: tc.initial}), &onPollCalls{}, &logSink{}
			l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
				Interval: 10 * time.Millisecond, OnPoll: hooks.hook, Logger: sink.logger(),
				Now: func() time.Time { return pollNow }}
			stop := runLoop(t, l)
			require.Eventually(t, func() bool { return len(hooks.all()) >= 3 }, 10*time.Second, 5*time.Millisecond)
			srv.setRecords(mainSite.Serial, docLead, docAppointment, docLater)
			require.Eventually(t, func() bool {
				calls := hooks.all()
				return calls[len(calls)-1].res.Duplicate == 3
			}, 10*time.Second, 5*time.Millisecond)
			stop()

			// The first poll took the two records, later ones found them seen, until the
			// third record came: it was new once and a duplicate afterwards.
			calls := hooks.all()
			var sent []string
			for i, c := range calls {
				require.NoError(t, c.err)
				for _, ev := range c.res.Events {
					sent = append(sent, ev.ID)
				}
				res := c.res
				res.Events = nil
				switch {
				case i == 0:
					assert.Equal(t, tc.wantFirst, res, "first poll")
				case res.New == 0 && res.Duplicate == 2:
				case res.New == 1 && res.Duplicate == 2:
					require.Len(t, c.res.Events, 1)
					assert.Equal(t, int64(31400), c.res.Events[0].Data.SessionID)
				case res.New == 0 && res.Duplicate == 3:
				default:
					t.Errorf("poll %d: unexpected result %+v", i, res)
				}
			}
			assert.Len(t, sent, 3-tc.wantBaseline, "each record is sent at most once")

			// The outbox holds exactly one delivery per sent record, in the order taken.
			assert.Equal(t, sent, eventIDs(leadtest.Pending(t, store, testForwarder)))
			st := chatbotStates(t, store)[mainSite.Serial]
			assert.Equal(t, 3, st.Seen)
			assert.Equal(t, pollNow, st.LastOK)
			assert.Empty(t, st.LastError)
			sink.assertNoPersonalData(t)
		})
	}
}

// docInGap is a record created three days before pollNow: older than the plain 48h
// window, so only a catch-up window reads it.
const docInGap = `{"Type":"Lead","Name":"test","Email":"test@qq.com","PhoneNumber":"+1 555 0100","CreateTime":"2023-11-21T07:00:00-08:00","Content":"test","SessionID":31290,"URI":"www.xxx.com","Count":1}`

func TestPollCatchesUpAfterGap(t *testing.T) {
	const day = 24 * time.Hour
	backfill := "leadbridge backfill --since 2023-08-15 --until 2023-08-28 --chatbot " + mainSite.Serial + " --config lb.yaml"
	cases := []struct {
		name        string
		lastOK      time.Time // recorded in the store before the Loop starts; zero for none
		maxLookback time.Duration
		wantStart   string // the first polls' startTime
		wantSince   string // the catch-up logged at INFO, "" for none
		wantWarn    string // the backfill command logged at WARN, "" for none
		wantNew     int    // records the successful catch-up poll took
	}{
		{name: "gap within MaxLookback is read from the day before the last success",
			lastOK: pollNow.Add(-5 * day), maxLookback: 88 * day, wantStart: "2023-11-18", wantSince: "2023-11-18", wantNew: 3},
		{name: "gap beyond MaxLookback is cut and the backfill named",
			lastOK: pollNow.Add(-100 * day), maxLookback: 88 * day, wantStart: "2023-08-28", wantSince: "2023-08-28", wantWarn: backfill, wantNew: 3},
		{name: "gap with MaxLookback 0 keeps the plain window",
			lastOK: pollNow.Add(-100 * day), wantStart: "2023-11-22",
			wantWarn: "leadbridge backfill --since 2023-08-15 --until 2023-11-22 --chatbot " + mainSite.Serial + " --config lb.yaml", wantNew: 2},
		{name: "never polled successfully: plain window",
			maxLookback: 88 * day, wantStart: "2023-11-22", wantNew: 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLeadListServer(t)
			srv.setRecords(mainSite.Serial, docLead, docAppointment, docInGap)
			// The first poll fails, so the window is asked for twice before a success.
			srv.script(mainSite.Serial, reply{status: 503})
			store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
			if !tc.lastOK.IsZero() {
				require.NoError(t, store.RecordPoll(t.Context(), mainSite.Serial, tc.lastOK, nil))
			}
			require.NoError(t, store.RecordPoll(t.Context(), "bot-other", pollNow.Add(-100*day), errors.New("down")))
			sink := &logSink{}
			l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
				MaxLookback: tc.maxLookback, BackfillFlags: "--config lb.yaml", Logger: sink.logger(),
				Now: func() time.Time { return pollNow }}

			_, err := l.PollOnce(context.Background(), mainSite)
			require.Error(t, err)
			failed := len(srv.hitsFor(mainSite.Serial))
			res, err := l.PollOnce(context.Background(), mainSite)
			require.NoError(t, err)
			assert.Equal(t, tc.wantNew, res.New)
			caughtUp := len(srv.hitsFor(mainSite.Serial))
			_, err = l.PollOnce(context.Background(), mainSite)
			require.NoError(t, err)

			hits := srv.hitsFor(mainSite.Serial)
			require.Equal(t, 1, failed, "the failed poll stopped at its first request")
			assert.Equal(t, "2023-11-22", hits[0].start, "the plain window is read first")
			assert.Equal(t, "2023-11-22", hits[failed].start, "the plain window is read first")
			assert.Equal(t, "2023-11-25", hits[failed].end)
			if tc.wantStart == "2023-11-22" {
				assert.Equal(t, failed+1, caughtUp, "no gap to read")
			} else {
				assertCovers(t, hits[failed+1:caughtUp], tc.wantStart, "2023-11-22")
			}
			require.Len(t, hits, caughtUp+1)
			assert.Equal(t, "2023-11-22", hits[caughtUp].start, "after a success, the plain 48h window again")
			assert.Equal(t, "2023-11-25", hits[caughtUp].end)

			catchUps := sink.lines(t, "widened the poll window to cover the time since the last successful poll")
			if tc.wantSince == "" {
				assert.Empty(t, catchUps)
			} else {
				require.Len(t, catchUps, 1, "logged once, not on every retry")
				assert.Equal(t, "INFO", catchUps[0]["level"])
				assert.Equal(t, mainSite.Serial, catchUps[0]["chatbot"])
				assert.Equal(t, tc.wantSince, catchUps[0]["since"])
				assert.Equal(t, tc.lastOK.Format(time.RFC3339Nano), catchUps[0]["last_ok"])
			}
			warns := sink.lines(t, gapCutMessage)
			if tc.wantWarn == "" {
				assert.Empty(t, warns)
			} else {
				require.Len(t, warns, 1, "logged once, not on every retry")
				assert.Equal(t, "WARN", warns[0]["level"])
				assert.Equal(t, mainSite.Serial, warns[0]["chatbot"])
				assert.Equal(t, tc.lastOK.Format(time.RFC3339Nano), warns[0]["last_ok"])
				assert.Equal(t, tc.wantWarn, warns[0]["backfill"])
			}
			sink.assertNoPersonalData(t)
		})
	}
}

func TestRunCatchesUpOnceThenPollsPlainWindow(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead, docAppointment, docInGap)
	store, hooks := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit}), &onPollCalls{}
	require.NoError(t, store.RecordPoll(t.Context(), mainSite.Serial, pollNow.Add(-5*24*time.Hour), nil))
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		MaxLookback: 88 * 24 * time.Hour, Interval: 10 * time.Millisecond,
		OnPoll: hooks.hook, Now: func() time.Time { return pollNow }}
	stop := runLoop(t, l)
	require.Eventually(t, func() bool { return len(hooks.all()) >= 3 }, 10*time.Second, 5*time.Millisecond)
	stop()

	hits := srv.hitsFor(mainSite.Serial)
	require.Greater(t, len(hits), 3)
	assert.Equal(t, "2023-11-22", hits[0].start, "the plain window first")
	assertCovers(t, hits[1:3], "2023-11-18", "2023-11-22") // then 18-20, 20-22
	for _, h := range hits[3:] {
		assert.Equal(t, "2023-11-22", h.start, "later polls read the plain window")
	}
	assert.Equal(t, 3, hooks.all()[0].res.New, "the record created in the gap is taken")
	assert.Equal(t, pollNow, chatbotStates(t, store)[mainSite.Serial].LastOK)
}

// assertCovers checks that the requests read the days from start to end in chunks no
// wider than the 48h lookback, oldest first, each starting where the previous one ended.
func assertCovers(t *testing.T, hits []hit, start, end string) {
	t.Helper()
	require.NotEmpty(t, hits)
	assert.Equal(t, start, hits[0].start, "the first chunk starts at the gap")
	assert.Equal(t, end, hits[len(hits)-1].end, "the last chunk ends where the plain window starts")
	for i, h := range hits {
		from, err := time.Parse(time.DateOnly, h.start)
		require.NoError(t, err)
		to, err := time.Parse(time.DateOnly, h.end)
		require.NoError(t, err)
		assert.LessOrEqual(t, to.Sub(from), 3*24*time.Hour, "chunk %d is no wider than a regular poll", i)
		if i > 0 {
			assert.Equal(t, hits[i-1].end, h.start, "chunk %d starts where the last ended", i)
		}
	}
}

// TestCatchUpGoesOnAfterAFailure: a catch-up interrupted by a failing chunk resumes at
// that chunk on the next poll, and what the chunks before it took is announced and
// reported, not lost from view.
func TestCatchUpGoesOnAfterAFailure(t *testing.T) {
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial,
		reply{body: okBody(docLead)},  // the plain window, read first
		reply{body: okBody(docInGap)}, // 2023-11-14..16
		reply{status: 503},            // 2023-11-16..18 fails
	)
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	require.NoError(t, store.RecordPoll(t.Context(), mainSite.Serial, pollNow.Add(-9*24*time.Hour), nil))
	hooks, sink := &onPollCalls{}, &logSink{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		MaxLookback: 88 * 24 * time.Hour, OnPoll: hooks.hook, Logger: sink.logger(),
		Now: func() time.Time { return pollNow }}

	res, err := l.PollOnce(context.Background(), mainSite)
	require.Error(t, err)
	assert.Equal(t, 2, res.New, "the records taken before the failure are reported")
	assert.Len(t, sink.lines(t, "new event"), 2, "and announced")
	require.Len(t, hooks.all(), 1)
	assert.Equal(t, 2, hooks.all()[0].res.New)

	_, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	var got []string
	for _, h := range srv.hitsFor(mainSite.Serial) {
		got = append(got, h.start+".."+h.end)
	}
	assert.Equal(t, []string{
		"2023-11-22..2023-11-25", "2023-11-14..2023-11-16", "2023-11-16..2023-11-18", // first poll
		"2023-11-22..2023-11-25", "2023-11-16..2023-11-18", "2023-11-18..2023-11-20", "2023-11-20..2023-11-22", // resumed
	}, got)
}

// TestFirstPollThatIsNoPageKeepsTheBaseline: a first poll answered with a business error
// dressed as success (Success true, yet Code 500 or no Data array) fails: it neither
// spends the initial: skip baseline nor moves the last-success mark, so the next real
// page is taken as the baseline instead of flooding every existing record.
func TestFirstPollThatIsNoPageKeepsTheBaseline(t *testing.T) {
	for _, body := range []string{
		`{"Success":true,"Code":500,"Data":null}`,
		`{"Success":true,"Code":"503","Data":[]}`,
		`{"Success":true,"Code":200,"Data":null}`,
		`{"Success":true,"Code":200,"Message":""}`,
	} {
		t.Run(body, func(t *testing.T) {
			srv := newLeadListServer(t)
			srv.setRecords(mainSite.Serial, docLead, docAppointment)
			srv.script(mainSite.Serial, reply{body: body})
			store, sink := openStore(t, dedupe.Options{Initial: dedupe.InitialSkip}), &logSink{}
			now := pollNow
			l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
				Logger: sink.logger(), Now: func() time.Time { return now }}

			_, err := l.PollOnce(context.Background(), mainSite)
			require.Error(t, err, "not a successful poll")
			st := chatbotStates(t, store)[mainSite.Serial]
			assert.False(t, st.Initialized, "the baseline is not spent")
			assert.Zero(t, st.LastOK, "the last-success mark does not move")
			assert.Equal(t, pollNow, st.LastPoll)
			assert.NotEmpty(t, st.LastError)
			assert.Empty(t, sink.lines(t, "first poll: records already in the API were taken as known and not sent (poll.initial: skip)"))

			now = pollNow.Add(time.Minute)
			res, err := l.PollOnce(context.Background(), mainSite)
			require.NoError(t, err)
			assert.Equal(t, 2, res.Baseline, "the real page is the baseline")
			assert.Zero(t, res.New, "nothing floods")
			assert.Empty(t, leadtest.Pending(t, store, testForwarder))
			st = chatbotStates(t, store)[mainSite.Serial]
			assert.True(t, st.Initialized)
			assert.Equal(t, now, st.LastOK)

			baseline := sink.lines(t, "first poll: records already in the API were taken as known and not sent (poll.initial: skip)")
			require.Len(t, baseline, 1)
			assert.Equal(t, "INFO", baseline[0]["level"])
			assert.Equal(t, mainSite.Serial, baseline[0]["chatbot"])
			assert.Equal(t, 2.0, baseline[0]["baseline"])

			srv.setRecords(mainSite.Serial, docLead, docAppointment, docLater)
			res, err = l.PollOnce(context.Background(), mainSite)
			require.NoError(t, err)
			assert.Equal(t, 1, res.New, "a record created after the baseline is sent")
			assert.Len(t, sink.lines(t, "first poll: records already in the API were taken as known and not sent (poll.initial: skip)"), 1)
			sink.assertNoPersonalData(t)
		})
	}
}

// skipCalls records OnSkip calls.
type skipCalls struct {
	mu    sync.Mutex
	calls []string // serial/field
}

func (s *skipCalls) hook(bot event.Chatbot, field string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, bot.Serial+"/"+field)
}

func (s *skipCalls) all() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.calls...)
}

// TestMalformedRecordWarnedOnce: a malformed record the API serves on every poll is
// warned about once, then logged at debug; every skip is counted. A record kept without
// its bad Count is taken, with the same once-only warning.
func TestMalformedRecordWarnedOnce(t *testing.T) {
	const (
		badType  = `{"Type":"Ticket","Name":"test444","Email":"test444@qq.com","CreateTime":"2023-11-23T18:36:21-08:00","SessionID":1}`
		badCount = `{"Type":"Lead","Name":"test444","CreateTime":"2023-11-23T18:37:00-08:00","SessionID":2,"Count":"lots"}`
		skipMsg  = "skipped undecodable LeadList record"
		warnMsg  = "took a LeadList record without a field it could not read"
	)
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead, badType, badCount)
	store, sink, skips := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit}), &logSink{}, &skipCalls{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Logger: sink.logger(), OnSkip: skips.hook, Now: func() time.Time { return pollNow }}

	for range 3 {
		_, err := l.PollOnce(context.Background(), mainSite)
		require.NoError(t, err)
	}
	levels := func(msg string) []any {
		var out []any
		for _, line := range sink.lines(t, msg) {
			out = append(out, line["level"])
		}
		return out
	}
	// The same answer again is not read record by record (the store took it whole): no
	// more lines about its records, but every skip is still counted.
	assert.Equal(t, []any{"WARN"}, levels(skipMsg))
	assert.Equal(t, []any{"WARN"}, levels(warnMsg))
	first := sink.lines(t, skipMsg)[0]
	assert.Equal(t, "Type", first["field"])
	assert.Equal(t, 1.0, first["index"])
	assert.Equal(t, false, first["repeat"])
	warned := sink.lines(t, warnMsg)[0]
	assert.Equal(t, "Count", warned["field"])
	assert.Equal(t, 2.0, warned["index"])
	assert.Contains(t, warned["reason"], "field Count: ")
	assert.Equal(t, []string{mainSite.Serial + "/Type", mainSite.Serial + "/Type", mainSite.Serial + "/Type"}, skips.all(),
		"every skip is counted, repeats included")
	assert.Equal(t, 2, chatbotStates(t, store)[mainSite.Serial].Seen, "the record with a bad Count is taken")

	// A changed answer holding the same malformed records is read again: they are
	// repeats, logged at debug.
	srv.setRecords(mainSite.Serial, docLead, badType, badCount, docAppointment)
	_, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, []any{"WARN", "DEBUG"}, levels(skipMsg))
	assert.Equal(t, []any{"WARN", "DEBUG"}, levels(warnMsg))

	// A different malformed record is news: warned about, even at the same index.
	srv.setRecords(mainSite.Serial, docLead, strings.Replace(badType, `"SessionID":1`, `"SessionID":3`, 1), badCount)
	_, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, []any{"WARN", "DEBUG", "WARN"}, levels(skipMsg))
	// Another chatbot's copy of the same record is news too.
	other := event.Chatbot{Serial: "bot-other"}
	srv.setRecords(other.Serial, badType)
	_, err = l.PollOnce(context.Background(), other)
	require.NoError(t, err)
	assert.Equal(t, []any{"WARN", "DEBUG", "WARN", "WARN"}, levels(skipMsg))
	sink.assertNoPersonalData(t)
}

func TestSeenFaultsIsBounded(t *testing.T) {
	var f seenFaults
	for i := range uint64(maxFaults) {
		require.True(t, f.add(i))
	}
	assert.False(t, f.add(0), "remembered")
	assert.True(t, f.add(maxFaults), "one more evicts the oldest")
	assert.Len(t, f.set, maxFaults)
	assert.Len(t, f.ring, maxFaults)
	assert.True(t, f.add(0), "the oldest was forgotten")
	assert.False(t, f.add(maxFaults))
	assert.False(t, f.add(maxFaults-1))
}

// TestLastSuccessInTheFuture: a last-success mark later than now (written while the
// clock was ahead) cannot tell how long the chatbot went unread, so the poll reads back
// as far as MaxLookback allows, warns once, and the next success puts the mark right.
func TestLastSuccessInTheFuture(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead, docAppointment, docInGap)
	srv.script(mainSite.Serial, reply{status: 503})
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	require.NoError(t, store.RecordPoll(t.Context(), mainSite.Serial, pollNow.Add(72*time.Hour), nil))
	sink := &logSink{}
	now := pollNow
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		MaxLookback: 10 * 24 * time.Hour, Logger: sink.logger(),
		Now: func() time.Time { return now }}

	_, err := l.PollOnce(context.Background(), mainSite)
	require.Error(t, err)
	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, 3, res.New, "the record created in the unknown gap is taken")
	hits := srv.hitsFor(mainSite.Serial)
	assertCovers(t, hits[2:], "2023-11-14", "2023-11-22")

	warns := sink.lines(t, futureMarkMessage)
	require.Len(t, warns, 1, "warned once, not on every retry")
	assert.Equal(t, "WARN", warns[0]["level"])
	assert.Equal(t, mainSite.Serial, warns[0]["chatbot"])
	assert.Equal(t, pollNow.Add(72*time.Hour).Format(time.RFC3339Nano), warns[0]["last_ok"])
	assert.Equal(t, "2023-11-14", warns[0]["since"])
	assert.Equal(t, pollNow, chatbotStates(t, store)[mainSite.Serial].LastOK, "the success puts the mark right")

	now = pollNow.Add(time.Minute)
	seen := len(srv.hitsFor(mainSite.Serial))
	_, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	hits = srv.hitsFor(mainSite.Serial)
	require.Len(t, hits, seen+1, "then the plain window again")
	assert.Equal(t, "2023-11-22", hits[seen].start)
	assert.Len(t, sink.lines(t, futureMarkMessage), 1)
	sink.assertNoPersonalData(t)
}

// TestClockSetBackKeepsCatchUp: a success while the clock was 72h ahead must not leave
// a mark that, once the clock is set right, hides a later gap: the success after the
// correction replaces it, and a gap after that is caught up.
func TestClockSetBackKeepsCatchUp(t *testing.T) {
	srv := newLeadListServer(t)
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	now := pollNow.Add(72 * time.Hour)
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		MaxLookback: 10 * 24 * time.Hour, Now: func() time.Time { return now }}
	_, err := l.PollOnce(context.Background(), mainSite) // clock ahead
	require.NoError(t, err)
	now = pollNow // clock set right
	_, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)

	// The API then fails for 60 hours; meanwhile a record is created.
	srv.script(mainSite.Serial, reply{status: 503})
	now = pollNow.Add(time.Hour)
	_, err = l.PollOnce(context.Background(), mainSite)
	require.Error(t, err)
	created := `{"Type":"Lead","Name":"test","CreateTime":"2023-11-24T18:00:00Z","SessionID":31500,"Count":1}`
	srv.setRecords(mainSite.Serial, created)

	now = pollNow.Add(60 * time.Hour) // 2023-11-27T00:00Z: the plain window starts on the 25th
	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	require.Len(t, res.Events, 1, "the gap since the last real success is read")
	assert.Equal(t, int64(31500), res.Events[0].Data.SessionID)
}

// TestManyMalformedRecordsWarnedInSum: a page full of distinct malformed records gets a
// bounded number of warnings and one that sums up the rest.
func TestManyMalformedRecordsWarnedInSum(t *testing.T) {
	bad := make([]string, maxFaultWarnings+30)
	for i := range bad {
		bad[i] = fmt.Sprintf(`{"Type":"Ticket","CreateTime":"2023-11-23T18:36:21-08:00","SessionID":%d}`, i)
	}
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, append(bad, docLead)...)
	store, sink := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit}), &logSink{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Logger: sink.logger(), Now: func() time.Time { return pollNow }}
	for range 2 {
		res, err := l.PollOnce(context.Background(), mainSite)
		require.NoError(t, err)
		assert.Equal(t, 1, res.New+res.Duplicate)
	}
	var warns int
	for _, line := range sink.lines(t, "skipped undecodable LeadList record") {
		if line["level"] == "WARN" {
			warns++
		}
	}
	assert.Equal(t, maxFaultWarnings, warns)
	sum := sink.lines(t, "more malformed LeadList records than are warned about one by one: the rest are logged at debug")
	require.Len(t, sum, 1, "the second poll's are all repeats")
	assert.Equal(t, 30.0, sum[0]["not_warned"])
}

// TestFirstPollsSpread: chatbots started together get their first polls spread over
// min(Interval, 1m), each in its own slice of that span, so they do not poll in phase;
// every one is still first polled within that span.
func TestFirstPollsSpread(t *testing.T) {
	const n = 1000
	cases := []struct {
		name     string
		interval time.Duration
		span     time.Duration
	}{
		{"default interval", 0, time.Minute},
		{"short interval", 6 * time.Second, 6 * time.Second},
		{"long interval: still within a minute", time.Hour, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := &Loop{Interval: tc.interval, Jitter: 0.1}
			slice := tc.span / n
			for i := range n {
				w := l.firstWait(i, n, l.intervalOf(mainSite))
				require.GreaterOrEqual(t, w, time.Duration(i)*slice, "chatbot %d", i)
				require.Less(t, w, time.Duration(i+1)*slice+1, "chatbot %d", i)
			}
		})
	}
	assert.Zero(t, (&Loop{}).firstWait(n-1, n, time.Minute), "jitter off (0): every chatbot is polled at once")
}

// countingStore is the real store, counting the records handed to it.
type countingStore struct {
	*dedupe.Store
	records atomic.Int64
}

func (c *countingStore) IngestPage(ctx context.Context, serial string, read func(take func([]event.Lead, bool) (event.Ingested, error)) error) error {
	return c.Store.IngestPage(ctx, serial, func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		return read(func(leads []event.Lead, last bool) (event.Ingested, error) {
			c.records.Add(int64(len(leads)))
			return take(leads, last)
		})
	})
}

// An answer the store took whole is not read again while it stays the same: the store
// gets no records, and the poll reports them as the duplicates they are. A changed
// answer, or the same answer to another day's window, is read again.
func TestUnchangedAnswerIsNotReadAgain(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead, docAppointment)
	store := &countingStore{Store: openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})}
	now := pollNow
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Now: func() time.Time { return now }}
	poll := func() event.Ingested {
		res, err := l.PollOnce(context.Background(), mainSite)
		require.NoError(t, err)
		return res
	}

	assert.Equal(t, 2, poll().New)
	assert.EqualValues(t, 2, store.records.Load())
	assert.Equal(t, event.Ingested{Duplicate: 2}, poll())
	assert.EqualValues(t, 2, store.records.Load(), "the same answer was not handed to the store again")

	srv.setRecords(mainSite.Serial, docLead)
	assert.Equal(t, event.Ingested{Duplicate: 1}, poll())
	assert.EqualValues(t, 3, store.records.Load(), "a changed answer is read")

	now = now.Add(24 * time.Hour)
	assert.Equal(t, event.Ingested{Duplicate: 1}, poll())
	assert.EqualValues(t, 4, store.records.Load(), "another day's window is read")
}

// A poll cut short by shutdown is not a verdict: whether the store or the client noticed
// the end of ctx first, nothing is recorded and OnPoll is not called.
func TestPollCutShortByShutdownIsNotRecorded(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead)
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	hooks := &onPollCalls{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		OnPoll: hooks.hook, Now: func() time.Time { return pollNow }}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := l.PollOnce(ctx, mainSite)
	require.Error(t, err)
	assert.Empty(t, hooks.all(), "no poll reported")
	assert.Empty(t, chatbotStates(t, store)[mainSite.Serial].LastError, "no failure recorded")
}

// TestRunMoreSlowChatbotsThanIdlePollers: with more chatbots stuck in slow answers than
// Run keeps pollers, a quick chatbot is still polled on its interval, and every slow one
// is polled too: a poll that falls due while all pollers are busy gets one of its own.
func TestRunMoreSlowChatbotsThanIdlePollers(t *testing.T) {
	srv := newLeadListServer(t)
	quick := event.Chatbot{Serial: "bot-quick"}
	srv.setRecords(quick.Serial, docLead)
	bots := []event.Chatbot{quick}
	for i := range 2 * idlePollers {
		slow := event.Chatbot{Serial: fmt.Sprintf("bot-slow-%02d", i)}
		srv.always(slow.Serial, reply{body: okBody(), delay: 2 * time.Second})
		bots = append(bots, slow)
	}
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	l := &Loop{Client: srv.client(10 * time.Second), Store: store, Chatbots: bots,
		Interval: 20 * time.Millisecond, Now: func() time.Time { return pollNow }}
	stop := runLoop(t, l)
	// Every slow chatbot's first poll is under way, and the quick one is polled again
	// and again meanwhile.
	require.Eventually(t, func() bool {
		for _, b := range bots[1:] {
			if len(srv.hitsFor(b.Serial)) == 0 {
				return false
			}
		}
		return len(srv.hitsFor(quick.Serial)) >= 5
	}, 10*time.Second, 5*time.Millisecond)
	for _, b := range bots[1:] {
		assert.Len(t, srv.hitsFor(b.Serial), 1, "%s is still in its first, slow poll", b.Serial)
	}
	stop()
}
