package forwarders_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// sink is the shared webhook target, with a forwarder to it.
type sink struct{ *leadtest.Sink }

func newSink(t testing.TB, answer func(n int, id string) int) *sink {
	return &sink{leadtest.NewSink(t, answer)}
}

func (s *sink) ids() []string { return s.IDs() }

func (s *sink) count() int { return s.Count() }

func (s *sink) forwarder(t testing.TB, name string, timeout time.Duration) forwarders.Forwarder {
	f, err := webhook.New(webhook.Config{Name: name, URL: s.URL + "/hook", Timeout: timeout}, nil)
	require.NoError(t, err)
	return f
}

func openStore(t testing.TB, path string, routes ...string) *dedupe.Store {
	t.Helper()
	return leadtest.OpenStore(t, dedupe.Options{
		Path: path, Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit, Route: leadtest.RouteTo(routes...),
	})
}

func leads(n int) []event.Lead {
	return leadtest.Leads("bot1", 1000, n, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC))
}

// failedBefore takes one lead into st for "crm" and records that it failed attempts
// times already, first tried at firstTry and due again at nextTry, as a previous process
// would have left it.
func failedBefore(t *testing.T, st *dedupe.Store, attempts int, firstTry, nextTry time.Time) {
	t.Helper()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	entry := leadtest.Pending(t, st, "crm")[0]
	entry.Attempts, entry.FirstTry, entry.NextTry = attempts, firstTry, nextTry
	require.NoError(t, st.Record(t.Context(), []event.Outcome{{Delivery: entry, Verdict: event.Retrying}}))
}

func fastRetry() forwarders.RetryPolicy {
	return forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsed: time.Minute}
}

func drain(t *testing.T, d *forwarders.Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, d.Drain(ctx))
	require.NoError(t, ctx.Err(), "drain did not finish")
}

func TestDispatcherRetriesThenDelivers(t *testing.T) {
	target := newSink(t, func(n int, _ string) int {
		if n < 2 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)

	var mu sync.Mutex
	results := map[forwarders.Result]int{}
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry()}},
		OnResult: func(_ event.Delivery, r forwarders.Result, _ time.Duration, _ error) {
			mu.Lock()
			results[r]++
			mu.Unlock()
		}}
	drain(t, d)

	ids := target.ids()
	require.Len(t, ids, 3)
	assert.Equal(t, ids[0], ids[2], "every attempt carries the same event id")
	assert.Equal(t, map[forwarders.Result]int{forwarders.ResultRetry: 2, forwarders.ResultOK: 1}, results)
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"])
}

func TestDispatcherPermanentFailureDeadLettersWithoutHoldingOthers(t *testing.T) {
	bad := newSink(t, func(int, string) int { return http.StatusBadRequest })
	good := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "bad", "good")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(5))
	require.NoError(t, err)

	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: bad.forwarder(t, "bad", time.Second), Retry: fastRetry()},
		{Forwarder: good.forwarder(t, "good", time.Second), Retry: fastRetry()},
	}}
	drain(t, d)

	assert.Equal(t, 5, good.count())
	assert.Equal(t, 5, bad.count(), "a permanent failure is not retried")
	dead, err := st.DeadLetters(t.Context(), "bad")
	require.NoError(t, err)
	require.Len(t, dead, 5)
	assert.Equal(t, 1, dead[0].Attempts)
	assert.Contains(t, dead[0].LastError, "HTTP 400")
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["bad"]+depth["good"])
}

func TestDispatcherSlowTargetDoesNotHoldUpAnother(t *testing.T) {
	slow := newSink(t, nil)
	slow.Hold() // never answers
	fast := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "slow", "fast")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(20))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	d := &forwarders.Dispatcher{Outbox: st, Grace: 50 * time.Millisecond, Routes: []forwarders.Route{
		{Forwarder: slow.forwarder(t, "slow", 300*time.Millisecond), Retry: fastRetry(), Concurrency: 2},
		{Forwarder: fast.forwarder(t, "fast", time.Second), Retry: fastRetry(), Concurrency: 2},
	}}
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool { return fast.count() == 20 }, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool { return slow.count() >= 4 }, 10*time.Second, 10*time.Millisecond,
		"the hanging target times out and is retried")
	cancel()
	require.NoError(t, <-done)
	slow.Release()

	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["fast"])
	assert.Equal(t, 20, depth["slow"], "nothing the slow target did not take leaves the outbox")
	pending, err := st.Pending(t.Context(), "slow", 0, 1)
	require.NoError(t, err)
	assert.Positive(t, pending[0].Attempts, "failed attempts are recorded")
}

