package poller

import (
	"container/heap"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/leadbridge/leadbridge/event"
)

// liveSet is the chatbots a running Loop polls, by serial, and their schedule.
type liveSet struct {
	ctx      context.Context // Run's
	running  map[string]*runner
	leaving  map[string]*runner // removed, maybe still finishing a poll; by serial
	queue    runQueue           // the runners waiting for their next poll, the earliest due first
	kick     chan struct{}      // the queue changed: the schedule looks at its head again
	work     chan *runner       // unbuffered: a send succeeds only into an idle poller
	wg       sync.WaitGroup     // the pollers, and runners waiting for a removed one's poll to end
	stopping bool               // Run's ctx is done: nothing starts any more
}

// runner is one chatbot's place in Run's schedule. l.mu guards its fields but bo, which
// only the poller holding the runner uses (one at a time).
type runner struct {
	bot     event.Chatbot // as configured now
	done    chan struct{} // closed once it is over: removed, after the poll under way if any
	over    bool          // ended: done is closed, or is once a removed chatbot's lease went
	stopped bool          // the chatbot was removed
	polling bool          // a poller holds it
	index   int           // its place in the queue; -1 when not in it
	due     time.Time     // its next poll (monotonic)
	since   time.Time     // when its wait began
	regular bool          // the wait is the interval after a success (not a backoff)
	bo      *backoff.ExponentialBackOff
}

// pace is Interval and Lookback as SetPace set them.
type pace struct{ interval, lookback time.Duration }

// chatbots is a copy of the chatbots the Loop polls now.
func (l *Loop) chatbots() []event.Chatbot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.Chatbots)
}

