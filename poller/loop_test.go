package poller

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
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

// memStore stands in for the dedupe store, which is being written in parallel: it tells
// new records from seen ones by event id, keeps every call, and can be made to fail.
type memStore struct {
	mu        sync.Mutex
	seen      map[string]bool
	ingests   map[string][][]event.Lead
	polls     []recordedPoll
	ingestErr error
	recordErr error
}

type recordedPoll struct {
	serial string
	at     time.Time
	err    error
}

func newMemStore() *memStore {
	return &memStore{seen: map[string]bool{}, ingests: map[string][][]event.Lead{}}
}

func (s *memStore) Ingest(serial string, leads []event.Lead) (event.Ingested, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ingestErr != nil {
		return event.Ingested{}, s.ingestErr
	}
	s.ingests[serial] = append(s.ingests[serial], append([]event.Lead(nil), leads...))
	var res event.Ingested
	for _, l := range leads {
		if s.seen[l.ID()] {
			res.Duplicate++
			continue
		}
		s.seen[l.ID()] = true
		res.New++
		res.Events = append(res.Events, event.NewCreated(l))
	}
	return res, nil
}

func (s *memStore) RecordPoll(serial string, at time.Time, pollErr error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.polls = append(s.polls, recordedPoll{serial, at, pollErr})
	return s.recordErr
}

func (s *memStore) ingestsFor(serial string) [][]event.Lead {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]event.Lead(nil), s.ingests[serial]...)
}

func (s *memStore) recordedPolls() []recordedPoll {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recordedPoll(nil), s.polls...)
}

// logSink collects JSON log lines from concurrent writers.
type logSink struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *logSink) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *logSink) logger() *slog.Logger {
	return slog.New(slog.NewJSONHandler(s, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func (s *logSink) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
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

func (o *onPollCalls) hook(serial string, _ time.Duration, res event.Ingested, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, onPollCall{serial, res, err})
}

func (o *onPollCalls) all() []onPollCall {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]onPollCall(nil), o.calls...)
}

func TestPollOnceIngestsEveryPoll(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead, docAppointment)
	store, sink, hooks := newMemStore(), &logSink{}, &onPollCalls{}
	l := &Loop{
		Client: srv.client(time.Second), Store: store, Chatbots: []Chatbot{mainSite},
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

	ingests := store.ingestsFor(mainSite.Serial)
	require.Len(t, ingests, 3, "the same records are handed to the store on every poll")
	for _, leads := range ingests {
		require.Len(t, leads, 2)
		assert.Equal(t, ingests[0], leads)
		for _, l := range leads {
			assert.Equal(t, mainSite.Serial, l.Chatbot)
			assert.Equal(t, mainSite.Name, l.ChatbotName)
		}
	}
	for _, p := range store.recordedPolls() {
		assert.Equal(t, recordedPoll{mainSite.Serial, pollNow, nil}, p)
	}
	for _, h := range srv.hitsFor(mainSite.Serial) {
		assert.Equal(t, "2023-11-22", h.start)
		assert.Equal(t, "2023-11-25", h.end)
	}
	calls := hooks.all()
	require.Len(t, calls, 3)
	assert.Equal(t, 2, calls[0].res.New)
	assert.Equal(t, 2, calls[2].res.Duplicate)

	events := sink.lines(t, "new event")
	require.Len(t, events, 2)
	ids := map[string]bool{}
	for _, l := range ingests[0] {
		ids[l.ID()] = true
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

func TestPollOnceLogsSkippedRecords(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead,
		`{"Type":"Ticket","Name":"test444","Email":"test444@qq.com","CreateTime":"2023-11-23T18:36:21-08:00"}`,
		`{"Type":"Lead","Name":"test444","Content":"Please share anything","SessionID":"555 0100"}`)
	store, sink := newMemStore(), &logSink{}
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []Chatbot{mainSite},
		Logger: sink.logger(), Now: func() time.Time { return pollNow }}

	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)

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
	diskFull := errors.New("disk full")
	cases := []struct {
		name       string
		reply      reply
		ingestErr  error
		recordErr  error
		wantIs     error
		wantLevel  string
		wantIngest int
	}{
		{name: "API answers 500", reply: reply{status: 500}, wantLevel: "WARN"},
		{name: "API says Success false", reply: reply{body: `{"Success":false,"Code":403,"Message":"forbidden"}`}, wantLevel: "WARN"},
		{name: "store cannot ingest", reply: reply{body: okBody(docLead)}, ingestErr: diskFull, wantIs: diskFull, wantLevel: "ERROR"},
		{name: "store cannot record the poll", reply: reply{body: okBody(docLead)}, recordErr: diskFull, wantIs: diskFull, wantLevel: "ERROR", wantIngest: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLeadListServer(t)
			srv.script(mainSite.Serial, tc.reply)
			store, sink, hooks := newMemStore(), &logSink{}, &onPollCalls{}
			store.ingestErr, store.recordErr = tc.ingestErr, tc.recordErr
			l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: []Chatbot{mainSite},
				Logger: sink.logger(), OnPoll: hooks.hook, Now: func() time.Time { return pollNow }}

			_, err := l.PollOnce(context.Background(), mainSite)
			require.Error(t, err)
			assert.Contains(t, err.Error(), mainSite.Serial)
			if tc.wantIs != nil {
				assert.ErrorIs(t, err, tc.wantIs)
			}
			assert.Len(t, store.ingestsFor(mainSite.Serial), tc.wantIngest)

			polls := store.recordedPolls()
			require.Len(t, polls, 1, "a failed poll is recorded too")
			assert.Equal(t, pollNow, polls[0].at)
			if tc.recordErr == nil {
				assert.Equal(t, err, polls[0].err)
			}
			calls := hooks.all()
			require.Len(t, calls, 1)
			assert.Equal(t, err, calls[0].err)

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
	store, sink, hooks := newMemStore(), &logSink{}, &onPollCalls{}
	l := &Loop{Client: srv.client(10 * time.Second), Store: store, Chatbots: []Chatbot{mainSite},
		Logger: sink.logger(), OnPoll: hooks.hook}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := l.PollOnce(ctx, mainSite)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Empty(t, store.recordedPolls())
	assert.Empty(t, hooks.all())
	assert.Empty(t, sink.String())
}

