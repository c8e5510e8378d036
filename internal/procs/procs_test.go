package procs

import (
	"context"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// full is the runtime's default GOMAXPROCS on this machine.
func full(t *testing.T) int {
	t.Helper()
	runtime.SetDefaultGOMAXPROCS()
	n := runtime.GOMAXPROCS(0)
	if n < 2 {
		t.Skip("the machine has one processor: there is nothing to lower")
	}
	return n
}

// run starts s.Run and returns a func that stops it and waits until it returned.
func run(s *Scaler) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Run(ctx)
	}()
	return func() { cancel(); <-done }
}

func TestLowersWhenQuietAndRaisesAtOnceOnWork(t *testing.T) {
	n := full(t)
	s := New(10*time.Millisecond, nil)
	stop := run(s)
	defer stop()

	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 5*time.Second, time.Millisecond,
		"no work: the process should run on one processor")
	s.Work()
	require.Equal(t, n, runtime.GOMAXPROCS(0), "Work returned: the process runs on every processor")
	require.Eventually(t, func() bool { return runtime.GOMAXPROCS(0) == 1 }, 5*time.Second, time.Millisecond,
		"no work since: the process should go back to one processor")

	stop()
	require.Equal(t, n, runtime.GOMAXPROCS(0), "a stopped Scaler leaves the default behind")
}

// TestWorkDuringALoweringWins plays the tick and a Work step by step: a quiet period
// needs a tick that sees no Work since the one before, and a Work that comes between
// a tick's look and its lowering keeps the processors.
func TestWorkDuringALoweringWins(t *testing.T) {
	n := full(t)
	defer runtime.SetDefaultGOMAXPROCS()
	s := New(time.Hour, nil) // the test ticks

	s.Work()
	s.tick()
	require.Equal(t, n, runtime.GOMAXPROCS(0), "the tick saw work in its period")
	s.tick()
	require.Equal(t, 1, runtime.GOMAXPROCS(0), "a period without work")
	s.tick()
	require.Equal(t, 1, runtime.GOMAXPROCS(0))
	s.Work()
	require.Equal(t, n, runtime.GOMAXPROCS(0), "Work raises")

	s.tick() // sees the Work above
	require.False(t, s.busy.Swap(false), "the tick's look: no work since the last tick")
	s.Work() // comes before the lowering
	s.lower()
	require.Equal(t, n, runtime.GOMAXPROCS(0), "the Work between the look and the lowering keeps the processors")
}

// TestConcurrentWorkAndTicks is for the race detector: Work from many goroutines
// while ticks come as fast as they can; after, the Scaler still follows the rules.
func TestConcurrentWorkAndTicks(t *testing.T) {
	n := full(t)
	defer runtime.SetDefaultGOMAXPROCS()
	s := New(time.Hour, nil)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			default:
				s.tick()
			}
		}
	})
	var workers sync.WaitGroup
	for range 4 {
		workers.Go(func() {
			for range 100 {
				s.Work()
				runtime.Gosched()
			}
		})
	}
	workers.Wait()
	close(done)
	wg.Wait()

	s.Work()
	require.Equal(t, n, runtime.GOMAXPROCS(0))
	s.tick()
	s.tick()
	require.Equal(t, 1, runtime.GOMAXPROCS(0))
	s.Work()
	require.Equal(t, n, runtime.GOMAXPROCS(0))
}

func TestLeavesAnOperatorsGOMAXPROCSAlone(t *testing.T) {
	n := full(t)
	t.Setenv("GOMAXPROCS", "2")
	s := New(time.Millisecond, nil)
	stop := run(s)
	time.Sleep(50 * time.Millisecond) // fifty quiet periods
	require.Equal(t, n, runtime.GOMAXPROCS(0), "GOMAXPROCS is the operator's")
	s.Work()
	stop()
	require.Equal(t, n, runtime.GOMAXPROCS(0))
}
