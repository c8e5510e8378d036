package forwarders

import (
	"context"
	"errors"
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
// with bounded concurrency, so a slow or dead target never holds up another. Each
// delivery is retried with exponential backoff under its route's policy, honouring
// Retry-After, until it succeeds (Ack), fails permanently or spends its budget
// (DeadLetter), or the target says it is gone (the lane pauses).
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

// Wake makes every lane look at the outbox now (after a replay, say).
func (d *Dispatcher) Wake() {
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
			d.Wake()
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
	mu      sync.Mutex
	paused  bool
	flying  map[uint64]bool
	sem     chan struct{}
	errored bool
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
		wakeC:  make(chan struct{}, 1),
		paused: r.Paused,
		flying: make(map[uint64]bool),
		sem:    make(chan struct{}, r.Concurrency),
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

// run is the lane's loop: start what is pending up to the concurrency bound, then wait
// for a wake (new entries, a finished delivery) or the rescan tick. In drain mode it returns once
// nothing is pending and nothing is in flight.
func (l *lane) run(ctx, hard context.Context, drain bool) {
	ticker := time.NewTicker(l.rescan)
	defer ticker.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		if ctx.Err() != nil {
			return
		}
		started, pending := l.fill(ctx, hard, &wg)
		if drain && !started && l.idle() && (pending == 0 || l.isPaused() || l.errored) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-l.wakeC:
		case <-ticker.C:
		}
	}
}

func (l *lane) idle() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.flying) == 0
}

// fill starts deliveries for pending entries not already in flight, while slots are
// free. It reports whether it started any, and how many entries it saw pending.
//
// The outbox is read and checked against the in-flight set under the lane's lock, and a
// delivery leaves that set only after its Ack committed (also under the lock), so an
// entry acknowledged while fill runs is either absent from the read or still in flight:
// it is never started twice.
func (l *lane) fill(ctx, hard context.Context, wg *sync.WaitGroup) (started bool, pending int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.paused {
		return false, 0
	}
	// Twice the concurrency is enough to find a free entry beside those in flight.
	batch, err := l.d.Outbox.Pending(l.route.Forwarder.Name(), 0, 2*l.route.Concurrency)
	if err != nil {
		l.logger.Error("reading the outbox failed", "err", err)
		l.errored = true
		return false, 0
	}
	l.errored = false
	for _, entry := range batch {
		if l.flying[entry.Seq] {
			continue
		}
		select {
		case l.sem <- struct{}{}:
		default:
			return started, len(batch)
		}
		l.flying[entry.Seq] = true
		started = true
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.deliver(ctx, hard, entry)
			l.mu.Lock()
			delete(l.flying, entry.Seq)
			l.mu.Unlock()
			<-l.sem
			l.wake()
		}()
	}
	return started, len(batch)
}

// retryAfterBackOff stretches the next wait to what the target asked for.
type retryAfterBackOff struct {
	backoff.BackOff
	atLeast time.Duration
}

func (b *retryAfterBackOff) NextBackOff() time.Duration {
	next := b.BackOff.NextBackOff()
	if next != backoff.Stop && next < b.atLeast {
		next = b.atLeast
	}
	b.atLeast = 0
	return next
}

// deliver retries one entry until it is delivered, dead-lettered or paused, or until
// ctx ends (it then stays in the outbox). Attempts run under hard.
func (l *lane) deliver(ctx, hard context.Context, d event.Delivery) {
	f := l.route.Forwarder
	log := l.logger.With("chatbot", d.Event.Chatbot(), "kind", d.Event.Kind(),
		"event_id", d.Event.ID, "session_id", d.Event.Data.SessionID)
	if d.FirstTry.IsZero() {
		d.FirstTry = time.Now()
	}
	budget := l.route.Retry.MaxElapsed - time.Since(d.FirstTry)
	if budget <= 0 {
		budget = time.Nanosecond // spent before a restart: one last attempt
	}
	b := &retryAfterBackOff{BackOff: backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(l.route.Retry.InitialInterval),
		backoff.WithMaxInterval(l.route.Retry.MaxInterval),
		backoff.WithMaxElapsedTime(budget),
	)}
	attempt := func() error {
		if ctx.Err() != nil || l.isPaused() {
			return backoff.Permanent(errStopped)
		}
		start := time.Now()
		err := f.Deliver(hard, d.Event)
		took := time.Since(start)
		if err == nil {
			return nil
		}
		d.Attempts++
		d.LastError = err.Error()
		if IsPermanent(err) {
			return backoff.Permanent(err)
		}
		if serr := l.d.Outbox.Failed(d); serr != nil {
			log.Error("recording a failed attempt failed", "err", serr)
		}
		l.report(d, ResultRetry, took, err)
		b.atLeast = RetryAfterOf(err)
		return err
	}
	notify := func(err error, wait time.Duration) {
		log.Warn("delivery failed, will retry", "attempt", d.Attempts, "retry_in", wait.Round(time.Millisecond), "err", err)
	}
	err := backoff.RetryNotify(attempt, backoff.WithContext(b, ctx), notify)
	switch {
	case err == nil:
		if aerr := l.d.Outbox.Ack(d.Forwarder, d.Seq); aerr != nil {
			// Not acknowledged: the entry stays and will be delivered again, same id.
			log.Error("recording a delivery failed; it will be repeated", "err", aerr)
			return
		}
		log.Info("delivered", "attempts", d.Attempts+1)
		l.report(d, ResultOK, 0, nil)
	case errors.Is(err, errStopped) || (ctx.Err() != nil && !IsPermanent(err)):
		log.Debug("delivery left in the outbox", "attempts", d.Attempts)
	case IsGone(err):
		l.pause(d, err, log)
	default:
		if derr := l.d.Outbox.DeadLetter(d, time.Now()); derr != nil {
			log.Error("moving a delivery to the dead letters failed", "err", derr)
			return
		}
		log.Error("delivery dead-lettered", "attempts", d.Attempts, "err", err)
		l.report(d, ResultDead, 0, err)
	}
}

var errStopped = errors.New("dispatcher stopping")

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
