package forwarders

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/leadbridge/leadbridge/event"
)

// Outbox is the durable queue the Dispatcher drains. The dedupe store implements it.
//
// Pending returns a forwarder's entries with Seq > after, oldest first. Ack removes an
// entry once its target took it; Failed records a failed attempt (attempts, first try,
// last error) so that a restart keeps the retry budget; DeadLetter moves an entry to the
// dead letters. Changes is signalled when entries were added. Pause records that a
// forwarder's target is gone, so that it stays paused across restarts while its config
// is unchanged.
type Outbox interface {
	Pending(forwarder string, after uint64, limit int) ([]event.Delivery, error)
	Ack(forwarder string, seq uint64) error
	Failed(d event.Delivery) error
	DeadLetter(d event.Delivery, failed time.Time) error
	Pause(forwarder, reason, configHash string) error
	Changes() <-chan struct{}
}

// RetryPolicy bounds the exponential backoff between attempts of one delivery.
type RetryPolicy struct {
	InitialInterval time.Duration // first wait, default 1s
	MaxInterval     time.Duration // cap on one wait, default 5m
	MaxElapsed      time.Duration // budget from the first attempt, default 24h; then dead letter
}

// Route is one forwarder as the Dispatcher runs it.
type Route struct {
	Forwarder   Forwarder
	Retry       RetryPolicy
	Concurrency int    // deliveries in flight at once for this forwarder, default 4
	ConfigHash  string // fingerprint of the forwarder's settings, stored with a pause
	Paused      bool   // start paused (the store says its target was gone)
}

// Result is the outcome of a delivery attempt, as reported to OnResult.
type Result string

// The results a delivery attempt can have.
const (
	ResultOK     Result = "ok"     // the target took the event
	ResultRetry  Result = "retry"  // a retryable failure; another attempt follows
	ResultDead   Result = "dead"   // moved to the dead letters
	ResultPaused Result = "paused" // the target is gone; the forwarder is paused
)

// Dispatcher hands outbox entries to their forwarders, each forwarder in its own lane
// with bounded concurrency, so a slow or dead target never holds up another. A failed
// attempt is scheduled again after an exponential backoff under its route's policy
// (never sooner than a Retry-After, capped at MaxInterval), and its slot goes to other
// entries meanwhile, so a few failing records never hold up the rest of a lane. An
// entry ends when it succeeds (Ack), fails permanently or spends its budget
// (DeadLetter), or the target says it is gone (the lane pauses, keeping its entries).
//
// Delivery is at least once: an entry leaves the outbox only after its target took it,
// so a crash between the two repeats the delivery with the same event id.
type Dispatcher struct {
	Outbox Outbox
	Routes []Route
	Logger *slog.Logger
	// Grace is how long in-flight attempts may finish after the context given to Run or
	// Drain is done. Default 10s.
	Grace time.Duration
	// Rescan is how often a lane looks at the outbox without being woken. Default 5s.
	Rescan time.Duration
	// OnResult, when set, is called after each attempt (metrics). took is the attempt's
	// duration; d.Attempts counts failed attempts so far.
	OnResult func(d event.Delivery, res Result, took time.Duration, err error)
	// Now is the wall clock for the times stored on entries (first try, next try,
	// failure), default time.Now. Waits and the retry budget within this process are
	// measured on the monotonic clock, so a jump of the wall clock moves neither.
	Now func() time.Time

	mu    sync.Mutex
	lanes map[string]*lane
}

// Run delivers until ctx is done, then lets in-flight attempts finish within Grace.
func (d *Dispatcher) Run(ctx context.Context) error {
	return d.run(ctx, false)
}

// Drain delivers until the outbox holds nothing deliverable for any running forwarder,
// or ctx is done; what is left stays in the outbox. It is what `leadbridge once` uses.
func (d *Dispatcher) Drain(ctx context.Context) error {
	return d.run(ctx, true)
}

// Resume unpauses a forwarder paused because its target was gone. It reports whether
// the forwarder is known to a running dispatcher.
func (d *Dispatcher) Resume(name string) bool {
	d.mu.Lock()
	l := d.lanes[name]
	d.mu.Unlock()
	if l == nil {
		return false
	}
	l.resume()
	return true
}

// wake makes every lane look at the outbox now.
func (d *Dispatcher) wake() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.lanes {
		l.wake()
	}
}

