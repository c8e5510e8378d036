package forwarders

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/leadbridge/leadbridge/event"
)

// Outbox is the durable queue the Dispatcher drains. The dedupe store implements it.
//
// Pending returns a forwarder's entries with Seq > after, oldest first; a lane reads each
// entry's schedule with it once, when the entry first shows up. The slice is the
// caller's: a lane keeps pointers into it until the entries are attempted. Entry reads one entry
// when it is attempted (found is false once it left the outbox by other means: dropped,
// moved). Record applies the verdicts of several attempts in one write: an acknowledged
// entry leaves the outbox, a failed one keeps its attempts and next try so that a restart
// keeps the retry budget, a dead one moves to the dead letters. Changes is signalled
// when entries were added. Pause records that a forwarder's target is gone, so that it
// stays paused across restarts while its config is unchanged.
type Outbox interface {
	Pending(ctx context.Context, forwarder string, after uint64, limit int) ([]event.Delivery, error)
	Entry(ctx context.Context, forwarder string, seq uint64) (d event.Delivery, found bool, err error)
	Record(ctx context.Context, outcomes []event.Outcome) error
	Pause(ctx context.Context, forwarder, reason, configHash string) error
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

const (
	// loadPage is how many outbox entries a lane reads at a time while it learns of them.
	loadPage = 1024
	// maxBatch bounds how many outcomes one store write records.
	maxBatch = 1024
)

// Dispatcher hands outbox entries to their forwarders, each forwarder in its own lane
// with bounded concurrency, so a slow or dead target never holds up another. A failed
// attempt is scheduled again after an exponential backoff under its route's policy
// (never sooner than a Retry-After, capped at MaxInterval), and its slot goes to other
// entries meanwhile, so a few failing records never hold up the rest of a lane. An
// entry ends when it succeeds, fails permanently or spends its budget (dead letter), or
// the target says it is gone (the lane pauses, keeping its entries).
//
// Each lane keeps its entries' schedule in memory, a heap by due time: it reads the
// outbox once at start and then only the entries added since (Changes), so finding the
// next due entry never re-reads the store. The store is the durable log: one writer
// records the verdicts of all lanes, many per transaction, while the slot that produced
// a verdict goes straight on to the next delivery.
//
// Delivery is at least once: an entry leaves the outbox only after its target took it
// and that was recorded, so a crash between the two repeats the delivery with the same
// event id.
type Dispatcher struct {
	Outbox Outbox
	// Routes are the forwarders to deliver to. Set them before Run or Drain; after that,
	// change them only with AddRoute, RemoveRoute and ReplaceRoute (reroute.go).
	Routes []Route
	Logger *slog.Logger
	// Grace is how long in-flight attempts may finish after the context given to Run or
	// Drain is done. Default 10s.
	Grace time.Duration
	// Rescan is how soon a lane reads the outbox again after a read failed. Default 5s.
	Rescan time.Duration
	// OnResult, when set, is called after each attempt's verdict was recorded (metrics).
	// took is the attempt's duration; d.Attempts counts failed attempts so far.
	OnResult func(d event.Delivery, res Result, took time.Duration, err error)
	// SummaryEvery is how often the dispatcher logs, per forwarder, how many deliveries
	// were made, retried and dead-lettered since the last such line (and once more when it
	// stops); each single delivery is logged at debug. Default 10s.
	SummaryEvery time.Duration
	// Now is the wall clock for the times stored on entries (first try, next try,
	// failure), default time.Now. Waits and the retry budget within this process are
	// measured on the monotonic clock, so a jump of the wall clock moves neither.
	Now func() time.Time

	mu      sync.Mutex
	lanes   map[string]*lane
	resumed map[string]bool  // resumed before the lanes were set up
	rt      *runState        // the run under way (or last run); nil before the first
	leaving map[string]*lane // lanes removed while running, until they stop (see reroute.go)
}

// Run delivers until ctx is done, then lets in-flight attempts finish within Grace.
func (d *Dispatcher) Run(ctx context.Context) error {
	return d.run(ctx, nil)
}

// Drain delivers until the outbox holds nothing deliverable for any running forwarder,
// or ctx is done; what is left stays in the outbox. It is what `leadbridge once` uses.
func (d *Dispatcher) Drain(ctx context.Context) error {
	return d.DrainAfter(ctx, closedChan)
}

// DrainAfter is Drain that may start while entries are still being added: it does not
// end before more is closed (polling is over), however empty the outbox runs meanwhile.
// Once more is closed, each lane reads the outbox again before it may end, so an entry
// added before the close is always delivered or left pending, never overlooked.
func (d *Dispatcher) DrainAfter(ctx context.Context, more <-chan struct{}) error {
	return d.run(ctx, more)
}

// closedChan is a closed channel: Drain's "no more entries coming".
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Resume unpauses a forwarder paused because its target was gone. It reports whether
// the forwarder is one of the dispatcher's routes. A resume that comes before Run or
// Drain has set up the lanes (the admin API may start first) is kept: the route starts
// unpaused.
func (d *Dispatcher) Resume(name string) bool {
	d.mu.Lock()
	l := d.lanes[name]
	if l == nil {
		known := slices.ContainsFunc(d.Routes, func(r Route) bool { return r.Forwarder.Name() == name })
		if known {
			if d.resumed == nil {
				d.resumed = map[string]bool{}
			}
			d.resumed[name] = true
		}
		d.mu.Unlock()
		return known
	}
	d.mu.Unlock()
	l.resume()
	return true
}

func (d *Dispatcher) summaryEvery() time.Duration {
	if d.SummaryEvery > 0 {
		return d.SummaryEvery
	}
	return 10 * time.Second
}

// now is the dispatcher's wall clock, without a monotonic reading.
func (d *Dispatcher) now() time.Time {
	if d.Now != nil {
		return d.Now().Round(0)
	}
	return time.Now().Round(0)
}

// added tells every lane that the outbox has new entries.
func (d *Dispatcher) added() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.lanes {
		l.signal(&l.addedC)
	}
}

