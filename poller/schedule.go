package poller

import (
	"container/heap"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// idlePollers is how many pollers Run keeps waiting for the next due poll. A poll that
// falls due while all of them are busy gets a poller of its own, which ends after it,
// so that a slow or failing chatbot never delays another however many there are; and
// a thousand chatbots that each wait a minute between polls do not each hold a
// goroutine, whose stack the garbage collector shrinks while it sleeps and the next
// poll grows again. They are as many as the connections a Client keeps open
// (idleConns): polls due together (see early) then all run at once on open
// connections, and their answers wake the process together instead of one by one
// (1,000 chatbots a minute: 8 pollers cost 6% more CPU than 16, in paired runs).
const idlePollers = idleConns

// runQueue is Run's schedule: the runners waiting for their next poll, a heap by due
// time. l.mu guards it.
type runQueue []*runner

func (q runQueue) Len() int           { return len(q) }
func (q runQueue) Less(i, j int) bool { return q[i].due.Before(q[j].due) }
func (q runQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].index, q[j].index = i, j
}
func (q *runQueue) Push(x any) {
	r := x.(*runner)
	r.index = len(*q)
	*q = append(*q, r)
}
func (q *runQueue) Pop() any {
	old := *q
	r := old[len(old)-1]
	old[len(old)-1] = nil
	r.index = -1
	*q = old[:len(old)-1]
	return r
}

// schedule hands each runner to a poller when its poll falls due, until Run's ctx is
// done; then it closes live.work, and the idle pollers end.
func (l *Loop) schedule(live *liveSet) {
	defer close(live.work)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		wait := time.Hour
		l.mu.Lock()
	queue:
		for len(live.queue) > 0 {
			r := live.queue[0]
			d := time.Until(r.due)
			if d > 0 && !(r.regular && d <= l.early(r.bot)) {
				wait = d
				break
			}
			heap.Pop(&live.queue)
			r.polling = true
			select {
			case live.work <- r: // an idle poller takes it
			default:
				if d > 0 { // early: only an idle poller may take it, else it waits its time
					r.polling = false
					heap.Push(&live.queue, r)
					wait = d
					break queue
				}
				live.wg.Go(func() { l.pollRunner(live, r) }) // none is idle: a poller of its own, for this poll only
			}
		}
		l.mu.Unlock()
		timer.Reset(wait)
		select {
		case <-live.ctx.Done():
			return
		case <-live.kick:
		case <-timer.C:
		}
	}
}

// maxEarly bounds how early a regular poll may start to share a wake-up (see early).
const maxEarly = 5 * time.Second

// early is how long before its due time a poll of bot after a success may start when
// the schedule wakes for another one: half its jitter, at most maxEarly, none with
// jitter off. Polls due close together then share one wake-up of the process, which
// costs an idle daemon more CPU than the poll itself: the wider the window, the more
// polls share one (at 1,000 chatbots a minute, an eighth of the jitter, at most 0.5 s,
// cost 1.10% of a core, half of it 0.95%). Only an idle poller takes a poll early: none
// gets a poller of its own before its time.
func (l *Loop) early(bot event.Chatbot) time.Duration {
	return min(time.Duration(float64(l.intervalOf(bot))*l.jitter()/2), maxEarly)
}

// poller is one of Run's idle pollers: it polls the runners handed to it until
// live.work is closed.
func (l *Loop) poller(live *liveSet) {
	for r := range live.work {
		l.pollRunner(live, r)
	}
}

// pollRunner polls r's chatbot, taken as it is configured now, and puts it back in the
// schedule: after its interval (jittered) following a success, after its backoff (or
// Retry-After) following a failure; or ends it if it was removed meanwhile.
func (l *Loop) pollRunner(live *liveSet, r *runner) {
	ctx := live.ctx
	l.mu.Lock()
	bot, stopped := r.bot, r.stopped
	l.mu.Unlock()
	c := l.clientFor(bot)
	var wait time.Duration
	regular := false
	if c == nil && stopped {
		// removed with its account while this poll was due: it is over
	} else if !l.leased(ctx, bot) {
		regular = true // another replica polls it: look again after its interval
	} else if _, err := l.pollLeased(ctx, bot, c); err == nil {
		r.bo.Reset()
		regular = true
	} else if ctx.Err() == nil {
		wait = retryWait(r.bo, err)
		l.logFailure(bot, err, wait)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	r.polling = false
	if r.stopped || ctx.Err() != nil {
		l.endLocked(r)
		return
	}
	if regular {
		wait = jittered(l.intervalOf(r.bot), l.jitter()) // its interval now: SetChatbots or SetPace may have changed it
	}
	r.since, r.regular = time.Now(), regular
	r.due = r.since.Add(wait)
	l.queueLocked(r)
}
