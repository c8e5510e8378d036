package natsstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// Defaults for SharedOptions.
const (
	DefaultAckWait = 30 * time.Second
	DefaultMaxHeld = 1024
)

// fetchWait is how long one pull request waits on the server for entries.
const fetchWait = 5 * time.Second

// SharedOptions configures Store.Shared.
type SharedOptions struct {
	// AckWait is how long the server waits for word from the replica holding an entry
	// before it hands the entry to another one; the holder sends in-progress acks every
	// third of it while it holds the entry (also while a slow target works on it).
	// Default DefaultAckWait.
	AckWait time.Duration
	// MaxHeld bounds the entries of one forwarder this replica pulls ahead of its
	// Dispatcher: it pulls more only while fewer wait to be handed over, so that the
	// others get their share (the Dispatcher's lane bounds what it takes). Entries
	// waiting for a retry are not held, and the consumer's MaxAckPending is unlimited,
	// so that many failing entries never stall fresh ones. Default DefaultMaxHeld.
	MaxHeld int
	// Drain shapes the outbox for Dispatcher.Drain (`once`, `backfill`) beside running
	// replicas: Pending pulls what the server has ready itself (no pull ahead), so that a
	// short answer means there is nothing more, and a retried entry stays held (its
	// attempt comes from this process, within the drain) instead of going back to the
	// server. What the drain leaves is handed back at Close.
	Drain bool
}

// Shared is the outbox as the replicas of a cluster share it: each forwarder's entries
// are read through one durable pull consumer that every replica attaches to, so any
// replica delivers any entry and only one holds an entry at a time. It implements the
// Dispatcher's Outbox, so one Dispatcher runs on either backend:
//
//   - Pending hands over the entries this replica holds and has not handed over yet,
//     whatever their Seq (a redelivery from a replica that died may be older than what
//     the lane read before), oldest first; after is not a cursor here.
//   - Entry takes an entry this replica holds for one attempt; found is false when the
//     replica does not hold it (it went back to the server for a retry) or an attempt
//     has it already, so an entry is attempted once per delivery to this replica.
//   - Record deletes an acknowledged entry from the stream and acks it; a retried one
//     keeps its state in the retry bucket and goes back to the server with NakWithDelay
//     until its NextTry (the backoff schedule and budget travel with it to whichever
//     replica gets it next); a dead one moves to the dead letters.
//
// A replica that dies stops sending in-progress acks; its entries are redelivered to the
// others after AckWait. Drain (leadbridge once) should use the Store itself: entries
// arrive from the consumer asynchronously, so an empty Pending does not mean an empty
// outbox.
type Shared struct {
	s       *Store
	owner   string // names this replica in its claims (fence.go)
	ackWait time.Duration
	maxHeld int
	drain   bool
	changes chan struct{}

	mu      sync.Mutex
	closed  bool
	lanes   map[string]*held
	stop    chan struct{}
	stopped chan struct{}
}

// held is what a replica holds of one forwarder's entries.
type held struct {
	forwarder string
	cons      jetstream.Consumer
	freed     chan struct{} // an entry was handed over or left: there may be room to pull more
	cancel    context.CancelFunc
	done      chan struct{} // the pull loop ended
	entries   map[uint64]*heldEntry
}

// heldEntry is one entry delivered to this replica and not yet acked or nak'ed.
type heldEntry struct {
	msg       jetstream.Msg
	delivered uint64        // how many times the server delivered it (to any replica)
	received  time.Time     // when it was delivered to this replica (monotonic)
	handed    bool          // Pending returned it
	taken     bool          // an attempt has it
	retried   bool          // it had a retry state when read, or a retry or claim was written since
	attempts  int           // its attempts as this replica last read or recorded them; -1 before Pending read it
	claim     *attemptClaim // this replica's claim on the attempt under way, renewed by heartbeat
}