// run delivers until ctx is done or, when more is not nil (draining), until more is
// closed and every lane is drained.
func (d *Dispatcher) run(ctx context.Context, more <-chan struct{}) error {
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
	// Attempts and store writes run under hard, which outlives ctx by the grace period,
	// so that an attempt under way when shutdown starts can finish and be recorded; no
	// new attempt starts after ctx is done.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stop := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(grace, cancelHard)
		context.AfterFunc(hard, func() { t.Stop() })
	})
	defer stop()

	w := &recorder{d: d, in: make(chan verdict, maxBatch), logger: logger}
	rt := &runState{ctx: ctx, hard: hard, more: more, rec: w, logger: logger, rescan: rescan,
		exited: make(chan struct{}, 1)}
	d.mu.Lock()
	d.rt = rt
	lanes := make(map[string]*lane, len(d.Routes))
	for _, r := range d.Routes {
		if d.resumed[r.Forwarder.Name()] {
			r.Paused = false
		}
		l := newLane(d, r, w, logger.With("forwarder", r.Forwarder.Name()), rescan)
		lanes[r.Forwarder.Name()] = l
		d.startLaneLocked(l, nil)
	}
	d.lanes, d.resumed = lanes, nil
	d.mu.Unlock()

	recorded := make(chan struct{})
	go func() {
		defer close(recorded)
		w.run(ctx)
	}()
	ctxDone := ctx.Done()
	for {
		// Lanes come and go while running (AddRoute, RemoveRoute); the run ends once none
		// is left and none can come: ctx is done, or, draining, every lane has drained.
		d.mu.Lock()
		finished := rt.lanes == 0 && (more != nil || ctx.Err() != nil)
		rt.closed = finished
		d.mu.Unlock()
		if finished {
			close(w.in) // every attempt has handed in its verdict
			<-recorded
			return nil
		}
		select {
		case <-rt.exited:
		case <-ctxDone:
			ctxDone = nil
		case <-d.Outbox.Changes():
			d.added()
		}
	}
}

