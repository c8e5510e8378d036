package poller

import (
	"context"
	"sync"
	"time"
)

// Budget bounds the LeadList calls of one account to a rate shared by all of its
// chatbots. Calls start at least 1/rate apart, in the order they asked (first come,
// first served, so a chatbot never starves however many others wait), and a 429 from
// the account's host holds every call of the account for its Retry-After (or, without
// one, for a wait that doubles from 1s up to a minute while 429s go on), moving the
// queue back as a whole so that its order and spacing stay. Other accounts, with
// budgets of their own, are not slowed. A nil *Budget does not limit. Safe for
// concurrent use.
type Budget struct {
	mu      sync.Mutex
	gap     time.Duration // between the starts of two calls
	next    time.Time     // the earliest start of the next call to ask
	resume  time.Time     // no call starts before this (a 429's hold)
	shifted time.Duration // how far holds moved the queue back, in total
	hold    time.Duration // the next hold without Retry-After; 0 means minHold
}

// Limits of a hold after a 429 that gives no Retry-After.
const (
	minHold = time.Second
	maxHold = time.Minute
)

// NewBudget returns a Budget of rps calls a second (rps > 0).
func NewBudget(rps float64) *Budget {
	return &Budget{gap: time.Duration(float64(time.Second) / rps)}
}

// Wait blocks until the caller may start one call, or ctx is done (its error is
// returned, and the turn is given back when no one queued behind it).
func (b *Budget) Wait(ctx context.Context) error {
	if b == nil {
		return nil
	}
	slot, base := b.reserve(time.Now())
	for {
		if !sleep(ctx, time.Until(slot)) {
			b.giveBack(slot)
			return ctx.Err()
		}
		b.mu.Lock()
		moved := b.shifted - base
		base = b.shifted
		b.mu.Unlock()
		if moved <= 0 {
			return nil
		}
		slot = slot.Add(moved) // a 429 came while it waited: its turn moved back with the queue
	}
}

// reserve takes the next turn at or after now: when it starts, and the queue's shift
// at that moment (a later hold moves the turn back by the difference).
func (b *Budget) reserve(now time.Time) (time.Time, time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	slot := now
	if b.next.After(slot) {
		slot = b.next
	}
	if b.resume.After(slot) {
		slot = b.resume
	}
	b.next = slot.Add(b.gap)
	return slot, b.shifted
}

// giveBack returns a turn not taken, if it was the last one given.
func (b *Budget) giveBack(slot time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next.Equal(slot.Add(b.gap)) {
		b.next = slot
	}
}

// Throttled holds the account's calls after a 429 at now: for retryAfter when the host
// said (at most maxRetryAfter), else for a wait that doubles with each 429 in a row.
// Calls already queued move back by as much as the hold extends the current one.
func (b *Budget) Throttled(now time.Time, retryAfter time.Duration) {
	if b == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d := min(retryAfter, maxRetryAfter)
	if d <= 0 {
		d = max(b.hold, minHold)
		b.hold = min(2*d, maxHold)
	}
	until := now.Add(d)
	from := now
	if b.resume.After(from) {
		from = b.resume
	}
	if !until.After(from) {
		return // already held as long
	}
	shift := until.Sub(from)
	b.shifted += shift
	b.resume = until
	if b.next.After(now) {
		b.next = b.next.Add(shift)
	}
	if until.After(b.next) {
		b.next = until
	}
}

// Answered notes a call the host did not refuse for its rate, so that the next hold
// without Retry-After starts short again.
func (b *Budget) Answered() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.hold = 0
	b.mu.Unlock()
}

// SetRate changes the budget to rps calls a second (rps > 0), for the turns asked from
// now on: those already given keep their time, and a 429's hold stands. An account
// keeps one Budget across reloads this way, so that the calls queued before a change
// and those asked after it share one rate.
func (b *Budget) SetRate(rps float64) {
	b.mu.Lock()
	b.gap = time.Duration(float64(time.Second) / rps)
	b.mu.Unlock()
}

// Rate is the budget in calls a second.
func (b *Budget) Rate() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return float64(time.Second) / float64(b.gap)
}
