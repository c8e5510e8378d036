package main

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

// drainTally is what a drain delivered and dead-lettered, and what it left pending.
type drainTally struct{ sent, dead, pending int }

// drain delivers what the outbox holds for at most maxWait (it takes the dispatcher's
// OnResult) and tallies the outcome for the configured forwarders, or only for the one
// named only.
func (a *app) drain(ctx context.Context, maxWait time.Duration, only string) (drainTally, error) {
	sent, dead := a.countResults()
	drainCtx, cancel := context.WithTimeout(ctx, maxWait)
	defer cancel()
	if err := a.dispatcher.Drain(drainCtx); err != nil {
		return drainTally{}, err
	}
	a.settle(drainCtx, only)
	pending, err := a.pending(context.WithoutCancel(ctx), only) // counted even when interrupted
	if err != nil {
		return drainTally{}, err
	}
	return drainTally{sent: int(sent.Load()), dead: int(dead.Load()), pending: pending}, nil
}

// countResults takes the dispatcher's OnResult to count deliveries and dead letters.
func (a *app) countResults() (sent, dead *atomic.Int64) {
	sent, dead = new(atomic.Int64), new(atomic.Int64)
	a.dispatcher.OnResult = func(_ event.Delivery, res forwarders.Result, _ time.Duration, _ error) {
		switch res {
		case forwarders.ResultOK:
			sent.Add(1)
		case forwarders.ResultDead:
			dead.Add(1)
		}
	}
	return sent, dead
}