// item is an outbox entry as its lane schedules it: the stored entry's schedule, kept
// up to date in memory as attempts fail. due and anchor are monotonic clock readings.
type item struct {
	seq      uint64
	due      time.Time     // zero: at once
	attempts int           // failed attempts so far
	firstTry time.Time     // wall clock; zero until the first attempt
	anchor   time.Time     // when spent was credited in this process; zero: not yet
	spent    time.Duration // retry budget used at anchor
	// d is the entry as read for its first attempt in this process, so that the attempt
	// need not read and decode it again; nil: read it when attempted. It points into the
	// page load read it with, and the attempt lets go of it as it starts (see entry), so
	// the pages kept are those of the fresh entries not yet attempted: at most a window.
	d *event.Delivery
}

// schedule is a lane's entries not in flight, a binary heap: earliest due first, then
// oldest. It is typed rather than a container/heap, whose any-typed Push and Pop box
// every entry on the heap, once each way.
type schedule []item

// before reports whether s[i] goes before s[j]: due earlier, or due together and older.
func (s schedule) before(i, j int) bool {
	if !s[i].due.Equal(s[j].due) {
		return s[i].due.Before(s[j].due)
	}
	return s[i].seq < s[j].seq
}

// push adds it.
func (s *schedule) push(it item) {
	*s = append(*s, it)
	h := *s
	for i := len(h) - 1; i > 0; {
		parent := (i - 1) / 2
		if !h.before(i, parent) {
			break
		}
		h[i], h[parent] = h[parent], h[i]
		i = parent
	}
}

// pop removes and returns the first entry; s must not be empty.
func (s *schedule) pop() item {
	h := *s
	n := len(h) - 1
	first := h[0]
	h[0] = h[n]
	h[n] = item{} // let the popped entry's Delivery go
	h = h[:n]
	for i := 0; ; {
		c := 2*i + 1
		if c >= n {
			break
		}
		if r := c + 1; r < n && h.before(r, c) {
			c = r
		}
		if !h.before(c, i) {
			break
		}
		h[i], h[c] = h[c], h[i]
		i = c
	}
	*s = h
	return first
}

// lane delivers one forwarder's entries.
type lane struct {
	d      *Dispatcher
	name   string // the forwarder's name
	route  Route  // as attempts start with it; l.mu guards it (ReplaceRoute changes it)
	gen    *generation
	rec    *recorder
	logger *slog.Logger
	rescan time.Duration
	sem    chan struct{} // l.mu guards it (ReplaceRoute changes it)
	// cancel stops the lane's loop (RemoveRoute); stopped is closed once the loop and its
	// attempts are over and their verdicts recorded.
	cancel  context.CancelFunc
	stopped chan struct{}
	// addedC says the outbox has new entries; freedC that a slot came free or the lane
	// was resumed.
	addedC, freedC chan struct{}

	// Only the lane's loop uses these.
	loaded    uint64 // the highest Seq read from the outbox
	readErr   bool   // the last outbox read failed
	exhausted bool   // the last read reached the end of the outbox

	mu     sync.Mutex
	paused bool
	queue  schedule
	ready  int // entries in queue that hold their Delivery
	flying int // entries in flight
	// spare are the item slices of finished attempts, for take to use again: about as
	// many as attempts were ever in flight at once.
	spare [][]item
	stack []int // countDue's, kept for its next call
}

func newLane(d *Dispatcher, r Route, rec *recorder, logger *slog.Logger, rescan time.Duration) *lane {
	r = withDefaults(r)
	return &lane{
		d: d, name: r.Forwarder.Name(), route: r, gen: &generation{}, rec: rec, logger: logger, rescan: rescan,
		sem:     make(chan struct{}, r.Concurrency),
		stopped: make(chan struct{}),
		addedC:  make(chan struct{}, 1),
		freedC:  make(chan struct{}, 1),
		paused:  r.Paused,
	}
}

// withDefaults is r with its zero settings set to their defaults.
func withDefaults(r Route) Route {
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
	return r
}

// signal wakes the lane's loop through c without blocking.
func (l *lane) signal(c *chan struct{}) {
	select {
	case *c <- struct{}{}:
	default:
	}
}