func TestDispatcherCrashBeforeAckRedeliversSameID(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	target := newSink(t, nil)
	target.Hold() // takes the event, then the process "dies" before answering
	st := openStore(t, path, "crm")
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(context.Background())
	d := &forwarders.Dispatcher{Outbox: st, Grace: time.Millisecond, Routes: []forwarders.Route{
		{Forwarder: target.forwarder(t, "crm", 10*time.Second), Retry: fastRetry()},
	}}
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool { return target.count() == 1 }, 5*time.Second, 5*time.Millisecond)
	cancel() // stop with the delivery in flight: its success is never recorded
	require.NoError(t, <-done)
	require.NoError(t, st.Close())

	target.Release()
	st = openStore(t, path, "crm")
	defer st.Close()
	d = &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: target.forwarder(t, "crm", 10*time.Second), Retry: fastRetry()},
	}}
	drain(t, d)
	ids := target.ids()
	require.Len(t, ids, 2, "delivered again after the restart")
	assert.Equal(t, ids[0], ids[1], "with the same event id")
	assert.Equal(t, leads(1)[0].ID(), ids[0])
}

func TestDispatcherBudgetSpentDeadLetters(t *testing.T) {
	target := newSink(t, func(int, string) int { return http.StatusBadGateway })
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{
		Forwarder: target.forwarder(t, "crm", time.Second),
		Retry:     forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 20 * time.Millisecond, MaxElapsed: 150 * time.Millisecond},
	}}}
	drain(t, d)
	dead, err := st.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, target.count(), dead[0].Attempts, "the attempt count is kept")
	assert.Greater(t, dead[0].Attempts, 2)
	assert.Contains(t, dead[0].LastError, "HTTP 502")
}

func TestDispatcherHonoursRetryAfter(t *testing.T) {
	target := newSink(t, func(n int, _ string) int {
		if n == 0 {
			return http.StatusTooManyRequests // Retry-After: 1
		}
		return http.StatusOK
	})
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	policy := fastRetry()
	policy.MaxInterval = 2 * time.Second
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", time.Second), Retry: policy}}}
	drain(t, d)
	at := target.Times()
	require.Len(t, at, 2)
	assert.GreaterOrEqual(t, at[1].Sub(at[0]), time.Second, "the second attempt waited for Retry-After")
}

func TestDispatcherGonePausesUntilResumed(t *testing.T) {
	var mu sync.Mutex
	gone := true
	target := newSink(t, func(int, string) int {
		mu.Lock()
		defer mu.Unlock()
		if gone {
			return http.StatusGone
		}
		return http.StatusOK
	})
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	all := leads(5)
	_, err := st.Ingest(t.Context(), "bot1", all[:3])
	require.NoError(t, err)
	outbox := &countingOutbox{Store: st, release: make(chan struct{})}
	close(outbox.release)
	d := &forwarders.Dispatcher{Outbox: outbox, Routes: []forwarders.Route{
		{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry(), Concurrency: 1, ConfigHash: "h1"},
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool {
		p, err := st.Paused(t.Context())
		return err == nil && p["crm"].ConfigHash == "h1"
	}, 5*time.Second, 10*time.Millisecond)
	// New entries wake the paused lane. Once it has read the second, it has been through a
	// whole turn of its loop after the first, with every chance to attempt something.
	for _, l := range all[3:] {
		reads := outbox.reads()
		_, err = st.Ingest(t.Context(), "bot1", []event.Lead{l})
		require.NoError(t, err)
		require.Eventually(t, func() bool { return outbox.reads() > reads }, 5*time.Second, time.Millisecond)
	}
	assert.Equal(t, 1, target.count(), "a paused lane makes no attempt")
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 5, depth["crm"], "deliveries are kept while paused")

	mu.Lock()
	gone = false
	mu.Unlock()
	require.True(t, d.Resume("crm"))
	require.Eventually(t, func() bool { return target.count() == 6 }, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	depth, err = st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"])
}

func TestDispatcherPicksUpNewEntriesWhileRunning(t *testing.T) {
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	d := &forwarders.Dispatcher{Outbox: st, Rescan: time.Hour, Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry()}}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	_, err := st.Ingest(t.Context(), "bot1", leads(7))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return target.count() == 7 }, 5*time.Second, 5*time.Millisecond,
		"the store's change signal wakes the dispatcher")
	cancel()
	require.NoError(t, <-done)
}