// startLocked schedules bot's first poll after a wait of first; after a runner of the
// same serial that is still finishing a poll, it waits for that one to end first, so
// that one chatbot is never polled twice at once. l.mu must be held.
func (l *Loop) startLocked(bot event.Chatbot, first time.Duration) {
	live := l.live
	r := &runner{bot: bot, done: make(chan struct{}), index: -1, bo: l.newBackOff(l.intervalOf(bot))}
	live.running[bot.Serial] = r
	r.due, r.since = time.Now().Add(first), time.Now()
	old := live.leaving[bot.Serial]
	if old == nil {
		l.queueLocked(r)
		return
	}
	delete(live.leaving, bot.Serial)
	live.wg.Go(func() {
		select {
		case <-old.done:
		case <-live.ctx.Done():
			return
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if !r.stopped {
			l.queueLocked(r)
		}
	})
}

// queueLocked puts r in the schedule at r.due. l.mu must be held.
func (l *Loop) queueLocked(r *runner) {
	heap.Push(&l.live.queue, r)
	l.kickLocked()
}

// kickLocked wakes the schedule to look at the head of the queue again. l.mu must be held.
func (l *Loop) kickLocked() {
	select {
	case l.live.kick <- struct{}{}:
	default:
	}
}

// stopLocked removes r's chatbot: out of the schedule at once, or after the poll under
// way. l.mu must be held.
func (l *Loop) stopLocked(r *runner) {
	r.stopped = true
	if r.index >= 0 {
		heap.Remove(&l.live.queue, r.index)
	}
	if !r.polling {
		l.endLocked(r)
	}
}

// endLocked marks r over: no poll of it is under way or will start. A removed chatbot's
// lease goes first (its done closes after): a runner of the same chatbot, added again,
// waits for that, and Run for every one before it releases the leases left. l.mu must
// be held.
func (l *Loop) endLocked(r *runner) {
	if r.over {
		return
	}
	r.over = true
	if !r.stopped || l.Leaser == nil {
		l.closeLocked(r)
		return
	}
	// Removed from the config: its lease goes now, not when it lapses. Not under l.mu
	// (a round trip to the store).
	live := l.live
	live.wg.Go(func() {
		l.dropLease(live.ctx, r.bot.Serial, "the chatbot was removed from the config")
		l.mu.Lock()
		defer l.mu.Unlock()
		l.closeLocked(r)
	})
}

// closeLocked closes r.done: r is over. l.mu must be held.
func (l *Loop) closeLocked(r *runner) {
	if l.live.leaving[r.bot.Serial] == r {
		delete(l.live.leaving, r.bot.Serial) // removed and over: nothing to wait for
	}
	close(r.done)
}

// rewaitLocked measures r's regular wait, if it is waiting one, again from its start
// with the interval in force (a change of pace). l.mu must be held.
func (l *Loop) rewaitLocked(r *runner) {
	if r.index < 0 || !r.regular {
		return // polling (its next wait takes the new interval) or backing off
	}
	r.due = r.since.Add(jittered(l.intervalOf(r.bot), l.jitter()))
	heap.Fix(&l.live.queue, r.index)
	l.kickLocked()
}

// SetChatbots makes bots the chatbots the Loop polls. Before Run it only sets Chatbots.
// While Run runs, a chatbot not polled before starts at once (each account's added
// chatbots spread over min(interval, 1m) with jitter on, like the first round of Run),
// with the store's rule for a chatbot never polled (poll.initial); a chatbot no longer
// listed stops after the poll under way, whose records are taken as usual; a chatbot
// whose settings changed (its name, account or lookback, say) takes them at its next
// poll, and a new interval of its own applies to the regular wait under way, as
// SetPace's does. It returns an error, changing nothing, for a chatbot without a serial,
// listed twice, or of an account without a Client (call SetClients first).
func (l *Loop) SetChatbots(bots []event.Chatbot) error {
	if err := l.checkChatbots(bots); err != nil {
		return err
	}
	l.mu.Lock()
	var added []event.Chatbot
	if live := l.live; live != nil && !live.stopping {
		listed := make(map[string]bool, len(bots))
		for _, bot := range bots {
			listed[bot.Serial] = true
			if r := live.running[bot.Serial]; r != nil {
				changed := r.bot.Interval != bot.Interval
				r.bot = bot
				if changed {
					l.rewaitLocked(r) // a regular wait under way is measured again with the new interval
				}
			} else {
				added = append(added, bot)
			}
		}
		for serial, r := range live.running {
			if !listed[serial] {
				delete(live.running, serial)
				if live.leaving == nil {
					live.leaving = map[string]*runner{}
				}
				live.leaving[serial] = r // until its poll ends, or it is started again, which waits for it
				l.stopLocked(r)
			}
		}
	}
	running := l.live != nil && !l.live.stopping
	l.Chatbots = slices.Clone(bots)
	l.mu.Unlock()
	if running {
		for account, group := range byAccount(bots) {
			l.warnOverBudget(account, group) // as at the start: chatbots, intervals or budgets may have changed
		}
	}
	if len(added) == 0 {
		return nil
	}
	waits := l.firstWaits(added)
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, bot := range added {
		// Run may have stopped, or another SetChatbots started or removed the chatbot,
		// while the lock was let go.
		if l.live.stopping || !slices.ContainsFunc(l.Chatbots, func(b event.Chatbot) bool { return b.Serial == bot.Serial }) ||
			l.live.running[bot.Serial] != nil {
			continue
		}
		l.startLocked(bot, waits[bot.Serial])
	}
	return nil
}

// SetPace changes Interval and Lookback (0: the default) while the Loop runs: each
// chatbot's window takes the lookback at its next poll, and a chatbot waiting out a
// regular interval waits the new one from its last poll instead (at once if that is
// past); a chatbot backing off after a failure keeps its backoff.
func (l *Loop) SetPace(interval, lookback time.Duration) {
	l.pace.Store(&pace{interval: interval, lookback: lookback})
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.live == nil {
		return
	}
	for _, r := range l.live.running {
		l.rewaitLocked(r)
	}
}

// SetClients makes clients the Clients of every poll that starts from now on, by
// account (a rotated API key, a new base URL, timeout or max_rps; an added account);
// polls under way finish with the old ones. Keep an unchanged account's Client in the
// map, so that its Budget, and any 429 hold on it, carries on. Call it before
// SetChatbots adds chatbots of a new account.
func (l *Loop) SetClients(clients map[string]*Client) {
	own := make(map[string]*Client, len(clients))
	for account, c := range clients {
		own[account] = c
	}
	l.clients.Store(&own)
}