func (l *lane) resume() {
	l.mu.Lock()
	l.paused = false
	l.mu.Unlock()
	l.logger.Info("forwarder resumed")
	l.signal(&l.freedC)
}

// run is the lane's loop: learn of new entries, start what is due up to the concurrency
// bound, then wait for new entries, a free slot, the next due time or, after a failed
// read, the rescan delay. Draining (more not nil), once more is closed and the outbox
// read again, it returns once it holds nothing, nothing is in flight and the last read
// succeeded, or once it is paused with nothing in flight.
func (l *lane) run(ctx, hard context.Context, more <-chan struct{}) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	w := &workers{ctx: ctx, hard: hard, jobs: make(chan job)}
	defer w.wg.Wait()
	defer close(w.jobs) // before the wait: the workers end once their attempts are done
	// ended: more was seen closed, before a read of the outbox that then saw everything
	// added before the close, whether or not its signal has come yet.
	ended := false
	seen := func() bool {
		select {
		case <-more:
			ended, more = true, nil
			return true
		default:
			return false
		}
	}
	if more != nil {
		seen()
	}
	l.load(hard)
	for ctx.Err() == nil {
		if more != nil && seen() {
			l.exhausted = false
		}
		if !l.exhausted || l.readErr {
			l.load(hard) // refill the window as attempts take from it
		}
		next := l.start(w)
		if ended && l.drained() {
			return
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(time.Until(next), time.Millisecond)
		}
		if l.readErr {
			wait = min(wait, l.rescan)
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-more: // nil once seen closed, or when not draining
		case <-l.addedC:
			l.exhausted = false
		case <-l.freedC:
		case <-timer.C:
		}
	}
}

// window is how many fresh entries, read and decoded, a lane keeps ahead of its slots.
// l.mu must be held.
func (l *lane) window() int { return 2*l.route.Concurrency + loadPage/4 }

// load reads entries past the last one read, oldest first, while the lane holds fewer
// than half a window of fresh ones: a fresh entry keeps its Delivery for its attempt, an
// entry that failed before only its schedule (it may wait long, and many may). So the
// lane reads each entry once and holds a bounded number of them, however long the
// outbox. The reads run under ctx (the dispatcher's hard context).
func (l *lane) load(ctx context.Context) {
	for {
		l.mu.Lock()
		win := l.window()
		want := win - l.ready
		l.mu.Unlock()
		if want < win/2 {
			return
		}
		page, err := l.d.Outbox.Pending(ctx, l.name, l.loaded, want)
		if err != nil {
			l.logger.Error("reading the outbox failed", "err", err)
			l.readErr = true
			return
		}
		l.readErr = false
		l.exhausted = len(page) < want
		now, wall := time.Now(), l.d.now()
		l.mu.Lock()
		for i := range page {
			d := &page[i]
			it := item{seq: d.Seq, attempts: d.Attempts, firstTry: d.FirstTry}
			if d.Attempts > 0 {
				// A stored next try more than MaxInterval away (the wall clock went back
				// since it was written) is pulled in to MaxInterval.
				it.due = now.Add(min(d.NextTry.Sub(wall), l.route.Retry.MaxInterval))
			} else { // a fresh or replayed entry is due at once
				it.d = d // into the page: no copy of its own on the heap
				l.ready++
			}
			l.queue.push(it)
			l.loaded = max(l.loaded, d.Seq)
		}
		l.mu.Unlock()
		if l.exhausted {
			return
		}
	}
}

// workers are a lane's attempt goroutines. They live as long as the lane's loop, each
// making attempt after attempt: a goroutine per attempt grew a fresh stack every time
// through the HTTP transport and the JetStream PubAck decode. start hands an attempt to
// an idle worker, or starts a new one when none is idle, so there are about as many as
// the most slots ever busy at once (ReplaceRoute may change the concurrency), and a
// slow attempt never waits for a worker.
type workers struct {
	ctx, hard context.Context
	jobs      chan job // unbuffered: a send succeeds only into an idle worker
	wg        sync.WaitGroup
}