// TestDispatcherDeliversEachEntryOnceUnderConcurrency guards against a lane starting an
// entry again that was acknowledged while it read the outbox.
func TestDispatcherDeliversEachEntryOnceUnderConcurrency(t *testing.T) {
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	const n = 1500
	_, err := st.Ingest(t.Context(), "bot1", leads(n))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: target.forwarder(t, "crm", 5*time.Second), Retry: fastRetry(), Concurrency: 8},
	}}
	drain(t, d)
	ids := target.ids()
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
	}
	assert.Equal(t, n, len(seen), "every entry delivered")
	assert.Equal(t, n, len(ids), "and none twice")
}

func TestDispatcherCapsRetryAfterAtMaxInterval(t *testing.T) {
	target := newSink(t, func(n int, _ string) int {
		if n == 0 {
			return http.StatusTooManyRequests // Retry-After: 1, more than MaxInterval
		}
		return http.StatusOK
	})
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry()}}}
	drain(t, d)
	at := target.Times()
	require.Len(t, at, 2)
	assert.Less(t, at[1].Sub(at[0]), 900*time.Millisecond, "a Retry-After beyond max_interval waits max_interval")
}

// TestDispatcherFailingEntriesDoNotStallTheLane: with one slot, an entry the target keeps
// refusing is retried later while the entries behind it go through.
func TestDispatcherFailingEntriesDoNotStallTheLane(t *testing.T) {
	poison := leads(1)[0].ID()
	target := newSink(t, func(_ int, id string) int {
		if id == poison {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(6))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{
		Forwarder:   target.forwarder(t, "crm", time.Second),
		Concurrency: 1,
		Retry:       forwarders.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaxInterval: time.Second, MaxElapsed: time.Minute},
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool {
		ok := 0
		for _, id := range target.ids() {
			if id != poison {
				ok++
			}
		}
		return ok == 5
	}, 150*time.Millisecond*5, 5*time.Millisecond, "the healthy entries do not wait for the failing one's retries")
	cancel()
	require.NoError(t, <-done)
	pending, err := st.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, pending, 1)
	assert.Equal(t, poison, pending[0].Event.ID)
	assert.Positive(t, pending[0].Attempts)
	assert.False(t, pending[0].NextTry.IsZero(), "the retry is scheduled in the store")
}

// flakyAcks is the real store whose Ack fails a number of times, as on a full disk.
type flakyAcks struct {
	*dedupe.Store
	mu    sync.Mutex
	fails int
}

func (f *flakyAcks) Record(ctx context.Context, outcomes []event.Outcome) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fails > 0 {
		f.fails--
		return errors.New("write: no space left on device")
	}
	return f.Store.Record(ctx, outcomes)
}

func TestDispatcherRetriesAFailedAckNotTheDelivery(t *testing.T) {
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	outbox := &flakyAcks{Store: st, fails: 3}
	d := &forwarders.Dispatcher{Outbox: outbox, Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry()}}}
	drain(t, d)
	assert.Len(t, target.ids(), 1, "the target got the event once while the store could not record it")
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"], "the ack went through once the store recovered")
}

