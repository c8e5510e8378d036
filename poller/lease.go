package poller

import (
	"context"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Leaser shares the chatbots among replicas polling one shared store: a replica polls a
// chatbot only while it holds the chatbot's lease. Its methods must be safe for
// concurrent use.
type Leaser interface {
	// Acquire takes the lease on chatbot serial for ttl, or renews it when this replica
	// holds it; false (and no error) when another replica holds it.
	Acquire(ctx context.Context, serial string, ttl time.Duration) (bool, error)
	// Release gives up this replica's lease on serial, if it holds it, so that another
	// replica may take it at once.
	Release(ctx context.Context, serial string) error
	// Join announces this replica as live for ttl and returns how many replicas are
	// live, this one included.
	Join(ctx context.Context, ttl time.Duration) (int, error)
	// Leave announces that this replica stops.
	Leave(ctx context.Context) error
}

const (
	// leaseIntervals is a lease's TTL in poll intervals of its chatbot: renewed before
	// every poll, it outlasts a late poll or two, and a dead replica's chatbots are free
	// again that long after its last poll.
	leaseIntervals = 3
	// joinEvery and joinFor are how often a replica renews its presence, and its TTL, in
	// poll intervals. The TTL is well under a lease's, so that a dead replica is counted
	// out (and the others make room for its chatbots) before its leases expire.
	joinEvery = 1.0 / 3
	joinFor   = 1.5
	// leaseTimeout bounds the lease calls made after Run's ctx is done (releases).
	leaseTimeout = 5 * time.Second
)

// leases is what a Loop with a Leaser knows of its leases.
type leases struct {
	mu       sync.Mutex
	held     map[string]bool // the chatbots this replica holds, by serial
	replicas int             // live replicas as last counted, at least 1
	counted  time.Time       // when (monotonic), zero if never
}

// Leases reports how many chatbot leases this replica holds and how many replicas it
// last counted live (itself included); 0 and 0 with no Leaser. Safe to call while Run
// runs (for metrics).
func (l *Loop) Leases() (held, replicas int) {
	if l.Leaser == nil {
		return 0, 0
	}
	ls := &l.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return len(ls.held), max(ls.replicas, 1)
}

// leaseTTL is the lease TTL of a chatbot polled every interval.
func leaseTTL(interval time.Duration) time.Duration { return leaseIntervals * interval }

// share is how many leases one of replicas replicas may hold of n chatbots: the
// ceiling of n/replicas, so that together they can hold all and none holds more than
// one above another's fair part.
func share(n, replicas int) int {
	replicas = max(replicas, 1)
	return max((n+replicas-1)/replicas, 1)
}

// joinLeases announces this replica and counts the live ones, then keeps doing so
// every third of an interval until ctx is done; it returns after the first count. With
// no Leaser it does nothing.
func (l *Loop) joinLeases(ctx context.Context, wg *sync.WaitGroup) {
	if l.Leaser == nil {
		return
	}
	l.countReplicas(ctx)
	wg.Go(func() {
		for sleep(ctx, l.presence(joinEvery)) {
			l.countReplicas(ctx)
		}
	})
}

// presence is f poll intervals (poll.interval, as SetPace changed it).
func (l *Loop) presence(f float64) time.Duration {
	return time.Duration(f * float64(l.intervalOf(event.Chatbot{})))
}

// countReplicas announces this replica and notes how many are live; a failure keeps
// the last count (1 at first: then this replica may hold every chatbot).
func (l *Loop) countReplicas(ctx context.Context) {
	n, err := l.Leaser.Join(ctx, l.presence(joinFor))
	if err != nil {
		if ctx.Err() == nil {
			l.logger().Warn("could not announce this replica to the others; the fair share of chatbots keeps the last count",
				"error", err.Error())
		}
		return
	}
	ls := &l.leases
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if n != ls.replicas && !ls.counted.IsZero() {
		l.logger().Info("the number of live replicas changed: chatbots are shared again", "replicas", n, "was", ls.replicas)
	}
	ls.replicas, ls.counted = n, time.Now()
}

// leased reports whether this replica may poll bot now: with no Leaser, always; else
// while it holds bot's lease, which it takes (or renews) here for leaseTTL of bot's
// interval. A replica holding more than its share (share of the chatbots among the live
// replicas) gives this lease up; one holding its share takes no more. A failure of the
// lease store is logged and changes nothing: a chatbot held goes on being polled.
//
// Below its share, a replica tries every chatbot it does not hold, however many tries
// are under way, and gives back at once a lease it took beyond its share (others taken
// meanwhile): most tries find the lease held by another replica, so reserving a place
// for each try would let the tries at held chatbots, due together every interval, crowd
// out the one at a free chatbot round after round.
func (l *Loop) leased(ctx context.Context, bot event.Chatbot) bool {
	if l.Leaser == nil {
		return true
	}
	ls := &l.leases
	l.mu.Lock()
	n := len(l.Chatbots) // not a copy: this runs before every poll of every chatbot
	l.mu.Unlock()
	ls.mu.Lock()
	held := ls.held[bot.Serial]
	switch {
	case held && len(ls.held) > share(n, ls.replicas):
		delete(ls.held, bot.Serial) // counted out at once, so that only the surplus goes
		ls.mu.Unlock()
		l.releaseLease(ctx, bot.Serial, "this replica holds more than its share of the chatbots")
		return false
	case !held && len(ls.held) >= share(n, ls.replicas):
		ls.mu.Unlock()
		return false
	}
	ls.mu.Unlock()

	ok, err := l.Leaser.Acquire(ctx, bot.Serial, leaseTTL(l.intervalOf(bot)))
	if err != nil {
		if ctx.Err() == nil {
			l.logger().Warn("could not take or renew a chatbot's lease", "chatbot", bot.Serial, "held", held, "error", err.Error())
		}
		ls.mu.Lock()
		defer ls.mu.Unlock()
		return held && ls.held[bot.Serial]
	}
	ls.mu.Lock()
	switch {
	case ok && !held && len(ls.held) >= share(n, ls.replicas):
		ls.mu.Unlock() // tries at other chatbots took the share meanwhile: this one goes back
		l.releaseLease(ctx, bot.Serial, "this replica took its share of the chatbots meanwhile")
		return false
	case ok && !held:
		if ls.held == nil {
			ls.held = map[string]bool{}
		}
		ls.held[bot.Serial] = true
		ls.mu.Unlock()
		l.logger().Info("took the chatbot's lease: this replica polls it", "chatbot", bot.Serial)
	case !ok && held:
		delete(ls.held, bot.Serial)
		ls.mu.Unlock()
		l.logger().Warn("the chatbot's lease passed to another replica (it lapsed): that one polls it", "chatbot", bot.Serial)
	default:
		ls.mu.Unlock()
	}
	return ok
}

// renewWhile renews bot's lease every third of its TTL until done is closed, so that a
// poll longer than the TTL (a long catch-up) keeps it. Nothing with no Leaser.
func (l *Loop) renewWhile(ctx context.Context, bot event.Chatbot, done <-chan struct{}) {
	if l.Leaser == nil {
		return
	}
	ttl := leaseTTL(l.intervalOf(bot))
	t := time.NewTicker(ttl / 3)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-ctx.Done():
			return
		case <-t.C:
			held, err := l.Leaser.Acquire(ctx, bot.Serial, ttl)
			switch {
			case err != nil && ctx.Err() == nil:
				l.logger().Warn("could not renew a chatbot's lease during a long poll", "chatbot", bot.Serial, "error", err.Error())
			case err == nil && !held:
				// It lapsed (renewals failed for a whole TTL) and another replica took it:
				// this poll ends as it is (its records are claimed once whoever takes
				// them), and the next check finds the lease gone.
				l.logger().Warn("the chatbot's lease passed to another replica during a long poll", "chatbot", bot.Serial)
			}
		}
	}
}