// job is one attempt handed to a worker: its entries, with what else is due, through r,
// the lane's route when it started, holding a slot of sem in generation gen.
type job struct {
	items []item
	rest  Rest
	r     Route
	sem   chan struct{}
	gen   *generation
}

// work makes the attempt j, then the attempts it receives from w until w.jobs is closed.
func (l *lane) work(w *workers, j job) {
	var sc scratch
	for ok := true; ok; j, ok = <-w.jobs { // j first, then each job received
		if b, isBatch := j.r.Forwarder.(BatchDeliverer); isBatch && len(j.items) > 1 {
			l.attemptBatch(w.hard, b, j.items, j.rest, j.r, &sc)
		} else {
			l.attempt(w.ctx, w.hard, &j.items[0], j.r)
		}
		j.gen.flying.Done()
		l.mu.Lock()
		l.flying -= len(j.items)
		clear(j.items)
		l.spare = append(l.spare, j.items[:0])
		l.mu.Unlock()
		<-j.sem
		l.signal(&l.freedC)
	}
}

// start begins attempts for due entries while slots are free. It returns when the next
// entry not yet due falls due (zero if none, or if the slots are full).
func (l *lane) start(w *workers) (next time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for !l.paused && len(l.queue) > 0 {
		head := l.queue[0]
		if head.due.After(now) {
			return head.due
		}
		if l.batchesFull() {
			return time.Time{} // a finishing attempt wakes the loop
		}
		sem, r, gen := l.sem, l.route, l.gen
		select {
		case sem <- struct{}{}:
		default:
			return time.Time{} // every slot is busy: a finishing attempt wakes the loop
		}
		items, rest := l.take(now)
		l.flying += len(items)
		gen.flying.Add(1)
		j := job{items: items, rest: rest, r: r, sem: sem, gen: gen}
		select {
		case w.jobs <- j: // an idle worker takes it
		default: // none is idle: a new one, which stays for the lane's later attempts
			w.wg.Go(func() { l.work(w, j) })
		}
	}
	return time.Time{}
}

// drained reports whether a draining lane is done: nothing in flight, and it holds no
// entry (after a read that succeeded and reached the end of the outbox) or is paused. An attempt puts a failed entry back
// before it leaves the flight, so one check under the lock cannot miss it.
func (l *lane) drained() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flying == 0 && ((len(l.queue) == 0 && l.exhausted && !l.readErr) || l.paused)
}

// reschedule puts an entry back in the lane's schedule.
func (l *lane) reschedule(it item) {
	l.mu.Lock()
	l.queue.push(it)
	l.mu.Unlock()
}

// attempt makes one delivery attempt of the entry it names through r, the lane's route
// when it started, and hands its verdict to the recorder: delivered, scheduled for a
// retry, dead-lettered, or the forwarder paused. Attempts run under hard, which outlives
// ctx by the grace period.
func (l *lane) attempt(ctx, hard context.Context, it *item, r Route) {
	d, ok := l.entry(hard, it)
	if !ok {
		return
	}
	start := time.Now()
	err := r.Forwarder.Deliver(hard, d.Event)
	l.settle(hard, *it, d, err, time.Since(start), newPace(), r)
}

// entry is the delivery it names, ready for an attempt: as read when it was loaded, or
// read now. It reports false when the entry left the outbox since it was scheduled
// (dropped, moved) or cannot be read. It clears it.d: the attempt holds its own copy, so
// a slow attempt does not keep the page it was loaded with.
func (l *lane) entry(hard context.Context, it *item) (event.Delivery, bool) {
	var d event.Delivery
	if it.d != nil {
		d, it.d = *it.d, nil
	} else {
		var found bool
		var err error
		if d, found, err = l.d.Outbox.Entry(hard, l.name, it.seq); err != nil {
			l.logger.Error("skipping an unreadable outbox entry", "seq", it.seq, "err", err)
			return d, false
		} else if !found {
			return d, false // dropped or moved since it was scheduled
		}
	}
	d.Attempts, d.FirstTry = it.attempts, it.firstTry // this process may know of failures not yet recorded
	if d.FirstTry.IsZero() {
		d.FirstTry = l.d.now()
	}
	return d, true
}

