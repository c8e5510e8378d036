package forwarders

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"
)

// runState is what a run of the Dispatcher shares with the lanes it starts, including
// those AddRoute starts while it runs.
type runState struct {
	ctx, hard context.Context
	more      <-chan struct{}
	rec       *recorder
	logger    *slog.Logger
	rescan    time.Duration
	lanes     int           // lane goroutines not yet returned; d.mu guards it
	exited    chan struct{} // a lane returned
	closed    bool          // the run is over (or ending): no lane starts any more; d.mu guards it
}

// generation is a lane's route from the time it was set to the next ReplaceRoute: its
// attempts in flight, so that the forwarder it replaced is let go only after them.
type generation struct{ flying sync.WaitGroup }

// closedStop is a closed channel: "nothing to wait for".
var closedStop = func() <-chan struct{} { c := make(chan struct{}); close(c); return c }()

// startLaneLocked starts l's loop in the run under way, after the lane of the same name
// it replaces (after, nil if none) has stopped. d.mu must be held and d.rt not closed.
func (d *Dispatcher) startLaneLocked(l *lane, after <-chan struct{}) {
	rt := d.rt
	ctx, cancel := context.WithCancel(rt.ctx)
	l.cancel = cancel
	rt.lanes++
	go func() {
		defer func() {
			d.mu.Lock()
			rt.lanes--
			d.mu.Unlock()
			select {
			case rt.exited <- struct{}{}:
			default:
			}
		}()
		defer close(l.stopped)
		defer cancel()
		if after != nil {
			select {
			case <-after:
			case <-ctx.Done():
				return
			}
		}
		l.run(ctx, rt.hard, rt.more)
		if rt.ctx.Err() == nil {
			rt.rec.flush() // removed: its last verdicts are in the store before it counts as stopped
		}
	}()
}

// running reports whether a run is under way that lanes can join. d.mu must be held.
func (d *Dispatcher) running() bool { return d.rt != nil && !d.rt.closed }

// AddRoute adds a forwarder to the dispatcher: while it runs, in a lane of its own that
// starts at once with whatever the outbox holds for it; otherwise for the next run.
// A lane of the same name that RemoveRoute is still stopping stops first, so that an
// entry is never in two lanes at once. It fails for a name the dispatcher already has.
func (d *Dispatcher) AddRoute(r Route) error {
	name := r.Forwarder.Name()
	d.mu.Lock()
	defer d.mu.Unlock()
	if slices.ContainsFunc(d.Routes, func(x Route) bool { return x.Forwarder.Name() == name }) {
		return fmt.Errorf("dispatcher: forwarder %q already has a route", name)
	}
	d.Routes = append(d.Routes, r)
	if !d.running() {
		return nil
	}
	var after <-chan struct{}
	if old := d.leaving[name]; old != nil {
		after = old.stopped
	}
	l := newLane(d, r, d.rt.rec, d.rt.logger.With("forwarder", name), d.rt.rescan)
	d.lanes[name] = l
	d.startLaneLocked(l, after)
	l.logger.Info("forwarder added")
	return nil
}

// RemoveRoute takes a forwarder out of the dispatcher. While it runs, the forwarder's
// lane starts no new attempt; those in flight finish (under the usual shutdown grace)
// and are recorded, then the returned channel is closed and the forwarder may be
// closed. Its pending entries stay in the outbox. ok is false for a name the dispatcher
// does not have.
func (d *Dispatcher) RemoveRoute(name string) (stopped <-chan struct{}, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.Routes, func(x Route) bool { return x.Forwarder.Name() == name })
	if i < 0 {
		return nil, false
	}
	d.Routes = slices.Delete(d.Routes, i, i+1)
	l := d.lanes[name]
	if !d.running() || l == nil {
		return closedStop, true
	}
	delete(d.lanes, name)
	if d.leaving == nil {
		d.leaving = map[string]*lane{}
	}
	d.leaving[name] = l
	l.cancel()
	go func() {
		<-l.stopped
		d.mu.Lock()
		if d.leaving[name] == l {
			delete(d.leaving, name)
		}
		d.mu.Unlock()
	}()
	l.logger.Info("forwarder removed: no new attempts; its pending deliveries stay in the outbox")
	return l.stopped, true
}

// ReplaceRoute gives a forwarder new settings (r names it): every attempt that starts
// from now on uses r's forwarder, retry policy, concurrency and config hash, and the lane
// is paused or not as r says (a changed config takes back a pause). The lane keeps its
// schedule, so no entry is attempted twice or forgotten. The returned channel is closed
// once the attempts that started with the old route have finished: then the old
// forwarder may be closed. While they finish, the lane may briefly have their slots on
// top of r's concurrency. It fails for a name the dispatcher does not have.
func (d *Dispatcher) ReplaceRoute(r Route) (retired <-chan struct{}, err error) {
	name := r.Forwarder.Name()
	d.mu.Lock()
	defer d.mu.Unlock()
	i := slices.IndexFunc(d.Routes, func(x Route) bool { return x.Forwarder.Name() == name })
	if i < 0 {
		return nil, fmt.Errorf("dispatcher: forwarder %q has no route to replace", name)
	}
	d.Routes[i] = r
	l := d.lanes[name]
	if !d.running() || l == nil {
		return closedStop, nil
	}
	r = withDefaults(r)
	l.mu.Lock()
	old := l.gen
	if r.Concurrency != l.route.Concurrency {
		l.sem = make(chan struct{}, r.Concurrency) // attempts in flight free their slots in the old one
	}
	l.route, l.gen, l.paused = r, &generation{}, r.Paused
	l.mu.Unlock()
	l.signal(&l.freedC)
	done := make(chan struct{})
	go func() {
		old.flying.Wait()
		close(done)
	}()
	l.logger.Info("forwarder settings changed: the next attempts use them")
	return done, nil
}

// flush waits until every verdict handed before it is recorded (or the recorder gave up
// on it during shutdown).
func (w *recorder) flush() {
	done := make(chan struct{})
	w.hand(verdict{barrier: done})
	<-done
}