// dropLease releases serial's lease, for why, if this replica holds it.
func (l *Loop) dropLease(ctx context.Context, serial, why string) {
	if l.Leaser == nil {
		return
	}
	ls := &l.leases
	ls.mu.Lock()
	held := ls.held[serial]
	delete(ls.held, serial)
	ls.mu.Unlock()
	if held {
		l.releaseLease(ctx, serial, why)
	}
}

// releaseLeases releases every lease this replica still holds: Run is stopping, after
// its last poll.
func (l *Loop) releaseLeases(ctx context.Context) {
	if l.Leaser == nil {
		return
	}
	ls := &l.leases
	ls.mu.Lock()
	serials := make([]string, 0, len(ls.held))
	for serial := range ls.held {
		serials = append(serials, serial)
	}
	ls.mu.Unlock()
	for _, serial := range serials {
		l.dropLease(ctx, serial, "this replica stops")
	}
}

// releaseLease releases serial's lease, also once ctx is done (a clean stop), within
// leaseTimeout.
func (l *Loop) releaseLease(ctx context.Context, serial, why string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseTimeout)
	defer cancel()
	if err := l.Leaser.Release(rctx, serial); err != nil {
		l.logger().Warn("could not release a chatbot's lease; it lapses by itself", "chatbot", serial, "error", err.Error())
		return
	}
	l.logger().Info("released the chatbot's lease", "chatbot", serial, "reason", why)
}

// leaveLeases announces that this replica stops, once every runner has released its
// lease. Nothing with no Leaser.
func (l *Loop) leaveLeases(ctx context.Context) {
	if l.Leaser == nil {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), leaseTimeout)
	defer cancel()
	if err := l.Leaser.Leave(rctx); err != nil {
		l.logger().Warn("could not announce this replica's stop; the others count it out when its presence lapses", "error", err.Error())
	}
}

// pollLeased is poll, renewing bot's lease meanwhile when there is a Leaser.
func (l *Loop) pollLeased(ctx context.Context, bot event.Chatbot, c *Client) (event.Ingested, error) {
	if l.Leaser == nil {
		return l.poll(ctx, bot, c)
	}
	done := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		l.renewWhile(ctx, bot, done)
	}()
	res, err := l.poll(ctx, bot, c)
	close(done)
	<-renewed
	return res, err
}
