package poller

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

// Regular polls due close together share one wake-up: with the poll that falls due, the
// schedule hands over one due within its slack (half its jitter, at most maxEarly) at
// once. A backoff's wait (a failure, a Retry-After) is never cut short.
func TestScheduleHandsOverRegularPollsDueCloseTogether(t *testing.T) {
	l := &Loop{Interval: time.Hour, Jitter: 0.5} // slack: maxEarly
	ctx, cancel := context.WithCancel(t.Context())
	live := &liveSet{ctx: ctx, running: map[string]*runner{}, kick: make(chan struct{}, 1), work: make(chan *runner)}
	l.live = live
	now := time.Now()
	at := func(serial string, after time.Duration, regular bool) *runner {
		return &runner{bot: event.Chatbot{Serial: serial}, index: -1, due: now.Add(after), since: now,
			regular: regular, bo: l.newBackOff(time.Hour)}
	}
	// The first (a first poll, never early) falls due once the pollers below wait; the
	// second, a regular one, 300ms after it, within maxEarly; the backoff later still.
	first, near, backedOff := at("a", 100*time.Millisecond, false), at("b", 400*time.Millisecond, true), at("c", 700*time.Millisecond, false)
	l.mu.Lock()
	for _, r := range []*runner{first, near, backedOff, at("d", time.Hour, true)} {
		l.queueLocked(r)
	}
	l.mu.Unlock()
	type handed struct {
		r  *runner
		at time.Time
	}
	got := make(chan handed, 4)
	for range 3 { // idle pollers, waiting before the first poll falls due
		go func() {
			for r := range live.work {
				got <- handed{r, time.Now()}
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.schedule(live)
	}()

	h1, h2 := <-got, <-got
	assert.ElementsMatch(t, []*runner{first, near}, []*runner{h1.r, h2.r})
	for _, h := range []handed{h1, h2} {
		assert.True(t, h.at.Before(near.due), "the near poll was handed over with the first, before its due time")
	}
	h3 := <-got
	require.Same(t, backedOff, h3.r)
	assert.False(t, h3.at.Before(backedOff.due), "a backoff's wait is never cut short")
	cancel()
	<-done
}

// A poll is taken early only by an idle poller: with none idle, it waits its due time,
// then gets a poller of its own (which here fails at once: the chatbot has no Client).
func TestScheduleStartsNoPollerEarly(t *testing.T) {
	failed := make(chan time.Time, 4)
	l := &Loop{Interval: time.Hour, Jitter: 0.5, Logger: slog.New(handlerFunc(func(r slog.Record) {
		if r.Message == "LeadList poll failed" {
			failed <- time.Now()
		}
	}))}
	ctx, cancel := context.WithCancel(t.Context())
	live := &liveSet{ctx: ctx, running: map[string]*runner{}, kick: make(chan struct{}, 1), work: make(chan *runner)}
	l.live = live
	now := time.Now()
	first := &runner{bot: event.Chatbot{Serial: "a"}, index: -1, due: now.Add(100 * time.Millisecond), since: now, bo: l.newBackOff(time.Hour)}
	near := &runner{bot: event.Chatbot{Serial: "b"}, index: -1, due: now.Add(400 * time.Millisecond), since: now, regular: true, bo: l.newBackOff(time.Hour)}
	nearDue := near.due // its poller moves it on
	l.mu.Lock()
	l.queueLocked(first)
	l.queueLocked(near)
	l.mu.Unlock()
	took := make(chan *runner, 1)
	go func() { took <- <-live.work }() // the one idle poller, which then stays busy
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.schedule(live)
	}()

	require.Same(t, first, <-took)
	at := <-failed // near's own poller, which fails for want of a Client
	assert.False(t, at.Before(nearDue), "near got a poller of its own before its due time")
	cancel()
	<-done
}

// handlerFunc is a slog.Handler calling f with every record.
type handlerFunc func(slog.Record)

func (f handlerFunc) Enabled(context.Context, slog.Level) bool      { return true }
func (f handlerFunc) Handle(_ context.Context, r slog.Record) error { f(r); return nil }
func (f handlerFunc) WithAttrs([]slog.Attr) slog.Handler            { return f }
func (f handlerFunc) WithGroup(string) slog.Handler                 { return f }
