package forwarders_test

import (
	"context"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/forwarders"
)

// A wall clock that jumps, forward past the retry budget and then far back, neither
// dead-letters a retrying entry nor holds it up: its retries go on at their pace.
func TestDispatcherRetryBudgetSurvivesWallClockJumps(t *testing.T) {
	target := newSink(t, func(int, string) int { return http.StatusServiceUnavailable })
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(1))
	require.NoError(t, err)
	var offset atomic.Int64
	d := &forwarders.Dispatcher{Outbox: st,
		Now: func() time.Time { return time.Now().Add(time.Duration(offset.Load())) },
		Routes: []forwarders.Route{{
			Forwarder: target.forwarder(t, "crm", time.Second),
			Retry:     forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsed: time.Minute},
		}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); require.NoError(t, <-done) }()

	require.Eventually(t, func() bool { return target.count() >= 2 }, 5*time.Second, 5*time.Millisecond)
	offset.Store(int64(2 * time.Hour)) // past the one-minute budget
	n := target.count()
	require.Eventually(t, func() bool { return target.count() >= n+4 }, 5*time.Second, 5*time.Millisecond,
		"retries go on after a forward jump")
	offset.Store(-int64(365 * 24 * time.Hour))
	n = target.count()
	require.Eventually(t, func() bool { return target.count() >= n+4 }, 5*time.Second, 5*time.Millisecond,
		"and after a backward one")

	dead, err := st.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	assert.Empty(t, dead, "a clock jump spent no retry budget")
}

// After a restart the wall-clock time since the first try is credited to the budget only
// up to attempts × max_interval: a clock that jumped while the daemon was down does not
// dead-letter the entry at its next failure.
func TestDispatcherBudgetAfterRestartIsBoundedByAttempts(t *testing.T) {
	target := newSink(t, func(int, string) int { return http.StatusServiceUnavailable })
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	failedBefore(t, st, 2, time.Now().Add(-2*time.Hour), time.Now())

	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{
		Forwarder: target.forwarder(t, "crm", time.Second),
		Retry:     forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsed: time.Minute},
	}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- d.Run(ctx) }()
	require.Eventually(t, func() bool { return target.count() >= 3 }, 5*time.Second, 5*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	dead, err := st.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	assert.Empty(t, dead)
}

// A stored next try far in the future (the wall clock went back since it was written)
// waits at most one max_interval.
func TestDispatcherStoredNextTryFarAheadWaitsAtMostMaxInterval(t *testing.T) {
	target := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	failedBefore(t, st, 1, time.Now(), time.Now().Add(365*24*time.Hour))

	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{
		Forwarder: target.forwarder(t, "crm", time.Second),
		Retry:     forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsed: time.Minute},
	}}}
	drain := make(chan error)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() { drain <- d.Drain(ctx) }()
	require.NoError(t, <-drain)
	require.NoError(t, ctx.Err(), "drain did not finish: the entry was held up")
	assert.Equal(t, 1, target.count())
}