func (d *Dispatcher) run(ctx context.Context, drain bool) error {
	logger := d.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	grace := d.Grace
	if grace <= 0 {
		grace = 10 * time.Second
	}
	rescan := d.Rescan
	if rescan <= 0 {
		rescan = 5 * time.Second
	}
	// Attempts run under hard, which outlives ctx by the grace period, so that an attempt
	// under way when shutdown starts can finish; no new attempt starts after ctx is done.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, cancelHard)
		context.AfterFunc(hard, func() { t.Stop() })
	})
	defer stop()

	lanes := make(map[string]*lane, len(d.Routes))
	for _, r := range d.Routes {
		l := newLane(d, r, logger.With("forwarder", r.Forwarder.Name()), rescan)
		lanes[r.Forwarder.Name()] = l
	}
	d.mu.Lock()
	d.lanes = lanes
	d.mu.Unlock()

	var wg sync.WaitGroup
	for _, l := range lanes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.run(ctx, hard, drain)
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			return nil
		case <-d.Outbox.Changes():
			d.wake()
		}
	}
}

// lane delivers one forwarder's entries.
type lane struct {
	d       *Dispatcher
	route   Route
	logger  *slog.Logger
	rescan  time.Duration
	wakeC   chan struct{}
	sem     chan struct{}
	errored bool // the last outbox read failed; only the lane's loop uses it

	mu      sync.Mutex
	paused  bool
	flying  map[uint64]bool
	retries map[uint64]retryState // entries this process failed or rescheduled
	cursor  uint64                // where the next fill resumes scanning, past entries waiting for a retry
}

// retryState is what a lane knows of an entry's retries beyond the store, on the
// monotonic clock.
type retryState struct {
	due    time.Time     // not before this (a monotonic reading); zero: as stored
	anchor time.Time     // a monotonic reading at which base was credited; zero: none yet
	base   time.Duration // retry budget spent at anchor
}

func newLane(d *Dispatcher, r Route, logger *slog.Logger, rescan time.Duration) *lane {
	if r.Concurrency <= 0 {
		r.Concurrency = 4
	}
	if r.Retry.InitialInterval <= 0 {
		r.Retry.InitialInterval = time.Second
	}
	if r.Retry.MaxInterval <= 0 {
		r.Retry.MaxInterval = 5 * time.Minute
	}
	if r.Retry.MaxElapsed <= 0 {
		r.Retry.MaxElapsed = 24 * time.Hour
	}
	return &lane{
		d: d, route: r, logger: logger, rescan: rescan,
		wakeC:   make(chan struct{}, 1),
		sem:     make(chan struct{}, r.Concurrency),
		paused:  r.Paused,
		flying:  make(map[uint64]bool),
		retries: make(map[uint64]retryState),
	}
}

func (l *lane) wake() {
	select {
	case l.wakeC <- struct{}{}:
	default:
	}
}

func (l *lane) resume() {
	l.mu.Lock()
	l.paused = false
	l.mu.Unlock()
	l.logger.Info("forwarder resumed")
	l.wake()
}

func (l *lane) isPaused() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.paused
}

func (l *lane) idle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.flying) == 0
}

// run is the lane's loop: start what is due up to the concurrency bound, then wait for a
// wake (new entries, a finished attempt), the next scheduled retry, or the rescan tick.
// In drain mode it returns once the outbox holds nothing for it and nothing is in flight.
func (l *lane) run(ctx, hard context.Context, drain bool) {
	ticker := time.NewTicker(l.rescan)
	defer ticker.Stop()
	retry := time.NewTimer(time.Hour)
	defer retry.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		if ctx.Err() != nil {
			return
		}
		started, pending, nextDue, more := l.fill(ctx, hard, &wg)
		if drain && !started && l.idle() && ((pending == 0 && !l.errored) || l.isPaused()) {
			return
		}
		if more {
			l.wake() // the scan stopped at scanLimit: go on with the lap at once
		}
		if !nextDue.IsZero() {
			retry.Reset(max(time.Until(nextDue), time.Millisecond))
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wakeC:
		case <-retry.C:
		case <-ticker.C:
		}
	}
}

const (
	// pageSize is how many outbox entries a read past the first returns.
	pageSize = 64
	// scanLimit bounds how far past entries waiting for a retry one fill looks for due ones.
	scanLimit = 1024
)