func TestWindowAt(t *testing.T) {
	pst := time.FixedZone("PST", -8*3600)
	cases := []struct {
		name       string
		lookback   time.Duration
		now        time.Time
		start, end time.Time
	}{
		{"midday, default lookback 48h", 0, time.Date(2025, 3, 10, 12, 0, 0, 0, time.UTC), date(2025, 3, 8), date(2025, 3, 11)},
		{"just before midnight", 48 * time.Hour, time.Date(2025, 3, 10, 23, 59, 59, 999, time.UTC), date(2025, 3, 8), date(2025, 3, 11)},
		{"exactly midnight", 48 * time.Hour, time.Date(2025, 3, 10, 0, 0, 0, 0, time.UTC), date(2025, 3, 8), date(2025, 3, 11)},
		{"local evening is the next UTC day", 48 * time.Hour, time.Date(2025, 3, 10, 20, 0, 0, 0, pst), date(2025, 3, 9), date(2025, 3, 12)},
		{"short lookback crosses midnight", time.Hour, time.Date(2025, 3, 10, 0, 30, 0, 0, time.UTC), date(2025, 3, 9), date(2025, 3, 11)},
		{"month and year end", 48 * time.Hour, time.Date(2024, 12, 31, 23, 0, 0, 0, time.UTC), date(2024, 12, 29), date(2025, 1, 1)},
		{"leap day", 48 * time.Hour, time.Date(2024, 3, 1, 1, 0, 0, 0, time.UTC), date(2024, 2, 28), date(2024, 3, 2)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w := (&Loop{Lookback: tc.lookback}).WindowAt(tc.now)
			assert.Equal(t, tc.start, w.Start)
			assert.Equal(t, tc.end, w.End)
			assert.Same(t, time.UTC, w.Start.Location())
		})
	}
}

func TestPollAllJoinsErrors(t *testing.T) {
	srv := newLeadListServer(t)
	bots := []Chatbot{
		{Serial: "bot-ok-1"}, {Serial: "bot-failing-500"}, {Serial: "bot-ok-2"},
		{Serial: "bot-failing-api"}, {Serial: "bot-ok-3"}, {Serial: "bot-ok-4"}, {Serial: "bot-ok-5"},
	}
	for _, b := range bots {
		srv.always(b.Serial, reply{delay: 50 * time.Millisecond, body: okBody(docLead)})
	}
	srv.always("bot-failing-500", reply{status: 500})
	srv.always("bot-failing-api", reply{body: `{"Success":false,"Code":404,"Message":"no such chatbot"}`})
	store := newMemStore()
	l := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: bots, Now: func() time.Time { return pollNow }}

	err := l.PollAll(context.Background())
	require.Error(t, err)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, 500, se.Code)
	var ae *APIError
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "no such chatbot", ae.Message)
	assert.Contains(t, err.Error(), `"bot-failing-500"`)
	assert.Contains(t, err.Error(), `"bot-failing-api"`)
	assert.NotContains(t, err.Error(), "bot-ok")

	for _, b := range bots {
		assert.Len(t, srv.hitsFor(b.Serial), 1, b.Serial)
		if strings.HasPrefix(b.Serial, "bot-ok") {
			assert.Len(t, store.ingestsFor(b.Serial), 1, b.Serial)
		}
	}
	assert.LessOrEqual(t, srv.peakConcurrency(), pollAllConcurrency)

	healthy := &Loop{Client: srv.client(time.Second), Store: store, Chatbots: bots[:1]}
	assert.NoError(t, healthy.PollAll(context.Background()))
}

