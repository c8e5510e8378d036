package poller

import (
	"container/heap"
	"context"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// idlePollers is how many pollers Run keeps waiting for the next due poll. A poll that
// falls due while all of them are busy gets a poller of its own, which ends after it,
// so that a slow or failing chatbot never delays another however many there are; and
// a thousand chatbots that each wait a minute between polls do not each hold a
// goroutine, whose stack the garbage collector shrinks while it sleeps and the next
// poll grows again.
const idlePollers = 8

// nextPoll is a chatbot's next poll in Run's schedule.
type nextPoll struct {
	at  time.Time // monotonic
	bot int       // index in Chatbots
}

// pollQueue is Run's schedule: the chatbots not being polled, the earliest due first.
type pollQueue []nextPoll

func (q pollQueue) Len() int { return len(q) }
func (q pollQueue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].bot < q[j].bot
}
func (q pollQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *pollQueue) Push(x any)   { *q = append(*q, x.(nextPoll)) }
func (q *pollQueue) Pop() any {
	old := *q
	p := old[len(old)-1]
	*q = old[:len(old)-1]
	return p
}

// schedule polls every chatbot on its own schedule until ctx is done, then waits for
// the polls under way: the first poll of the i-th after firstWait, then after Interval
// (jittered) following a success, or the backoff (or Retry-After) following a failure.
func (l *Loop) schedule(ctx context.Context) {
	n := len(l.Chatbots)
	queue := make(pollQueue, 0, n)
	start := time.Now()
	for i := range n {
		queue = append(queue, nextPoll{at: start.Add(l.firstWait(i, n)), bot: i})
	}
	heap.Init(&queue)
	// A chatbot is polled by one poller at a time, so its backoff (nil while it
	// succeeds) passes from poller to poller through the channels.
	backoffs := make([]*backoff.ExponentialBackOff, n)
	work := make(chan int) // unbuffered: a send succeeds only when a poller is idle
	done := make(chan nextPoll)
	var wg sync.WaitGroup
	defer wg.Wait()
	pollOne := func(i int) {
		wait := l.pollAndWait(ctx, i, &backoffs[i])
		select {
		case done <- nextPoll{at: time.Now().Add(wait), bot: i}:
		case <-ctx.Done():
		}
	}
	for range min(idlePollers, n) {
		wg.Go(func() {
			for i := range work {
				pollOne(i)
			}
		})
	}
	defer close(work)

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		for len(queue) > 0 && !queue[0].at.After(time.Now()) {
			i := heap.Pop(&queue).(nextPoll).bot
			select {
			case work <- i:
			default: // every idle poller is busy
				wg.Go(func() { pollOne(i) })
			}
		}
		if len(queue) > 0 {
			timer.Reset(time.Until(queue[0].at))
		}
		select {
		case <-ctx.Done():
			return
		case p := <-done:
			heap.Push(&queue, p)
		case <-timer.C:
		}
	}
}

// pollAndWait polls the i-th chatbot and returns the wait before its next poll: Interval
// (jittered) after a success, the next backoff of *bo (made on the first failure, dropped
// on a success) after a failure, which it logs.
func (l *Loop) pollAndWait(ctx context.Context, i int, bo **backoff.ExponentialBackOff) time.Duration {
	bot := l.Chatbots[i]
	_, err := l.poll(ctx, bot)
	if ctx.Err() != nil {
		return 0
	}
	if err == nil {
		*bo = nil
		return jittered(l.interval(), l.jitter())
	}
	if *bo == nil {
		*bo = l.newBackOff()
	}
	wait := retryWait(*bo, err)
	l.logFailure(bot, err, wait)
	return wait
}