// pace is when an attempt ended and the random draw that spreads its retry (see
// nextWait). The entries of one batch share one, so that those with the same history
// fall due again at the same instant and are retried together.
type pace struct {
	end    time.Time // monotonic
	jitter float64   // in [0, 1)
}

// newPace is the pace of an attempt that has just ended.
func newPace() pace { return pace{end: time.Now(), jitter: rand.Float64()} }

// settle hands the recorder the verdict of an attempt of d (the entry it names) through
// r, the lane's route when the attempt started, that ended with err after took, at p:
// delivered, scheduled for a retry, dead-lettered, or the forwarder paused. An attempt
// cut off by the end of the grace period gets no verdict.
func (l *lane) settle(hard context.Context, it item, d event.Delivery, err error, took time.Duration, p pace, r Route) {
	if err != nil && hard.Err() != nil {
		// Cut off by the end of the shutdown grace period: not a verdict on the target.
		l.eventLog(d).Debug("attempt cut off by shutdown; the entry stays in the outbox")
		return
	}
	it.d = nil
	v := verdict{lane: l, took: took, err: err}
	if err == nil {
		v.Outcome, v.result = event.Outcome{Delivery: d, Verdict: event.Acked, Took: took}, ResultOK
		l.rec.hand(v)
		return
	}
	d.Attempts++
	d.LastError = err.Error()
	switch {
	case IsGone(err):
		d.FirstTry = it.firstTry // a pause does not spend the retry budget of a fresh entry
		l.reschedule(item{seq: d.Seq, attempts: d.Attempts, firstTry: d.FirstTry})
		l.pause(hard, d, err, r.ConfigHash, l.eventLog(d))
		v.Outcome = event.Outcome{Delivery: d, Verdict: event.Retrying}
	case IsPermanent(err):
		v.Outcome, v.result = event.Outcome{Delivery: d, Verdict: event.Dead, At: l.d.now()}, ResultDead
	default:
		it = l.credit(r.Retry, it, d)
		wait, ok := l.nextWait(r.Retry, d, err, it.spent+max(p.end.Sub(it.anchor), 0), p.jitter)
		if !ok {
			v.err = fmt.Errorf("retry budget of %s spent: %w", r.Retry.MaxElapsed, err)
			d.LastError = v.err.Error()
			v.Outcome, v.result = event.Outcome{Delivery: d, Verdict: event.Dead, At: l.d.now()}, ResultDead
			break
		}
		d.NextTry = l.d.now().Add(wait)
		it.due, it.attempts, it.firstTry = p.end.Add(wait), d.Attempts, d.FirstTry
		l.reschedule(it)
		l.eventLog(d).Warn("delivery failed, will retry", "attempt", d.Attempts, "retry_in", wait.Round(time.Millisecond), "err", err)
		v.Outcome, v.result = event.Outcome{Delivery: d, Verdict: event.Retrying}, ResultRetry
	}
	v.Outcome.Took = took
	l.rec.hand(v)
}

// nextWait is how long to wait before retrying d after its d.Attempts-th failure under
// policy p: the
// exponential backoff's interval for that attempt (InitialInterval doubling, randomised
// by ±25% as jitter in [0, 1) picks, then capped at MaxInterval), derived from the stored
// attempt count so that a restart keeps the pace; stretched to a Retry-After the target
// asked for, again never past MaxInterval. It reports false when the retry budget, of
// which spent is used, cannot cover the wait.
func (l *lane) nextWait(p RetryPolicy, d event.Delivery, err error, spent time.Duration, jitter float64) (time.Duration, bool) {
	const spread = 0.25
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(0), // randomised below, by the caller's draw
		backoff.WithMaxElapsedTime(0),      // the budget counts from d.FirstTry, across restarts
	)
	var interval time.Duration
	for range min(d.Attempts, 64) { // past 64 doublings every interval is MaxInterval
		interval = b.NextBackOff()
	}
	wait := time.Duration(float64(interval) * (1 - spread + 2*spread*jitter))
	wait = min(wait, p.MaxInterval)
	if ra := min(RetryAfterOf(err), p.MaxInterval); ra > wait {
		wait = ra
	}
	if spent+wait > p.MaxElapsed {
		return 0, false
	}
	return wait, true
}