func TestLoopValidates(t *testing.T) {
	c, store := NewClient("http://127.0.0.1:1", testKey, time.Second), newMemStore()
	cases := []struct {
		name string
		loop Loop
		want string
	}{
		{"no client", Loop{Store: store, Chatbots: []Chatbot{mainSite}}, "Client is nil"},
		{"no store", Loop{Client: c, Chatbots: []Chatbot{mainSite}}, "Store is nil"},
		{"no chatbots", Loop{Client: c, Store: store}, "no chatbots"},
		{"empty serial", Loop{Client: c, Store: store, Chatbots: []Chatbot{{Name: "x"}}}, "chatbot 0 has no serial"},
		{"duplicate serial", Loop{Client: c, Store: store, Chatbots: []Chatbot{mainSite, mainSite}}, "listed twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.ErrorContains(t, tc.loop.Run(context.Background()), tc.want)
			assert.ErrorContains(t, tc.loop.PollAll(context.Background()), tc.want)
		})
	}
}

func TestBackOffPolicy(t *testing.T) {
	l := &Loop{Interval: 20 * time.Millisecond, MaxBackoff: 160 * time.Millisecond, Jitter: -1}
	bo := l.newBackOff()
	assert.Zero(t, bo.MaxElapsedTime, "a failing chatbot is retried forever")
	var waits []time.Duration
	for range 6 {
		waits = append(waits, bo.NextBackOff())
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{20 * ms, 40 * ms, 80 * ms, 160 * ms, 160 * ms, 160 * ms}, waits)
	bo.Reset()
	assert.Equal(t, 20*ms, bo.NextBackOff(), "a success starts over")

	assert.Equal(t, 5*time.Second, (&Loop{}).newBackOff().InitialInterval, "a long interval starts at 5s")
	assert.Equal(t, DefaultMaxBackoff, (&Loop{}).newBackOff().MaxInterval)
	assert.Equal(t, 0.1, (&Loop{}).newBackOff().RandomizationFactor)
	assert.Equal(t, time.Second, (&Loop{MaxBackoff: time.Second}).newBackOff().InitialInterval)

	cases := []struct {
		name string
		err  error
		want time.Duration
	}{
		{"plain failure takes the backoff", errors.New("boom"), 20 * ms},
		{"longer Retry-After wins", &StatusError{Code: 429, RetryAfter: time.Hour}, time.Hour},
		{"shorter Retry-After loses", &StatusError{Code: 503, RetryAfter: ms}, 20 * ms},
		{"wrapped Retry-After is found", errors.Join(&StatusError{Code: 429, RetryAfter: time.Minute}, errors.New("x")), time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, retryWait(l.newBackOff(), tc.err))
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
	healthy, failing := Chatbot{Serial: "bot-healthy"}, Chatbot{Serial: "bot-failing"}
	srv := newLeadListServer(t)
	srv.setRecords(healthy.Serial, docLead, docAppointment)
	srv.always(failing.Serial, reply{status: 500, delay: 30 * time.Millisecond})
	store, hooks, sink := newMemStore(), &onPollCalls{}, &logSink{}
	const interval, maxBackoff = 20 * time.Millisecond, 160 * time.Millisecond
	l := &Loop{
		Client: srv.client(time.Second), Store: store, Chatbots: []Chatbot{failing, healthy},
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

	// Every successful poll of the healthy chatbot handed the same records to the store.
	ingests := store.ingestsFor(healthy.Serial)
	assert.GreaterOrEqual(t, len(ingests), len(healthyHits)-1)
	for _, leads := range ingests {
		assert.Equal(t, ingests[0], leads)
	}
	assert.Empty(t, store.ingestsFor(failing.Serial))
	for _, c := range hooks.all() {
		if c.serial == failing.Serial {
			var se *StatusError
			assert.ErrorAs(t, c.err, &se)
		} else {
			assert.NoError(t, c.err)
		}
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
	l := &Loop{Client: srv.client(time.Second), Store: newMemStore(), Chatbots: []Chatbot{mainSite},
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
	limited, other := Chatbot{Serial: "bot-limited"}, Chatbot{Serial: "bot-other"}
	srv := newLeadListServer(t)
	srv.script(limited.Serial, reply{status: 429, header: map[string]string{"Retry-After": "1"}})
	l := &Loop{Client: srv.client(time.Second), Store: newMemStore(), Chatbots: []Chatbot{limited, other},
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
	inFlight, waiting := Chatbot{Serial: "bot-in-flight"}, Chatbot{Serial: "bot-waiting"}
	srv := newLeadListServer(t)
	srv.always(inFlight.Serial, reply{delay: time.Minute})
	srv.always(waiting.Serial, reply{status: 429, header: map[string]string{"Retry-After": "3600"}})
	l := &Loop{Client: srv.client(time.Minute), Store: newMemStore(), Chatbots: []Chatbot{inFlight, waiting},
		Interval: 20 * time.Millisecond}
	stop := runLoop(t, l)
	require.Eventually(t, func() bool {
		return len(srv.hitsFor(inFlight.Serial)) == 1 && len(srv.hitsFor(waiting.Serial)) == 1
	}, 10*time.Second, 10*time.Millisecond)
	stop() // fails the test unless Run returns nil within 5s
}