// needsFence reports whether an attempt of e must be claimed first (fence.go): it has a
// retry state, was delivered before, or waited here long enough that the server may
// have handed it to another replica. Called with sh.mu held.
func (sh *Shared) needsFence(e *heldEntry) bool {
	return e.retried || sh.mayBeElsewhere(e)
}

// mayBeElsewhere reports whether the server may have handed e to another replica too:
// it was delivered before, or waited here long enough. Called with sh.mu held.
func (sh *Shared) mayBeElsewhere(e *heldEntry) bool {
	return e.delivered > 1 || time.Since(e.received) > sh.fenceAge()
}

// letGo forgets held entry seq of h, if it is still e, because err says its attempt is
// not this replica's (fence.go) or it could not be read (logged here unless nil). An
// entry claimed elsewhere goes back to the server with a delay until the claim lapses or
// its next try; an unreadable one the server hands out again after AckWait.
func (sh *Shared) letGo(h *held, seq uint64, e *heldEntry, err error) {
	sh.mu.Lock()
	mine := h.entries[seq] == e
	if mine {
		delete(h.entries, seq)
		h.freeRoom()
	}
	m := e.msg
	sh.mu.Unlock()
	var claimed *errClaimed
	if !errors.As(err, &claimed) {
		if err != nil {
			sh.s.log.Error("skipping an unreadable outbox entry", "forwarder", h.forwarder, "seq", seq, "err", err)
		}
		return
	}
	sh.s.log.Debug("outbox entry attempted by another replica; left to it", "forwarder", h.forwarder, "seq", seq, "offered_again_in", claimed.wait, "gone", claimed.gone)
	switch {
	case !mine || claimed.gone:
	case claimed.wait > 0:
		_ = m.NakWithDelay(claimed.wait) // lost: the server hands it out again after AckWait
	default:
		_ = m.Nak()
	}
}

var _ interface {
	Pending(ctx context.Context, forwarder string, after uint64, limit int) ([]event.Delivery, error)
	Entry(ctx context.Context, forwarder string, seq uint64) (event.Delivery, bool, error)
	Record(ctx context.Context, outcomes []event.Outcome) error
	Pause(ctx context.Context, forwarder, reason, configHash string) error
	Changes() <-chan struct{}
} = (*Shared)(nil)

// Shared returns the store's outbox shared through durable consumers; Close releases
// what it holds.
func (s *Store) Shared(o SharedOptions) *Shared {
	if o.AckWait <= 0 {
		o.AckWait = DefaultAckWait
	}
	if o.MaxHeld <= 0 {
		o.MaxHeld = DefaultMaxHeld
	}
	sh := &Shared{s: s, owner: NewOwner(), ackWait: o.AckWait, maxHeld: o.MaxHeld, drain: o.Drain, changes: make(chan struct{}, 1),
		lanes: map[string]*held{}, stop: make(chan struct{}), stopped: make(chan struct{})}
	go sh.heartbeat()
	return sh
}

// Changes is signalled when entries were delivered to this replica.
func (sh *Shared) Changes() <-chan struct{} { return sh.changes }

func (sh *Shared) signal() {
	select {
	case sh.changes <- struct{}{}:
	default:
	}
}

// Pause records that forwarder's target is gone (shared by every replica).
func (sh *Shared) Pause(ctx context.Context, forwarder, reason, configHash string) error {
	return sh.s.Pause(ctx, forwarder, reason, configHash)
}

// Attach creates (or updates) the durable consumer of each of forwarders and attaches
// this replica to it, so that a start fails here, with the store's other resources, if
// the server cannot make one; a forwarder added later is attached at its first Pending.
// Each creation is retried after a timeout (replicas started together on a cluster).
func (sh *Shared) Attach(ctx context.Context, forwarders ...string) error {
	for _, f := range forwarders {
		if _, err := sh.lane(ctx, f); err != nil {
			return sh.s.wrap("attach", err)
		}
	}
	return nil
}

