// Package procs runs an idle daemon on one processor, and a busy one on all it may use.
//
// An idle leadbridge wakes up often to make polls that find nothing new. With more
// than one processor (GOMAXPROCS), each wake-up also wakes the Go runtime's idle
// threads to look for work there is none of, and keeps its monitor thread polling: on
// the 2-core development machine that was about a fifth of an idle daemon's CPU (the
// README's "Performance" has the figures). A Scaler lowers GOMAXPROCS to 1 once the
// process had no work for a while, and restores the runtime's default as soon as it
// is told of work.
package procs

import (
	"context"
	"log/slog"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultQuiet is how long a daemon goes without work before it runs on one processor.
const DefaultQuiet = 30 * time.Second

// Scaler sets GOMAXPROCS by whether the process has work: the runtime's default while
// it has, 1 once it had none for a quiet period. Work says that there is; Run watches.
// An operator's GOMAXPROCS (the environment variable) is left alone, as is a machine
// whose default is one processor already: such a Scaler does nothing. Its methods are
// safe for concurrent use.
type Scaler struct {
	quiet   time.Duration
	logger  *slog.Logger
	enabled bool // it may change GOMAXPROCS

	mu   sync.Mutex  // orders the changes of GOMAXPROCS
	low  atomic.Bool // GOMAXPROCS is 1, or about to be
	busy atomic.Bool // Work was called since Run last looked
}

// New returns a Scaler that lowers GOMAXPROCS after quiet (DefaultQuiet if 0) without
// work. logger (nil: none) gets a debug line at each change.
func New(quiet time.Duration, logger *slog.Logger) *Scaler {
	if quiet <= 0 {
		quiet = DefaultQuiet
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	_, pinned := os.LookupEnv("GOMAXPROCS")
	return &Scaler{quiet: quiet, logger: logger, enabled: !pinned && runtime.GOMAXPROCS(0) > 1}
}

// Work says the process has work (the daemon calls it when a poll that took records
// or a delivery attempt ends): if it runs on one processor, it runs on all it may use
// when Work returns. It costs two atomic loads when there is nothing to change.
func (s *Scaler) Work() {
	if !s.enabled {
		return
	}
	if !s.busy.Load() {
		s.busy.Store(true)
	}
	if s.low.Load() {
		s.raise()
	}
}

// Run lowers GOMAXPROCS to 1 whenever a quiet period went by without Work, until ctx
// is done; then it restores the default (a daemon stopping has deliveries to finish).
func (s *Scaler) Run(ctx context.Context) {
	if !s.enabled {
		return
	}
	t := time.NewTicker(s.quiet)
	defer t.Stop()
	defer s.raise()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.tick()
		}
	}
}

// tick ends a quiet period: without Work since the last tick, GOMAXPROCS goes to 1.
func (s *Scaler) tick() {
	if !s.busy.Swap(false) {
		s.lower()
	}
}

// lower sets GOMAXPROCS to 1, unless Work came meanwhile. Work sets busy before it
// reads low, and lower sets low before it reads busy: so either lower sees the Work
// and stays, or the Work sees low and raises after it.
func (s *Scaler) lower() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.low.Load() {
		return
	}
	s.low.Store(true)
	if s.busy.Load() {
		s.low.Store(false)
		return
	}
	runtime.GOMAXPROCS(1)
	s.logger.Debug("no work for a while: running on one processor until work comes", "quiet", s.quiet)
}

// raise restores the runtime's default GOMAXPROCS if it was lowered.
func (s *Scaler) raise() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.low.Load() {
		return
	}
	runtime.SetDefaultGOMAXPROCS()
	s.low.Store(false)
	s.logger.Debug("work came: running on every processor", "gomaxprocs", runtime.GOMAXPROCS(0))
}