// credit anchors the retry budget d (after its d.Attempts-th failure) has used, the first
// time this process sees it fail: the wall-clock time since its first try, but no less
// than zero and no more than d.Attempts × MaxInterval (the waits between its attempts,
// with room for the attempts themselves), so that a wall clock that jumped, or a long
// downtime, cannot spend the budget in one step. From then on the monotonic time since
// the anchor is added.
func (l *lane) credit(r RetryPolicy, it item, d event.Delivery) item {
	if it.anchor.IsZero() {
		limit := time.Duration(min(int64(d.Attempts), int64(r.MaxElapsed/r.MaxInterval)+1)) * r.MaxInterval
		it.anchor, it.spent = time.Now(), min(max(l.d.now().Sub(d.FirstTry), 0), limit)
	}
	return it
}

// pause pauses the lane and records it in the store, under ctx without its cancellation
// (the pause holds even when shutdown cuts the attempt off), and reports it once.
func (l *lane) pause(ctx context.Context, d event.Delivery, err error, configHash string, log *slog.Logger) {
	l.mu.Lock()
	already := l.paused
	l.paused = true
	l.mu.Unlock()
	if already {
		return
	}
	if perr := l.d.Outbox.Pause(context.WithoutCancel(ctx), d.Forwarder, err.Error(), configHash); perr != nil {
		log.Error("recording the pause failed", "err", perr)
	}
	log.Error("target is gone: forwarder paused, deliveries kept; run `leadbridge forwarder resume` once it is fixed", "err", err)
	l.report(d, ResultPaused, 0, err)
}

// eventLog is the lane's logger with the attributes of d's event. It is built only for
// a line that is written: with many deliveries a second, building it for each one
// costs more than the delivery's own bookkeeping.
func (l *lane) eventLog(d event.Delivery) *slog.Logger {
	return l.logger.With(d.Event.LogAttrs()...)
}

func (l *lane) report(d event.Delivery, res Result, took time.Duration, err error) {
	if l.d.OnResult != nil {
		l.d.OnResult(d, res, took, err)
	}
}

// verdict is an attempt's outcome on its way to the store, with what to report once it
// is recorded (result "" reports nothing: a pause was reported when it happened).
type verdict struct {
	event.Outcome
	lane   *lane
	result Result
	took   time.Duration
	err    error
	// barrier, when not nil, makes this a marker rather than a verdict: it is closed once
	// the verdicts handed before it are recorded (see recorder.flush).
	barrier chan struct{}
}

// recorder is the one writer of verdicts: it records whatever has gathered in one store
// write, so that many deliveries share a transaction and its fsync.
type recorder struct {
	d      *Dispatcher
	in     chan verdict
	logger *slog.Logger
}

// hand gives the recorder a verdict to record; it blocks only while maxBatch verdicts
// are already waiting.
func (w *recorder) hand(v verdict) { w.in <- v }