// fill starts attempts for due entries not already in flight, oldest first, while slots
// are free. It reports whether it started any, whether the outbox holds any entry for
// the lane, when the earliest entry it skipped as not yet due falls due, and whether it
// stopped at scanLimit with more to look at.
//
// One fill reads at most scanLimit entries. When that many are waiting for a retry, the
// next fill (at once: more is true) goes on from where this one stopped and wraps
// around; and when the slots are full, the next fill starts at the due entry that found
// no slot. So an entry behind a long queue of failing ones is reached without re-reading
// that queue for every slot that frees up.
//
// The outbox is read and checked against the in-flight set under the lane's lock, and an
// attempt leaves that set only after its outcome was recorded (also under the lock), so
// an entry acknowledged while fill runs is either absent from the read or still in
// flight: it is never started twice.
func (l *lane) fill(ctx, hard context.Context, wg *sync.WaitGroup) (started bool, pending int, nextDue time.Time, more bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused {
		l.errored = false
		return false, 0, time.Time{}, false
	}
	now, wall := time.Now(), l.d.now()
	from := l.cursor
	after, wrapped := from, from == 0
	// The first read is small: usually the oldest entries are due and fill the free slots.
	size := 2 * l.route.Concurrency
	for scanned := 0; ; size = pageSize {
		if scanned >= scanLimit {
			l.cursor = after // resume here next time
			return started, pending, nextDue, true
		}
		page, err := l.d.Outbox.Pending(l.route.Forwarder.Name(), after, size)
		if err != nil {
			l.logger.Error("reading the outbox failed", "err", err)
			l.errored = true
			return started, pending, now.Add(l.rescan), false
		}
		l.errored = false
		for _, entry := range page {
			if wrapped && from != 0 && entry.Seq > from {
				l.cursor = 0 // came round to where this fill started
				return started, pending, nextDue, false
			}
			pending++
			scanned++
			after = entry.Seq
			if l.flying[entry.Seq] {
				continue
			}
			if due := l.dueAt(entry, now, wall); due.After(now) {
				if nextDue.IsZero() || due.Before(nextDue) {
					nextDue = due
				}
				continue
			}
			select {
			case l.sem <- struct{}{}:
			default:
				l.cursor = entry.Seq - 1 // every slot is busy: start at this due entry next time
				return started, pending, nextDue, false
			}
			l.flying[entry.Seq] = true
			started = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				l.attempt(ctx, hard, entry)
				l.mu.Lock()
				delete(l.flying, entry.Seq)
				l.mu.Unlock()
				<-l.sem
				l.wake()
			}()
		}
		if len(page) < size {
			if wrapped {
				l.cursor = 0
				return started, pending, nextDue, false
			}
			after, wrapped = 0, true // reached the end: go round to the oldest entries
		}
	}
}

// dueAt is when an entry may be attempted, on the monotonic clock (now is a monotonic
// reading, wall the wall clock at the same moment): at once for a fresh or replayed one
// (no failed attempts in the store), at a retry this process scheduled, else at its
// stored next try. A stored next try more than MaxInterval away (the wall clock went
// back) is pinned to MaxInterval from now. Called with l.mu held.
func (l *lane) dueAt(d event.Delivery, now, wall time.Time) time.Time {
	st := l.retries[d.Seq]
	switch {
	case !st.due.IsZero():
		return st.due
	case d.Attempts == 0:
		return time.Time{}
	}
	wait := d.NextTry.Sub(wall)
	if wait > l.route.Retry.MaxInterval {
		st.due = now.Add(l.route.Retry.MaxInterval)
		l.retries[d.Seq] = st
		return st.due
	}
	return now.Add(wait)
}

// now is the dispatcher's wall clock, without a monotonic reading.
func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now().Round(0)
	}
	return time.Now().Round(0)
}

// attempt makes one delivery attempt and records its outcome: acknowledged, scheduled
// for a retry, dead-lettered, or the forwarder paused. Attempts run under hard, which
// outlives ctx by the grace period.
func (l *lane) attempt(ctx, hard context.Context, d event.Delivery) {
	log := l.logger.With(d.Event.LogAttrs()...)
	firstTry := d.FirstTry
	if d.FirstTry.IsZero() {
		d.FirstTry = l.d.now()
	}
	start := time.Now()
	err := l.route.Forwarder.Deliver(hard, d.Event)
	took := time.Since(start)
	if err != nil && hard.Err() != nil {
		// Cut off by the end of the shutdown grace period: not a verdict on the target.
		log.Debug("attempt cut off by shutdown; the entry stays in the outbox")
		return
	}
	if err == nil {
		l.forget(d.Seq)
		if l.persist(ctx, log, "recording the delivery", func() error { return l.d.Outbox.Ack(d.Forwarder, d.Seq) }) {
			log.Info("delivered", "attempts", d.Attempts+1)
			l.report(d, ResultOK, took, nil)
		}
		return
	}
	d.Attempts++
	d.LastError = err.Error()
	switch {
	case IsGone(err):
		l.forget(d.Seq)
		d.FirstTry = firstTry // a pause does not spend the retry budget of a fresh entry
		l.pause(d, err, log)
	case IsPermanent(err):
		l.deadLetter(ctx, d, err, took, log)
	default:
		wait, ok := l.nextWait(d, err, l.spent(d))
		if !ok {
			l.deadLetter(ctx, d, fmt.Errorf("retry budget of %s spent: %w", l.route.Retry.MaxElapsed, err), took, log)
			return
		}
		d.NextTry = l.d.now().Add(wait)
		l.mu.Lock()
		st := l.retries[d.Seq]
		st.due = time.Now().Add(wait)
		l.retries[d.Seq] = st
		l.mu.Unlock()
		l.persist(ctx, log, "recording a failed attempt", func() error { return l.d.Outbox.Failed(d) })
		log.Warn("delivery failed, will retry", "attempt", d.Attempts, "retry_in", wait.Round(time.Millisecond), "err", err)
		l.report(d, ResultRetry, took, err)
	}
}

