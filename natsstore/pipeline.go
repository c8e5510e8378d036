package natsstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The store's calls keep many requests in flight on the one connection instead of
// waiting for each answer before the next question: a round trip to a cluster costs far
// more than the work the server does for one key or message.
const (
	// requestWindow bounds the requests (KV reads, claims, deletes) one call of the
	// store keeps in flight at once.
	requestWindow = 64
	// publishWindow bounds the asynchronous publishes (outbox entries) one call keeps
	// unacknowledged at once; the oldest is awaited before one more goes out.
	publishWindow = 256
)

// inParallel calls fn(i) for every i in [0, n), at most requestWindow at once, and
// returns the errors by index.
func inParallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	if n == 1 {
		errs[0] = fn(0)
		return errs
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, requestWindow) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				errs[i] = fn(i)
			}
		})
	}
	wg.Wait()
	return errs
}

// publishAll publishes msgs to the outbox, at most publishWindow unacknowledged at
// once, and waits for the acknowledgement of every message it published. After the
// first failure it publishes no more, but still awaits those already out, so that when
// it returns nothing it sent is still in flight. The error names the first failure and
// how many of msgs are not known to be stored; those that were stored carry their
// Nats-Msg-Id, so publishing the same msgs again (the next poll) adds only the others.
func (s *Store) publishAll(ctx context.Context, msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	for _, m := range msgs {
		if err := checkName(m.Subject[len(s.prefix)+len(".outbox."):]); err != nil {
			return err
		}
	}
	var first error
	failed := 0
	fail := func(err error) {
		failed++
		if first == nil {
			first = err
		}
	}
	inFlight := make([]jetstream.PubAckFuture, 0, min(len(msgs), publishWindow))
	oldest := 0 // inFlight[oldest:] are not awaited yet
	sent := 0
	for _, m := range msgs {
		if len(inFlight)-oldest == publishWindow {
			if _, err := awaitAck(ctx, inFlight[oldest]); err != nil {
				fail(err)
			}
			oldest++
		}
		if first != nil || ctx.Err() != nil {
			break
		}
		if len(inFlight) == cap(inFlight) { // only once the window is full: oldest > 0
			inFlight = inFlight[:copy(inFlight, inFlight[oldest:])]
			oldest = 0
		}
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			if first == nil { // m is counted among those not sent
				first = err
			}
			break
		}
		inFlight = append(inFlight, f)
		sent++
	}
	for _, f := range inFlight[oldest:] {
		if _, err := awaitAck(ctx, f); err != nil {
			fail(err)
		}
	}
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		return fmt.Errorf("publish to the outbox: %d of %d entries not stored: %w", len(msgs)-sent+failed, len(msgs), first)
	}
	return nil
}