// TestDispatcherReachesEntriesBehindALongRetryQueue: more entries than one scan reads are
// waiting for their retries; the entries behind them still go out at once, without a
// rescan tick to help.
func TestDispatcherReachesEntriesBehindALongRetryQueue(t *testing.T) {
	const waiting, fresh = 1100, 40
	all := leads(waiting + fresh)
	isFresh := map[string]bool{}
	for _, l := range all[waiting:] {
		isFresh[l.ID()] = true
	}
	target := newSink(t, func(_ int, id string) int {
		if isFresh[id] {
			return http.StatusOK
		}
		return http.StatusServiceUnavailable
	})
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", all[:waiting])
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Rescan: time.Hour, Routes: []forwarders.Route{{
		Forwarder:   target.forwarder(t, "crm", time.Second),
		Concurrency: 4,
		Retry:       forwarders.RetryPolicy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsed: 48 * time.Hour},
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool { return target.count() >= waiting }, 60*time.Second, 20*time.Millisecond,
		"every waiting entry was tried once")
	_, err = st.Ingest(t.Context(), "bot1", all[waiting:]) // new leads arrive behind the queue
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		n := 0
		for _, id := range target.ids() {
			if isFresh[id] {
				n++
			}
		}
		return n == fresh
	}, 10*time.Second, 20*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, waiting+fresh, target.count(), "none was tried twice before its retry")
}

// failingStore is the real store that cannot record failed attempts, as on a full disk.
type failingStore struct{ *dedupe.Store }

func (f failingStore) Record(ctx context.Context, outcomes []event.Outcome) error {
	for _, o := range outcomes {
		if o.Verdict == event.Retrying {
			return errors.New("write: no space left on device")
		}
	}
	return f.Store.Record(ctx, outcomes)
}

func TestDispatcherDoesNotHammerATargetWhileTheStoreCannotRecordFailures(t *testing.T) {
	target := newSink(t, func(int, string) int { return http.StatusServiceUnavailable })
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: failingStore{st}, Rescan: 10 * time.Millisecond, Routes: []forwarders.Route{{
		Forwarder: target.forwarder(t, "crm", time.Second),
		Retry:     forwarders.RetryPolicy{InitialInterval: 200 * time.Millisecond, MaxInterval: time.Second, MaxElapsed: time.Hour},
	}}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	require.NoError(t, d.Run(ctx))
	assert.LessOrEqual(t, target.count(), 3, "attempts keep their backoff even when it cannot be stored")
}

func TestDispatcherKeepsTheBackoffPaceAcrossRestarts(t *testing.T) {
	target := newSink(t, func(int, string) int { return http.StatusServiceUnavailable })
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	failedBefore(t, st, 30, time.Now(), time.Now()) // thirty failures before a restart

	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{
		Forwarder: target.forwarder(t, "crm", time.Second),
		Retry:     forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 2 * time.Second, MaxElapsed: time.Hour},
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool { return target.count() == 1 }, 5*time.Second, 5*time.Millisecond)
	var after event.Delivery
	require.Eventually(t, func() bool {
		p, err := st.Pending(t.Context(), "crm", 0, 1)
		require.NoError(t, err)
		after = p[0]
		return after.Attempts == 31
	}, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, 1, target.count())
	wait := after.NextTry.Sub(time.Now())
	assert.Greater(t, wait, time.Second, "the 31st retry waits about max_interval, not initial_interval")
	assert.LessOrEqual(t, wait, 2*time.Second, "never past max_interval")
}

// countingOutbox is the real store, counting the reads and writes the dispatcher makes
// and holding the first Record until release is closed.
type countingOutbox struct {
	*dedupe.Store
	mu       sync.Mutex
	pending  int   // Pending calls
	records  []int // outcomes per Record call
	release  chan struct{}
	holdOnce sync.Once
}

func (c *countingOutbox) Pending(ctx context.Context, forwarder string, after uint64, limit int) ([]event.Delivery, error) {
	c.mu.Lock()
	c.pending++
	c.mu.Unlock()
	return c.Store.Pending(ctx, forwarder, after, limit)
}

func (c *countingOutbox) reads() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending
}

func (c *countingOutbox) Record(ctx context.Context, outcomes []event.Outcome) error {
	c.holdOnce.Do(func() { <-c.release })
	c.mu.Lock()
	c.records = append(c.records, len(outcomes))
	c.mu.Unlock()
	return c.Store.Record(ctx, outcomes)
}