// nextWait is how long to wait before retrying d after its d.Attempts-th failure: the
// exponential backoff's interval for that attempt (InitialInterval doubling, randomised
// by ±25%, then capped at MaxInterval), derived from the stored attempt count so that a
// restart keeps the pace; stretched to a Retry-After the target asked for, again never
// past MaxInterval. It reports false when the retry budget, of which spent is used,
// cannot cover the wait.
func (l *lane) nextWait(d event.Delivery, err error, spent time.Duration) (time.Duration, bool) {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(l.route.Retry.InitialInterval),
		backoff.WithMaxInterval(l.route.Retry.MaxInterval),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0.25),
		backoff.WithMaxElapsedTime(0), // the budget counts from d.FirstTry, across restarts
	)
	var wait time.Duration
	for range min(d.Attempts, 64) { // past 64 doublings every interval is MaxInterval
		wait = b.NextBackOff()
	}
	wait = min(wait, l.route.Retry.MaxInterval)
	if ra := min(RetryAfterOf(err), l.route.Retry.MaxInterval); ra > wait {
		wait = ra
	}
	if spent+wait > l.route.Retry.MaxElapsed {
		return 0, false
	}
	return wait, true
}

// spent is how much of its retry budget d (after its d.Attempts-th failure) has used.
// The first time this process sees it fail, that is the wall-clock time since its first
// try, but no less than zero and no more than d.Attempts × MaxInterval (the waits
// between its attempts, with room for the attempts themselves), so that a wall clock
// that jumped, or a long downtime, cannot spend the budget in one step; from then on,
// the monotonic time that passed is added.
func (l *lane) spent(d event.Delivery) time.Duration {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.retries[d.Seq]
	if st.anchor.IsZero() {
		r := l.route.Retry
		limit := time.Duration(min(int64(d.Attempts), int64(r.MaxElapsed/r.MaxInterval)+1)) * r.MaxInterval
		st.anchor, st.base = now, min(max(l.d.now().Sub(d.FirstTry), 0), limit)
		l.retries[d.Seq] = st
	}
	return st.base + now.Sub(st.anchor)
}

// forget drops the retry state of an entry that left the outbox.
func (l *lane) forget(seq uint64) {
	l.mu.Lock()
	delete(l.retries, seq)
	l.mu.Unlock()
}

func (l *lane) deadLetter(ctx context.Context, d event.Delivery, err error, took time.Duration, log *slog.Logger) {
	l.forget(d.Seq)
	d.LastError = err.Error()
	if l.persist(ctx, log, "moving a delivery to the dead letters", func() error { return l.d.Outbox.DeadLetter(d, l.d.now()) }) {
		log.Error("delivery dead-lettered", "attempts", d.Attempts, "err", err)
		l.report(d, ResultDead, took, err)
	}
}

// persist retries a store write until it succeeds or ctx ends, backing off, so that a
// failing store (disk full) never turns into attempts repeated as fast as the target
// answers. The entry stays in flight meanwhile. It reports whether the write succeeded;
// if it did not, the entry is still in the outbox and is attempted again after a restart,
// with the same event id.
func (l *lane) persist(ctx context.Context, log *slog.Logger, what string, write func() error) bool {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	err := backoff.RetryNotify(write, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		log.Error(what+" failed; retrying the store write, not the delivery", "retry_in", wait.Round(time.Millisecond), "err", err)
	})
	if err != nil {
		log.Error(what+" failed; the entry stays in the outbox", "err", err)
		return false
	}
	return true
}

func (l *lane) pause(d event.Delivery, err error, log *slog.Logger) {
	l.mu.Lock()
	already := l.paused
	l.paused = true
	l.mu.Unlock()
	if serr := l.d.Outbox.Failed(d); serr != nil {
		log.Error("recording a failed attempt failed", "err", serr)
	}
	if already {
		return
	}
	if perr := l.d.Outbox.Pause(d.Forwarder, err.Error(), l.route.ConfigHash); perr != nil {
		log.Error("recording the pause failed", "err", perr)
	}
	log.Error("target is gone: forwarder paused, deliveries kept; run `leadbridge forwarder resume` once it is fixed", "err", err)
	l.report(d, ResultPaused, 0, err)
}

func (l *lane) report(d event.Delivery, res Result, took time.Duration, err error) {
	if l.d.OnResult != nil {
		l.d.OnResult(d, res, took, err)
	}
}
