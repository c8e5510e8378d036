package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// The fence: the server's word that one replica holds an entry is not proof (in-progress
// acks and naks are fire-and-forget, and across a consumer leader change the server may
// hand an entry to a second replica while the first still has it). So before an attempt
// of an entry that was delivered before (to this replica or another) or has a retry
// state, a replica claims the attempt in the entry's retry key with a write conditional
// on the revision it read, naming itself and how long the claim stands (its AckWait, from
// the server's stamp on the write). A replica that finds a standing claim of another, or
// loses the write, does not attempt the entry and leaves it to the holder. The holder
// renews its claims with its in-progress acks; recording the attempt's outcome clears the
// claim (a retry state is written without one, an ack or dead letter removes the key). A
// claim not renewed for as long as it stands (its holder died mid-attempt) is taken over.

// errClaimed: the entry's attempt is not this replica's (another replica holds a standing
// claim on it, won the conditional write, or recorded an attempt since); the entry goes
// back to the server, which offers it again after wait, unless gone says another
// replica removed it.
type errClaimed struct {
	wait time.Duration
	gone bool
}

func (e *errClaimed) Error() string { return "claimed by another replica" }

// attemptClaim is a won claim: the revision of the retry key that holds it and its value, which
// the heartbeat writes again to renew it.
type attemptClaim struct {
	rev uint64
	raw []byte
}

// fence reads forwarder's entry seq (data: its message) with its retry state and, when
// the entry has a retry state or redelivered says it may be held elsewhere, claims its
// next attempt for this replica. attempts (>= 0; < 0: not known) is how many attempts
// this replica read for the entry as it holds it: a retry state showing more was written
// by another replica's attempt since, whose next try the server hands out when it is due. It returns the delivery to
// attempt and the claim (nil when none was needed), or errClaimed when the attempt is
// not this replica's.
func (sh *Shared) fence(ctx context.Context, forwarder string, seq uint64, data []byte, redelivered bool, attempts int) (event.Delivery, *attemptClaim, error) {
	key := retryKey(forwarder, seq)
	var st retryState
	var rev uint64
	cur, err := sh.s.retry.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		cur = nil
		if !redelivered {
			d, _, err := decodeDelivery(forwarder, seq, data, nil)
			return d, nil, err
		}
	case err != nil:
		return event.Delivery{}, nil, fmt.Errorf("retry state: %w", err)
	default:
		rev = cur.Revision()
		if err := json.Unmarshal(cur.Value(), &st); err != nil {
			return event.Delivery{}, nil, fmt.Errorf("retry state: decode %s: %w", key, err)
		}
		if attempts >= 0 && st.Attempts > attempts {
			return event.Delivery{}, nil, &errClaimed{wait: max(time.Until(st.NextTry), 0)}
		}
		if st.Holder != "" && st.Holder != sh.owner {
			// Offered again as the claim lapses: a holder alive renews it by then.
			if left := cur.Created().Add(st.HoldFor).Sub(sh.s.server.latest(time.Now())); left > 0 {
				return event.Delivery{}, nil, &errClaimed{wait: min(left, st.HoldFor)}
			}
		}
	}
	st.Holder, st.HoldFor = sh.owner, sh.ackWait
	raw, err := json.Marshal(st)
	if err != nil {
		return event.Delivery{}, nil, err
	}
	if rev == 0 {
		rev, err = sh.s.retry.Create(ctx, key, raw)
	} else {
		rev, err = sh.s.retry.Update(ctx, key, raw, rev)
	}
	switch {
	case lostWrite(err):
		return event.Delivery{}, nil, &errClaimed{wait: sh.ackWait} // the winner's claim stands about as long
	case err != nil:
		return event.Delivery{}, nil, fmt.Errorf("claim %s: %w", key, err)
	}
	c := &attemptClaim{rev: rev, raw: raw}
	if cur == nil {
		// No retry state: never attempted, or its attempt succeeded (or dead-lettered)
		// and the key went after the entry did. Only the entry itself tells.
		m, err := sh.s.rawEntry(ctx, forwarder, seq)
		if err != nil || m == nil {
			if err == nil {
				err = &errClaimed{gone: true} // done by another replica meanwhile
			}
			_ = sh.s.dropRetry(ctx, key)
			return event.Delivery{}, nil, err
		}
	}
	d, _, err := decodeDelivery(forwarder, seq, data, raw)
	return d, c, err
}

// lostWrite reports a conditional write of a key that another writer came first to.
func lostWrite(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLast(err)
}

// renew writes a won claim again, so that it stands for another HoldFor, and returns its
// new revision; an error for which lostWrite holds means the claim is gone (its outcome
// was recorded, or another replica took it over), another one is logged here and the
// claim is renewed at the next heartbeat.
func (sh *Shared) renew(ctx context.Context, forwarder string, seq uint64, c attemptClaim) (uint64, error) {
	rev, err := sh.s.retry.Update(ctx, retryKey(forwarder, seq), c.raw, c.rev)
	if err != nil && !lostWrite(err) {
		sh.s.log.Warn("renewing the claim on an outbox entry's attempt failed; trying again at the next heartbeat", "forwarder", forwarder, "seq", seq, "err", err)
	}
	return rev, err
}

// fenceAge is how long a fresh entry may wait in this replica before an attempt needs a
// claim: within it the server cannot have handed the entry to another replica, whose
// delivery comes AckWait after this one at the earliest, and the attempt still has the
// rest of AckWait to start.
func (sh *Shared) fenceAge() time.Duration { return sh.ackWait / 2 }
