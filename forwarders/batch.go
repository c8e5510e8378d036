package forwarders

import (
	"context"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// BatchDeliverer is implemented by a Forwarder that can hand several events to its target
// in one attempt: a Slack digest, pipelined JetStream publishes. When a lane's forwarder
// implements it, the lane asks BatchSize how many of the deliveries due at once to hand
// over; 1 (or less) keeps the single path, Deliver, for that attempt.
//
// DeliverBatch makes one attempt for all of evs and returns one error per event, in the
// order of evs: nil where the target took that event, else an error classified as for
// Deliver (Permanent, Gone, RetryAfter or retryable). A nil slice means the target took
// every event. The Dispatcher records each event's outcome on its own, so an entry is
// acknowledged only when its own error is nil, and a failed one follows its own retry
// schedule and budget. One batch takes one concurrency slot; BatchSize and DeliverBatch
// may be called concurrently from several slots. Errors never contain secrets.
type BatchDeliverer interface {
	Forwarder
	// BatchSize is how many deliveries the forwarder takes in one attempt when due of
	// them are due now (due ≥ 1), those already in flight included: a burst is judged
	// whole while its first batches are out. At most those waiting are handed over; a
	// batch of one goes through Deliver.
	BatchSize(due int) int
	// DeliverBatch makes one attempt to hand evs to the target; rest says what else is
	// due (a digest names it as a count). It keeps no hold of evs once it returns: the
	// lane uses the slice again for its next batch.
	DeliverBatch(ctx context.Context, evs []event.Event, rest Rest) []error
}

// Rest is what a lane knows, when it hands over a batch, of the forwarder's deliveries
// that are due but not in the batch.
type Rest struct {
	// Due is how many due deliveries the lane holds besides the batch, in flight ones not
	// counted.
	Due int
	// More is true when the lane has not read the whole outbox yet, so that more than Due
	// may be due.
	More bool
}

// take pops the entries of the lane's next attempt, the head of the schedule being due:
// the head alone, or, when the forwarder has a batch path, as many due entries as it
// asks for (no more than leave the lane's entries in flight within a window), earliest
// due first, with what that leaves due. Called with l.mu held.
func (l *lane) take(now time.Time) ([]item, Rest) {
	n, rest := 1, Rest{}
	if b, ok := l.route.Forwarder.(BatchDeliverer); ok {
		due := l.countDue(now)
		n = min(max(b.BatchSize(due+l.flying), 1), due, l.window()-l.flying)
		rest = Rest{Due: due - n, More: !l.exhausted}
	}
	var items []item
	if k := len(l.spare); k > 0 {
		items, l.spare = l.spare[k-1], l.spare[:k-1]
	}
	if cap(items) < n {
		items = make([]item, 0, n)
	}
	for range n {
		it := l.queue.pop()
		if it.d != nil {
			l.ready--
		}
		items = append(items, it)
	}
	return items, rest
}

// batchesFull reports whether a lane with a batch path has a window of entries in flight
// already: then it starts no more until some come back, however many slots are free, so
// that slots times batch size (256 × 256 for JetStream) never holds that many entries in
// memory at once. Called with l.mu held.
func (l *lane) batchesFull() bool {
	_, ok := l.route.Forwarder.(BatchDeliverer)
	return ok && l.flying >= l.window()
}

// countDue counts the scheduled entries due at now. It visits only due entries and their
// children: a heap entry is never due before its parent. Called with l.mu held.
func (l *lane) countDue(now time.Time) int {
	n := 0
	stack := append(l.stack[:0], 0)
	for len(stack) > 0 {
		i := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if i >= len(l.queue) || l.queue[i].due.After(now) {
			continue
		}
		n++
		stack = append(stack, 2*i+1, 2*i+2)
	}
	l.stack = stack
	return n
}

// attemptBatch makes one attempt of several entries through the forwarder's batch path
// and settles each entry's outcome on its own, as attempt does for one, with one pace for
// all: entries that failed alike fall due together and go in one batch again. Entries
// that left the outbox since they were scheduled are left out. r is the lane's route when
// the attempt started (b is its forwarder). It runs under hard, like attempt.
func (l *lane) attemptBatch(hard context.Context, b BatchDeliverer, items []item, rest Rest, r Route, sc *scratch) {
	kept := items[:0] // the entries still in the outbox, in place
	for i := range items {
		if d, ok := l.entry(hard, &items[i]); ok {
			kept, sc.ds = append(kept, items[i]), append(sc.ds, d)
		}
	}
	ds := sc.ds
	defer sc.reset()
	if len(ds) == 0 {
		return
	}
	for _, d := range ds {
		sc.evs = append(sc.evs, d.Event)
	}
	evs := sc.evs
	start := time.Now()
	errs := b.DeliverBatch(hard, evs, rest)
	p := newPace()
	took := p.end.Sub(start)
	if errs != nil && len(errs) != len(evs) {
		bad := Errorf(b.Name(), "the batch path answered %d outcomes for %d events", len(errs), len(evs))
		errs = make([]error, len(evs))
		for i := range errs {
			errs[i] = bad
		}
	}
	for i, d := range ds {
		var err error
		if errs != nil {
			err = errs[i]
		}
		l.settle(hard, kept[i], d, err, took, p, r)
	}
}

// scratch is a worker's room for the deliveries of its batches and their events, used
// again for each batch instead of made anew: DeliverBatch keeps no hold of evs once it
// returns, and settle copies what it keeps.
type scratch struct {
	ds  []event.Delivery
	evs []event.Event
}

// reset empties sc for the next batch, letting go of what the last one held. Room much
// larger than that batch is dropped too: a worker that once took a burst's full batch
// does not keep room for it while its batches are small.
func (sc *scratch) reset() {
	if n := len(sc.ds); cap(sc.ds) > 2*n+16 {
		sc.ds, sc.evs = nil, nil
		return
	}
	clear(sc.ds)
	clear(sc.evs)
	sc.ds, sc.evs = sc.ds[:0], sc.evs[:0]
}