// lane returns what this replica holds of forwarder, attaching to its consumer first.
func (sh *Shared) lane(ctx context.Context, forwarder string) (*held, error) {
	sh.mu.Lock()
	h := sh.lanes[forwarder]
	closed := sh.closed
	sh.mu.Unlock()
	if h != nil {
		return h, nil
	}
	if closed {
		return nil, errors.New("shared outbox closed")
	}
	if err := checkName(forwarder); err != nil {
		return nil, err
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       sh.s.prefix + "_" + forwarder,
		FilterSubject: sh.s.subject("outbox", forwarder),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       sh.ackWait,
		MaxDeliver:    -1, // the Dispatcher's retry budget decides when to give up
		MaxAckPending: -1, // bounded per replica by MaxHeld instead
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	// Replicas started together create it at once: retried after a timeout, as the buckets are.
	cons, err := retryTimeout(ctx, func(ctx context.Context) (jetstream.Consumer, error) {
		return sh.s.outbox.CreateOrUpdateConsumer(ctx, cfg)
	})
	if err != nil {
		return nil, fmt.Errorf("consumer for %s: %w", forwarder, err)
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if other := sh.lanes[forwarder]; other != nil {
		return other, nil // attached meanwhile
	}
	loop, cancel := context.WithCancel(context.Background())
	h = &held{forwarder: forwarder, cons: cons, freed: make(chan struct{}, 1), cancel: cancel,
		done: make(chan struct{}), entries: map[uint64]*heldEntry{}}
	sh.lanes[forwarder] = h
	if sh.drain {
		close(h.done) // Pending pulls itself
	} else {
		go sh.pull(loop, h)
	}
	return h, nil
}

// waiting counts the entries held and not handed to the Dispatcher yet. Called with
// sh.mu held.
func (h *held) waiting() int {
	n := 0
	for _, e := range h.entries {
		if !e.handed {
			n++
		}
	}
	return n
}

// freeRoom wakes the pull loop: entries were handed over or left. Called with sh.mu held.
func (h *held) freeRoom() {
	select {
	case h.freed <- struct{}{}:
	default:
	}
}

// pull asks the server for entries while fewer than MaxHeld of the forwarder's wait in
// this replica to be handed to the Dispatcher (whose lane bounds what it takes), until
// ctx is done.
func (sh *Shared) pull(ctx context.Context, h *held) {
	defer close(h.done)
	for ctx.Err() == nil {
		sh.mu.Lock()
		room := sh.maxHeld - h.waiting()
		sh.mu.Unlock()
		if room <= 0 {
			select {
			case <-ctx.Done():
			case <-h.freed:
			}
			continue
		}
		fctx, cancel := context.WithTimeout(ctx, fetchWait)
		batch, err := h.cons.Fetch(min(room, 256), jetstream.FetchContext(fctx))
		if err == nil {
			for m := range batch.Messages() {
				sh.receive(h, m)
			}
			err = batch.Error()
		}
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			sh.s.log.Warn("pulling outbox entries failed; trying again", "forwarder", h.forwarder, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
}

// receive takes an entry the server delivered to this replica.
func (sh *Shared) receive(h *held, m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		sh.s.log.Error("an outbox message without metadata; left to the server", "err", err)
		return
	}
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		_ = m.Nak()
		return
	}
	if e := h.entries[md.Sequence.Stream]; e != nil {
		// Delivered again while held (an in-progress ack came too late): the attempt
		// that has it goes on; acks go to the newest delivery.
		e.msg, e.delivered = m, max(e.delivered, md.NumDelivered)
		sh.mu.Unlock()
		return
	}
	h.entries[md.Sequence.Stream] = &heldEntry{msg: m, delivered: md.NumDelivered, received: time.Now(), attempts: -1}
	sh.mu.Unlock()
	sh.signal()
}

// Pending hands over up to limit (<= 0: all) of the entries this replica holds for
// forwarder and has not handed over yet, oldest first (after is ignored: see Shared).
func (sh *Shared) Pending(ctx context.Context, forwarder string, _ uint64, limit int) ([]event.Delivery, error) {
	h, err := sh.lane(ctx, forwarder)
	if err != nil {
		return nil, sh.s.wrap("pending "+forwarder, err)
	}
	// The entries are marked handed before they are read, and checked again after: an
	// attempt (Entry) may take one meanwhile, and then it is not handed over.
	seqs, err := sh.unhanded(h, limit)
	if err != nil {
		return nil, sh.s.wrap("pending "+forwarder, err)
	}
	sh.mu.Lock()
	mine := seqs[:0]
	for _, seq := range seqs {
		if limit > 0 && len(mine) == limit {
			break
		}
		if e := h.entries[seq]; e != nil && !e.handed {
			e.handed = true
			mine = append(mine, seq)
		}
	}
	seqs = mine
	h.freeRoom()
	sh.mu.Unlock()
	ds, oks, errs := sh.readAll(ctx, h, forwarder, seqs)
	var out []event.Delivery
	for k, seq := range seqs {
		d, ok, err := ds[k], oks[k], errs[k]
		if err != nil {
			sh.s.log.Error("skipping an unreadable outbox entry", "forwarder", forwarder, "seq", seq, "err", err)
		}
		sh.mu.Lock()
		e := h.entries[seq]
		fence := false
		switch {
		case e == nil || e.taken:
			ok = false // recorded or taken by an attempt meanwhile
		case !ok:
			e.handed = false // unreadable now: offered again at the next Pending
		default:
			// A fresh entry is attempted straight from this answer, without Entry: its
			// attempt is claimed here if it needs it.
			e.taken = d.Attempts == 0
			fence = e.taken && sh.needsFence(e)
		}
		sh.mu.Unlock()
		if fence {
			d, ok = sh.claimFresh(ctx, h, forwarder, seq, e)
		}
		if ok {
			out = append(out, d)
		}
	}
	return out, nil
}

// claimFresh claims the attempt of held entry seq, taken from Pending as fresh, and
// returns it as it is now; false when it is another replica's (or unreadable), and then
// this replica lets it go. An entry that was retried meanwhile is handed over for its
// due time, untaken (Entry claims that attempt).
func (sh *Shared) claimFresh(ctx context.Context, h *held, forwarder string, seq uint64, e *heldEntry) (event.Delivery, bool) {
	sh.mu.Lock()
	data := e.msg.Data()
	sh.mu.Unlock()
	d, c, err := sh.fence(ctx, forwarder, seq, data, true, -1)
	if err != nil {
		sh.letGo(h, seq, e, err)
		return d, false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e.retried, e.attempts = true, d.Attempts
	if d.Attempts > 0 {
		e.taken = false
	} else {
		e.claim = c
	}
	return d, true
}

// unhanded returns the entries held and not handed over yet, oldest first. Draining,
// it first pulls what the server has ready, up to limit (<= 0: 1024) entries waiting
// in all: so an answer shorter than limit means the outbox holds nothing more for this
// process now, as the Dispatcher's Drain reads it.
func (sh *Shared) unhanded(h *held, limit int) ([]uint64, error) {
	collect := func() []uint64 {
		sh.mu.Lock()
		defer sh.mu.Unlock()
		var seqs []uint64
		for seq, e := range h.entries {
			if !e.handed {
				seqs = append(seqs, seq)
			}
		}
		slices.Sort(seqs)
		return seqs
	}
	seqs := collect()
	if limit <= 0 {
		limit = DefaultMaxHeld
	}
	if !sh.drain || len(seqs) >= limit {
		return seqs, nil
	}
	batch, err := h.cons.FetchNoWait(limit - len(seqs))
	if err != nil {
		return nil, err
	}
	for m := range batch.Messages() {
		sh.receive(h, m)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return nil, err
	}
	return collect(), nil
}

// readAll decodes the held entries seqs that no attempt has taken, with their retry
// states read in batches; ok[k] is false for an entry not read (taken, or no longer
// held), errs[k] says why one could not be.
func (sh *Shared) readAll(ctx context.Context, h *held, forwarder string, seqs []uint64) (ds []event.Delivery, ok []bool, errs []error) {
	ds, ok, errs = make([]event.Delivery, len(seqs)), make([]bool, len(seqs)), make([]error, len(seqs))
	entries := make([]*heldEntry, len(seqs))
	data := make([][]byte, len(seqs))
	var keys []string
	sh.mu.Lock()
	for k, seq := range seqs {
		if e := h.entries[seq]; e != nil && !e.taken {
			entries[k], data[k] = e, e.msg.Data()
			keys = append(keys, retryKey(forwarder, seq))
		}
	}
	sh.mu.Unlock()
	states, err := sh.s.lastValues(ctx, sh.s.retry, keys)
	for k, e := range entries {
		switch {
		case e == nil:
			continue
		case err != nil:
			errs[k] = fmt.Errorf("retry state: %w", err)
			continue
		}
		var retry []byte
		if v, found := states[retryKey(forwarder, seqs[k])]; found {
			retry = v.value
		}
		var retried bool
		ds[k], retried, errs[k] = decodeDelivery(forwarder, seqs[k], data[k], retry)
		ok[k] = errs[k] == nil
		sh.mu.Lock()
		e.retried = e.retried || retried
		e.attempts = ds[k].Attempts
		sh.mu.Unlock()
	}
	return ds, ok, errs
}

// Entry takes held entry seq of forwarder for one attempt; found is false when this
// replica does not hold it or an attempt has it already.
func (sh *Shared) Entry(ctx context.Context, forwarder string, seq uint64) (event.Delivery, bool, error) {
	h, err := sh.lane(ctx, forwarder)
	if err != nil {
		return event.Delivery{}, false, sh.s.wrap(fmt.Sprintf("read %s #%d", forwarder, seq), err)
	}
	sh.mu.Lock()
	e := h.entries[seq]
	for sh.drain && e != nil && e.taken {
		// Draining, a retried entry stays held, and the attempt before this one may not
		// be recorded yet (the recorder batches): wait for it rather than lose the retry.
		sh.mu.Unlock()
		select {
		case <-ctx.Done():
			return event.Delivery{}, false, sh.s.wrap(fmt.Sprintf("read %s #%d", forwarder, seq), ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
		sh.mu.Lock()
		e = h.entries[seq]
	}
	if e == nil || e.taken {
		sh.mu.Unlock()
		return event.Delivery{}, false, nil
	}
	e.taken, e.handed = true, true
	data, redelivered, attempts := e.msg.Data(), sh.mayBeElsewhere(e), e.attempts
	sh.mu.Unlock()
	d, c, err := sh.fence(ctx, forwarder, seq, data, redelivered, attempts)
	if err != nil {
		// Another replica's attempt, or unreadable now: the server hands it out again.
		var claimed *errClaimed
		if errors.As(err, &claimed) {
			sh.letGo(h, seq, e, err)
			return event.Delivery{}, false, nil
		}
		sh.letGo(h, seq, e, nil)
		return d, false, sh.s.wrap(fmt.Sprintf("read %s #%d", forwarder, seq), err)
	}
	if c != nil {
		sh.mu.Lock()
		e.claim, e.retried = c, true
		sh.mu.Unlock()
	}
	return d, true, nil
}

// Record applies the outcomes of attempts, as Store.Record does (those of different
// entries at once), and hands each held entry whose outcome was applied back: acked
// (done), or nak'ed until its NextTry (retried), neither waiting for the server's word.
// A delivered entry this replica holds is not read again: its ack, confirmed by the
// server, removes it from a work-queue outbox. The outcomes applied go to the activity
// log, as Store.Record's do.
func (sh *Shared) Record(ctx context.Context, outcomes []event.Outcome) error {
	errs := applyOutcomes(outcomes, func(o event.Outcome) error {
		d := o.Delivery
		var known *heldMsg
		sh.mu.Lock()
		if h := sh.lanes[d.Forwarder]; h != nil {
			if e := h.entries[d.Seq]; e != nil {
				known = &heldMsg{msg: e.msg, retried: e.retried}
			}
		}
		sh.mu.Unlock()
		return sh.s.recordOutcome(ctx, o, known)
	})
	for i, o := range outcomes {
		if errs[i] != nil {
			continue // still held: the Dispatcher records it again
		}
		d := o.Delivery
		sh.mu.Lock()
		var e *heldEntry
		if h := sh.lanes[d.Forwarder]; h != nil && sh.drain && o.Verdict == event.Retrying {
			if e := h.entries[d.Seq]; e != nil {
				e.taken = false // held for the lane's next attempt (Entry)
				e.retried, e.attempts = true, d.Attempts
				e.claim = nil // the retry state was written without it
			}
			sh.mu.Unlock()
			continue
		} else if h != nil {
			e = h.entries[d.Seq]
			delete(h.entries, d.Seq)
			h.freeRoom()
		}
		sh.mu.Unlock()
		if e == nil {
			continue
		}
		var err error
		if o.Verdict == event.Retrying {
			err = e.msg.NakWithDelay(max(time.Until(d.NextTry), 0))
		} else {
			err = e.msg.Ack()
		}
		if err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) { // acked as it was recorded
			// The entry's state is recorded; the server hands it out again after AckWait.
			sh.s.log.Warn("handing an outbox entry back to the server failed", "forwarder", d.Forwarder, "seq", d.Seq, "err", err)
		}
	}
	return sh.s.settle(ctx, outcomes, errs)
}

// heartbeat sends in-progress acks for every held entry every third of AckWait, so
// that the server does not hand them to another replica while this one holds them.
func (sh *Shared) heartbeat() {
	defer close(sh.stopped)
	t := time.NewTicker(sh.ackWait / 3)
	defer t.Stop()
	for {
		select {
		case <-sh.stop:
			return
		case <-t.C:
		}
		type claimed struct {
			h   *held
			seq uint64
			e   *heldEntry
			c   attemptClaim
		}
		sh.mu.Lock()
		var msgs []jetstream.Msg
		var claims []claimed
		for _, h := range sh.lanes {
			for seq, e := range h.entries {
				msgs = append(msgs, e.msg)
				if e.taken && e.claim != nil {
					claims = append(claims, claimed{h, seq, e, *e.claim})
				}
			}
		}
		sh.mu.Unlock()
		for _, m := range msgs {
			_ = m.InProgress() // a failure: the server redelivers after AckWait, as for a dead replica
		}
		// Renewed at once, within a third of AckWait, so that a slow store does not hold
		// up the next in-progress acks.
		ctx, cancel := context.WithTimeout(context.Background(), min(sh.s.timeout, sh.ackWait/3))
		inParallel(len(claims), func(i int) error {
			c := claims[i]
			rev, err := sh.renew(ctx, c.h.forwarder, c.seq, c.c)
			sh.mu.Lock()
			defer sh.mu.Unlock()
			if e := c.e; e.claim != nil && e.claim.rev == c.c.rev {
				switch {
				case err == nil:
					e.claim = &attemptClaim{rev: rev, raw: c.c.raw}
				case lostWrite(err):
					e.claim = nil // recorded, or taken over
				}
			}
			return nil
		})
		cancel()
	}
}

// Close stops consuming and hands every held entry back to the server at once, so that
// the other replicas take it without waiting for AckWait. Call it after the Dispatcher
// stopped (an attempt still running would lose its entry to another replica).
func (sh *Shared) Close() error {
	sh.mu.Lock()
	if sh.closed {
		sh.mu.Unlock()
		return nil
	}
	sh.closed = true
	lanes := sh.lanes
	sh.mu.Unlock()
	close(sh.stop)
	<-sh.stopped
	for _, h := range lanes {
		h.cancel()
		<-h.done
		sh.mu.Lock()
		entries := h.entries
		h.entries = map[uint64]*heldEntry{}
		sh.mu.Unlock()
		for _, e := range entries {
			_ = e.msg.Nak()
		}
	}
	return nil
}