// run records verdicts until in is closed and empty. A failing write is retried with
// backoff until it succeeds or ctx ends; after that, during shutdown, each write is tried
// once. What was not recorded stays in the outbox as it was and is attempted again after
// a restart, with the same event ids.
func (w *recorder) run(ctx context.Context) {
	store := context.WithoutCancel(ctx) // a verdict reached is recorded even once ctx is done
	batch := make([]verdict, 0, maxBatch)
	outcomes := make([]event.Outcome, 0, maxBatch)
	tick := time.NewTicker(w.d.summaryEvery())
	defer tick.Stop()
	sum := tally{}
	defer sum.log(w.logger)
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	var lastCommit time.Time
	for {
		var v verdict
		select {
		case <-tick.C:
			sum.log(w.logger)
			continue
		case got, ok := <-w.in:
			if !ok {
				return
			}
			v = got
		}
		batch = w.gather(append(batch[:0], v), lastCommit.Add(commitGap), gap)
		lastCommit = time.Now()
		outcomes = outcomes[:0]
		for _, v := range batch {
			if v.barrier == nil {
				outcomes = append(outcomes, v.Outcome)
			}
		}
		recorded := len(outcomes) == 0 || w.persist(ctx, func() error { return w.d.Outbox.Record(store, outcomes) })
		for _, v := range batch {
			if v.barrier != nil {
				close(v.barrier)
			}
		}
		if !recorded {
			continue
		}
		debug := w.logger.Enabled(ctx, slog.LevelDebug)
		for _, v := range batch {
			switch v.result {
			case ResultOK:
				if debug {
					v.lane.eventLog(v.Delivery).Debug("delivered", "attempts", v.Delivery.Attempts+1, "took", v.took)
				}
			case ResultDead:
				v.lane.eventLog(v.Delivery).Error("delivery dead-lettered", "attempts", v.Delivery.Attempts, "err", v.err)
			}
			if v.result != "" {
				sum.add(v.Delivery.Forwarder, v.result)
				v.lane.report(v.Delivery, v.result, v.took, v.err)
			}
		}
	}
}

// commitGap is the least time from the start of one write of verdicts to the start of
// the next. A write holds the store's one write lock through its two fsyncs, which
// ingest needs too: verdicts that come meanwhile wait up to this long to share the next
// write, rather than a few taking one each. The slots that produced them have gone on
// to the next deliveries, so only the recording waits.
const commitGap = 10 * time.Millisecond

// gather adds to batch, up to maxBatch verdicts, what is waiting in w.in and what comes
// until until. It returns at once when w.in is closed or a barrier is in the batch (a
// flush is waited for). timer is the recorder's, not running.
func (w *recorder) gather(batch []verdict, until time.Time, timer *time.Timer) []verdict {
	flush := batch[0].barrier != nil
	for len(batch) < maxBatch {
		select {
		case v, ok := <-w.in:
			if !ok {
				return batch
			}
			batch = append(batch, v)
			flush = flush || v.barrier != nil
			continue
		default:
		}
		wait := time.Until(until)
		if flush || wait <= 0 {
			return batch
		}
		timer.Reset(wait)
		select {
		case v, ok := <-w.in:
			timer.Stop() // no stale tick after Stop (Go 1.23 timers)
			if !ok {
				return batch
			}
			batch = append(batch, v)
			flush = flush || v.barrier != nil
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// tally counts recorded results per forwarder between two summary lines.
type tally map[string]map[Result]int

func (t tally) add(forwarder string, r Result) {
	if t[forwarder] == nil {
		t[forwarder] = map[Result]int{}
	}
	t[forwarder][r]++
}

// log writes one info line per forwarder that had results since the last call, and
// starts over. Single deliveries are logged at debug; this line tells the operator what
// flowed without a line per record.
func (t tally) log(logger *slog.Logger) {
	for _, name := range slices.Sorted(maps.Keys(t)) {
		n := t[name]
		logger.Info("deliveries", "forwarder", name, "delivered", n[ResultOK], "retrying", n[ResultRetry],
			"dead_lettered", n[ResultDead], "paused", n[ResultPaused] > 0)
		delete(t, name)
	}
}

// persist retries a store write until it succeeds or ctx ends, backing off, so that a
// failing store (disk full) never turns into a busy loop. It reports whether the write
// succeeded.
func (w *recorder) persist(ctx context.Context, write func() error) bool {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(100*time.Millisecond),
		backoff.WithMaxInterval(30*time.Second),
		backoff.WithMaxElapsedTime(0),
	)
	err := backoff.RetryNotify(write, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		w.logger.Error("recording delivery outcomes failed; retrying the store write, not the deliveries",
			"retry_in", wait.Round(time.Millisecond), "err", err)
	})
	if err != nil {
		w.logger.Error("recording delivery outcomes failed; the entries stay in the outbox", "err", err)
		return false
	}
	return true
}
