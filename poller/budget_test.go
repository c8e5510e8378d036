package poller

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// maxInWindow is the most turns in any window of length w.
func maxInWindow(turns []time.Time, w time.Duration) int {
	most := 0
	for i := range turns {
		n := 0
		for _, t := range turns[i:] {
			if t.Sub(turns[i]) < w {
				n++
			}
		}
		most = max(most, n)
	}
	return most
}

// A start with many chatbots asking at once is no burst: turns come 1/rate apart, in
// the order asked, so every second holds at most rate calls.
func TestBudgetScheduleIsBoundedAndInOrder(t *testing.T) {
	b := NewBudget(5)
	var turns []time.Time
	for i := range 1000 { // 1,000 chatbots started together
		slot, _ := b.reserve(t0.Add(time.Duration(i) * time.Microsecond))
		turns = append(turns, slot)
	}
	for i := 1; i < len(turns); i++ {
		require.Equal(t, 200*time.Millisecond, turns[i].Sub(turns[i-1]), "turn %d", i)
	}
	assert.Equal(t, 5, maxInWindow(turns, time.Second), "at most max_rps calls in any second")
	assert.Equal(t, 1, maxInWindow(turns[:10], 200*time.Millisecond))

	// An idle budget gives the turn at once, and a late asker does not get the past.
	b = NewBudget(2)
	slot, _ := b.reserve(t0)
	assert.Equal(t, t0, slot)
	slot, _ = b.reserve(t0.Add(time.Hour))
	assert.Equal(t, t0.Add(time.Hour), slot)
}

// Turns are first come, first served: a chatbot that asks once, behind a crowd of
// chatbots asking again and again, gets its turn after those ahead of it only.
func TestBudgetIsFairFirstComeFirstServed(t *testing.T) {
	b := NewBudget(10)
	for i := range 50 {
		b.reserve(t0.Add(time.Duration(i) * time.Millisecond)) // the busy ones
	}
	quiet, _ := b.reserve(t0.Add(50 * time.Millisecond))
	assert.Equal(t, t0.Add(5*time.Second), quiet, "the 51st turn, 100ms apart")
	later, _ := b.reserve(t0.Add(60 * time.Millisecond))
	assert.True(t, later.After(quiet), "those asking after it wait behind it")
}

// A 429 holds the account's queue for Retry-After, moving every queued turn back by the
// same amount (order and spacing kept); a second 429 for the same hold does not add up.
func TestBudgetHoldsTheQueueAfterA429(t *testing.T) {
	b := NewBudget(10)
	s1, base1 := b.reserve(t0)
	s2, base2 := b.reserve(t0)
	require.Equal(t, t0.Add(100*time.Millisecond), s2)

	b.Throttled(t0.Add(10*time.Millisecond), 30*time.Second)
	b.Throttled(t0.Add(20*time.Millisecond), 30*time.Second-10*time.Millisecond) // same end: no more
	assert.Equal(t, 30*time.Second, b.shifted-base1, "the queue moved back once")
	assert.Equal(t, b.shifted-base1, b.shifted-base2)
	assert.Equal(t, t0.Add(30*time.Second+100*time.Millisecond), s2.Add(b.shifted-base2), "its turn moved with the queue")
	s3, _ := b.reserve(t0.Add(time.Second))
	assert.Equal(t, s2.Add(b.shifted-base2).Add(100*time.Millisecond), s3, "a new asker queues after the moved ones")
	_ = s1

	// A Retry-After beyond maxRetryAfter is cut to it.
	b = NewBudget(10)
	b.Throttled(t0, 24*time.Hour)
	slot, _ := b.reserve(t0)
	assert.Equal(t, t0.Add(maxRetryAfter), slot)
}

// Without Retry-After, a 429 holds the account 1s, then 2s, 4s… up to a minute while
// 429s go on; an answer that is not a 429 starts over.
func TestBudgetHoldWithoutRetryAfterDoubles(t *testing.T) {
	b := NewBudget(1000)
	now := t0
	var holds []time.Duration
	for range 8 {
		b.Throttled(now, 0)
		slot, _ := b.reserve(now)
		holds = append(holds, slot.Sub(now))
		now = slot.Add(time.Second)
	}
	s := time.Second
	assert.Equal(t, []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s}, holds)
	b.Answered()
	b.Throttled(now, 0)
	slot, _ := b.reserve(now)
	assert.Equal(t, time.Second, slot.Sub(now))
}

// A caller that stops waiting gives its turn back when no one queued behind it, and
// gets its context's error.
func TestBudgetWaitEndsWithItsContext(t *testing.T) {
	b := NewBudget(0.001) // a turn every 1000s
	require.NoError(t, b.Wait(t.Context()), "the first turn is now")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	assert.ErrorIs(t, b.Wait(ctx), context.Canceled)
	b.mu.Lock()
	next := b.next
	b.mu.Unlock()
	slot, _ := b.reserve(time.Now())
	assert.Equal(t, next, slot, "the abandoned turn was given back")

	var none *Budget
	assert.NoError(t, none.Wait(t.Context()), "a nil Budget does not limit")
	none.Throttled(time.Now(), time.Hour)
	none.Answered()
}

// SetRate (a reload's new max_rps) spaces the turns asked from then on at the new rate,
// after those already given, and keeps a 429's hold.
func TestBudgetSetRateKeepsTheQueueAndTheHold(t *testing.T) {
	b := NewBudget(5)
	first, _ := b.reserve(t0)
	second, _ := b.reserve(t0)
	require.Equal(t, first.Add(200*time.Millisecond), second)
	b.SetRate(1)
	assert.Equal(t, 1.0, b.Rate())
	third, _ := b.reserve(t0)
	assert.Equal(t, second.Add(200*time.Millisecond), third, "the turn after the last one given, spaced as it was given")
	fourth, _ := b.reserve(t0)
	assert.Equal(t, third.Add(time.Second), fourth, "then 1/rate apart")

	b.Throttled(t0, time.Hour)
	b.SetRate(10)
	after, _ := b.reserve(t0)
	assert.False(t, after.Before(t0.Add(time.Hour)), "the hold stands")
}
