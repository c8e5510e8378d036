package poller

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// liveSet is the chatbots a running Loop polls, by serial.
type liveSet struct {
	ctx      context.Context // Run's
	running  map[string]*runner
	leaving  map[string]*runner // removed, maybe still finishing a poll; by serial
	wg       sync.WaitGroup     // every runner's goroutine, removed ones finishing a poll included
	stopping bool               // Run's ctx is done: nothing starts any more
}

// runner is one chatbot's goroutine.
type runner struct {
	bot  event.Chatbot // as configured now; l.mu guards it
	stop chan struct{} // closed when the chatbot is removed
	done chan struct{} // closed when the goroutine has returned
	wake chan struct{} // the pace changed: measure a regular wait again
}

// pace is Interval and Lookback as SetPace set them.
type pace struct{ interval, lookback time.Duration }

// chatbots is a copy of the chatbots the Loop polls now.
func (l *Loop) chatbots() []event.Chatbot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.Chatbots)
}

// botOf is r's chatbot as configured now.
func (l *Loop) botOf(r *runner) event.Chatbot {
	l.mu.Lock()
	defer l.mu.Unlock()
	return r.bot
}

// startLocked starts bot's goroutine with a first wait of first; after a runner of the
// same serial that is still finishing a poll, it waits for that one to end first, so
// that one chatbot is never polled twice at once. l.mu must be held.
func (l *Loop) startLocked(bot event.Chatbot, first time.Duration) {
	var before chan struct{}
	if old := l.live.leaving[bot.Serial]; old != nil {
		before = old.done
		delete(l.live.leaving, bot.Serial)
	}
	r := &runner{bot: bot, stop: make(chan struct{}), done: make(chan struct{}), wake: make(chan struct{}, 1)}
	l.live.running[bot.Serial] = r
	ctx := l.live.ctx
	live := l.live
	l.live.wg.Go(func() {
		defer func() {
			l.mu.Lock()
			if live.leaving[bot.Serial] == r {
				delete(live.leaving, bot.Serial) // removed and over: nothing to wait for
			}
			l.mu.Unlock()
			close(r.done)
		}()
		if before != nil {
			select {
			case <-before:
			case <-ctx.Done():
				return
			}
		}
		l.run(ctx, r, first)
	})
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
				if r.bot.Interval != bot.Interval {
					wake(r) // a regular wait under way is measured again with the new interval
				}
				r.bot = bot
			} else {
				added = append(added, bot)
			}
		}
		for serial, r := range live.running {
			if !listed[serial] {
				close(r.stop)
				delete(live.running, serial)
				if live.leaving == nil {
					live.leaving = map[string]*runner{}
				}
				live.leaving[serial] = r // until it is started again, which waits for it
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
		wake(r)
	}
}

// stopped reports whether r's chatbot was removed.
func stopped(r *runner) bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// wake tells r's regular wait, if one is under way, that its interval changed.
func wake(r *runner) {
	select {
	case r.wake <- struct{}{}:
	default:
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

// await waits d before r's next poll and reports whether to poll: false once ctx is
// done or r was removed. A regular wait (the interval after a success) woken by a change
// of pace is measured again from its start with the new interval.
func (l *Loop) await(ctx context.Context, r *runner, d time.Duration, regular bool) bool {
	start := time.Now()
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-r.stop:
			return false
		default:
		}
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		case <-r.stop:
			return false
		case <-r.wake:
			if regular {
				t.Reset(max(time.Until(start.Add(jittered(l.intervalOf(l.botOf(r)), l.jitter()))), 0))
			}
		}
	}
}