// TestDispatcherSlotsDoNotWaitForTheStoreAndVerdictsShareWrites: while the store is busy
// with one write, the slots go on delivering; the verdicts gathered meanwhile are recorded
// together; and the outbox is read once per batch of new entries, not once per delivery.
func TestDispatcherSlotsDoNotWaitForTheStoreAndVerdictsShareWrites(t *testing.T) {
	const n = 60
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(n))
	require.NoError(t, err)
	outbox := &countingOutbox{Store: st, release: make(chan struct{})}
	go func() {
		require.Eventually(t, func() bool { return target.count() >= 30 }, 10*time.Second, time.Millisecond,
			"deliveries went on while the first verdict was being recorded")
		close(outbox.release)
	}()
	d := &forwarders.Dispatcher{Outbox: outbox, Routes: []forwarders.Route{{
		Forwarder: target.forwarder(t, "crm", time.Second), Concurrency: 4, Retry: fastRetry(),
	}}}
	drain(t, d)

	assert.Len(t, target.ids(), n, "each entry delivered once")
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"], "every delivery recorded")
	outbox.mu.Lock()
	defer outbox.mu.Unlock()
	total, largest := 0, 0
	for _, k := range outbox.records {
		total += k
		largest = max(largest, k)
	}
	assert.Equal(t, n, total)
	assert.GreaterOrEqual(t, largest, 20, "the verdicts that gathered during the held write share one write")
	assert.LessOrEqual(t, outbox.pending, 2, "the outbox is read once at start, not per delivery")
}

// A burst of deliveries is summed up in one info line per forwarder, not one per record;
// each delivery is still there at debug.
func TestDispatcherSumsUpDeliveriesInOneInfoLine(t *testing.T) {
	const n = 25
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(n))
	require.NoError(t, err)
	var buf safeBuffer
	d := &forwarders.Dispatcher{Outbox: st, SummaryEvery: time.Hour,
		Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry()}}}
	drain(t, d)

	var debug, info int
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var rec struct {
			Level, Msg, Forwarder string
			Delivered             int
		}
		require.NoError(t, json.Unmarshal([]byte(line), &rec))
		switch {
		case rec.Msg == "delivered":
			assert.Equal(t, "DEBUG", rec.Level)
			debug++
		case rec.Msg == "deliveries":
			assert.Equal(t, "INFO", rec.Level)
			assert.Equal(t, "crm", rec.Forwarder)
			assert.Equal(t, n, rec.Delivered)
			info++
		}
	}
	assert.Equal(t, n, debug, "each delivery at debug")
	assert.Equal(t, 1, info, "one summary line when the dispatcher stops")
}

// safeBuffer is a bytes.Buffer for a logger written from several goroutines.
type safeBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// A resume that arrives before the dispatcher has set up its lanes (the admin API starts
// first) is not lost: the route starts unpaused.
func TestDispatcherResumeBeforeRunIsKept(t *testing.T) {
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(2))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: target.forwarder(t, "crm", time.Second), Retry: fastRetry(), Paused: true},
	}}
	assert.True(t, d.Resume("crm"), "a configured forwarder")
	assert.False(t, d.Resume("nobody"))
	drain(t, d)
	assert.Equal(t, 2, target.count(), "delivered: the early resume was kept")
}

func TestDispatcherRecordsHowLongEachAttemptTook(t *testing.T) {
	const slow = 20 * time.Millisecond // the targets answer no sooner
	flaky := newSink(t, func(n int, _ string) int {
		time.Sleep(slow)
		if n < 1 {
			return http.StatusServiceUnavailable
		}
		return http.StatusOK
	})
	bad := newSink(t, func(int, string) int { time.Sleep(slow); return http.StatusBadRequest })
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm", "bad")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)

	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: flaky.forwarder(t, "crm", time.Second), Retry: fastRetry()},
		{Forwarder: bad.forwarder(t, "bad", time.Second), Retry: fastRetry()},
	}}
	drain(t, d)

	got, err := st.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	verdicts := map[string][]event.Verdict{}
	for _, a := range got {
		verdicts[a.Forwarder] = append(verdicts[a.Forwarder], a.Verdict)
		assert.GreaterOrEqual(t, a.Took, slow, "%s attempt %d", a.Forwarder, a.Attempt)
		assert.GreaterOrEqual(t, a.InOutbox, a.Took, "%s attempt %d", a.Forwarder, a.Attempt)
	}
	assert.Equal(t, map[string][]event.Verdict{"crm": {event.Acked, event.Retrying}, "bad": {event.Dead}}, verdicts)
}
