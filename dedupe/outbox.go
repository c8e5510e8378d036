package dedupe

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// Pending returns up to limit (<= 0: all) of forwarder's outbox entries with Seq > after,
// in ascending Seq order. An unknown forwarder has none.
func (s *Store) Pending(ctx context.Context, forwarder string, after uint64, limit int) ([]event.Delivery, error) {
	var out []event.Delivery
	if after == math.MaxUint64 {
		return nil, nil
	}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := subBucket(tx, bucketOutbox, forwarder)
		if b == nil {
			return nil
		}
		evs := eventsIn(tx)
		c := b.Cursor()
		k, v := c.Seek(seqKey(after + 1))
		if k != nil {
			out = make([]event.Delivery, 0, pendingRoom(b.Sequence(), binary.BigEndian.Uint64(k), limit))
		}
		for ; k != nil && (limit <= 0 || len(out) < limit); k, v = c.Next() {
			seq := binary.BigEndian.Uint64(k)
			r, err := readDelivery(evs, forwarder, seq, v)
			if err != nil {
				// One unreadable entry must not stall the entries behind it: it is left
				// in place, named in the log, and skipped.
				s.log.Error("skipping an unreadable outbox entry", "forwarder", forwarder, "seq", seq, "err", err)
				continue
			}
			out = append(out, r.d)
		}
		return nil
	})
	return out, s.wrap("pending "+forwarder, err)
}

// pendingRoom is the room Pending makes for its page at once (a Delivery is large, and
// growing the page copied it over and over), from the first entry's seq: entries take
// their sub-bucket's NextSequence, so none is above last. It is an upper bound, capped by
// limit, or by maxPendingRoom for a read of all: one entry long stuck at the front of an
// outbox that has since taken a million must not cost a million Deliveries.
func pendingRoom(last, first uint64, limit int) int {
	if last < first { // not written by putRef; append grows the page as it goes
		return 1
	}
	bound := maxPendingRoom
	if limit > 0 {
		bound = limit
	}
	return int(min(last-first, uint64(bound)-1) + 1)
}

// maxPendingRoom caps the room Pending makes at once for a read of all entries.
const maxPendingRoom = 256

// Entry returns forwarder's outbox entry seq; found is false when there is none (it was
// delivered, dropped or moved meanwhile).
func (s *Store) Entry(ctx context.Context, forwarder string, seq uint64) (d event.Delivery, found bool, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		b := subBucket(tx, bucketOutbox, forwarder)
		if b == nil {
			return nil
		}
		v := b.Get(seqKey(seq))
		if v == nil {
			return nil
		}
		r, err := readDelivery(eventsIn(tx), forwarder, seq, v)
		d, found = r.d, true
		return err
	})
	return d, found, s.wrap(fmt.Sprintf("read %s #%d", forwarder, seq), err)
}

// Record applies the outcomes of delivery attempts in one transaction (one fsync for
// all): an Acked entry leaves the outbox, a Retrying one keeps its attempt count, first
// and next try and last error, a Dead one moves to the dead letters. An outcome for an
// entry no longer in the outbox (dropped, moved, already recorded) is skipped. Each
// outcome also goes to the activity log (activity.go).
func (s *Store) Record(ctx context.Context, outcomes []event.Outcome) error {
	if s.readOnly {
		return s.wrap("record delivery outcomes", ErrReadOnly)
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		r := recorder{tx: tx, events: eventsIn(tx), outbox: subBuckets{parent: tx.Bucket(bucketOutbox)}}
		refs := make([]uint64, len(outcomes))
		for i, o := range outcomes {
			ref, err := r.outcome(o, logs(o))
			if err != nil {
				return fmt.Errorf("%s #%d: %w", o.Delivery.Forwarder, o.Delivery.Seq, err)
			}
			refs[i] = ref
		}
		return r.logActivity(outcomes, refs, s.clock.read(s.now()))
	})
	return s.wrap("record delivery outcomes", err)
}

// recorder is Record's transaction and what its outcomes share: the events bucket, the
// outbox sub-buckets with a cursor each (bbolt makes a cursor for every Get and Delete),
// and the arena of the values put.
type recorder struct {
	tx     *bolt.Tx
	events *eventRecords
	outbox subBuckets
	arena  arena
	pruned []prunedAttempt // prune's, its memory kept for the next forwarder's
}

// outcome applies o to its outbox entry. With keep (the activity log keeps an attempt
// for o), a reference to the entry's event record is kept for the attempt: an entry that
// leaves hands its own over, one that stays adds one. ref is that record, 0 when there
// is none to keep (the entry is gone, unreadable, or of schema version 2 and leaving).
func (r *recorder) outcome(o event.Outcome, keep bool) (ref uint64, err error) {
	d := o.Delivery
	ob := r.outbox.get(d.Forwarder)
	if ob.b == nil {
		return 0, nil
	}
	key := r.arena.key(d.Seq)
	c := ob.cursor()
	k, v := c.Seek(key)
	if !bytes.Equal(k, key) || v == nil {
		return 0, nil
	}
	e, err := decodeEntry(d.Forwarder, d.Seq, v)
	switch {
	case err != nil && o.Verdict == event.Acked:
		// The target took it: the entry goes, even unreadable (its event record, if any,
		// cannot be found), rather than failing the verdicts recorded with it.
		return 0, c.Delete()
	case err != nil:
		return 0, err
	}
	switch o.Verdict {
	case event.Acked:
		return r.leave(c, e, keep)
	case event.Dead:
		if !e.legacy {
			if e.d.Event, err = r.events.read(e.evSeq); err != nil {
				return 0, err
			}
		}
	}
	cur := e.d
	cur.Attempts, cur.FirstTry, cur.NextTry, cur.LastError = d.Attempts, d.FirstTry, d.NextTry, d.LastError
	if o.Verdict != event.Dead {
		switch {
		case e.legacy: // rewritten in the binary form, its event in a record of its own, which its attempt shares
			refs := 1
			if keep {
				refs = 2
			}
			if e.evSeq, err = r.events.put(cur.Event, refs, &r.arena); err != nil {
				return 0, err
			}
			if keep {
				ref = e.evSeq
			}
		case keep:
			if ok, err := r.events.addRef(e.evSeq, &r.arena); err != nil {
				return 0, err
			} else if ok {
				ref = e.evSeq
			}
		}
		return ref, ob.b.Put(key, r.arena.take(appendEntry(r.arena.next(), e.evSeq, cur)))
	}
	dead, err := r.tx.Bucket(bucketDead).CreateBucketIfNotExists([]byte(d.Forwarder))
	if err != nil {
		return 0, err
	}
	seq, err := dead.NextSequence()
	if err != nil {
		return 0, err
	}
	if err := putJSON(dead, seqKey(seq), event.DeadLetter{Delivery: cur, Failed: o.At}); err != nil {
		return 0, err
	}
	// Placed again on the entry (a cursor is not trusted across other writes), and never
	// on the next one, which Delete would then take.
	if k, _ := c.Seek(key); !bytes.Equal(k, key) {
		return 0, nil
	}
	return r.leave(c, e, keep)
}

// leave deletes the outbox entry e that c is on. With keep its reference to its event
// record is handed over (and returned; the record may be missing, and the attempt then
// shows no event); otherwise it is dropped, and the record goes with the last one.
func (r *recorder) leave(c *bolt.Cursor, e entryRef, keep bool) (uint64, error) {
	if err := c.Delete(); err != nil {
		return 0, err
	}
	switch {
	case e.legacy: // a legacy entry's event has no record to hand over
		return 0, nil
	case keep:
		return e.evSeq, nil
	}
	return 0, r.events.unref(e.evSeq, &r.arena)
}

// Depth counts the outbox entries per forwarder (forwarders that ever had one).
func (s *Store) Depth(ctx context.Context) (map[string]int, error) {
	n, err := s.countSub(ctx, bucketOutbox)
	return n, s.wrap("outbox depth", err)
}

// DeadCount counts the dead letters per forwarder (forwarders that ever had one).
func (s *Store) DeadCount(ctx context.Context) (map[string]int, error) {
	n, err := s.countSub(ctx, bucketDead)
	return n, s.wrap("dead-letter count", err)
}

func (s *Store) countSub(ctx context.Context, parent []byte) (map[string]int, error) {
	out := map[string]int{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		p := tx.Bucket(parent)
		if p == nil {
			return nil
		}
		return p.ForEachBucket(func(name []byte) error {
			out[string(name)] = p.Bucket(name).Stats().KeyN
			return nil
		})
	})
	return out, err
}

// subBucket returns the sub-bucket name of parent, nil if either is missing (a read-only
// store need not have them).
func subBucket(tx *bolt.Tx, parent []byte, name string) *bolt.Bucket {
	p := tx.Bucket(parent)
	if p == nil {
		return nil
	}
	return p.Bucket([]byte(name))
}

// deadRef is one dead letter found by findDead.
type deadRef struct {
	bucket *bolt.Bucket
	key    []byte
	dl     event.DeadLetter
}

// findDead returns the dead letters of forwarder ("" = all) whose event id is eventID
// ("" = any), per forwarder in order of failure.
func findDead(tx *bolt.Tx, forwarder, eventID string) ([]deadRef, error) {
	dead := tx.Bucket(bucketDead)
	if dead == nil {
		return nil, nil
	}
	var names [][]byte
	if forwarder != "" {
		names = [][]byte{[]byte(forwarder)}
	} else if err := dead.ForEachBucket(func(k []byte) error {
		names = append(names, slices.Clone(k))
		return nil
	}); err != nil {
		return nil, err
	}
	var out []deadRef
	for _, name := range names {
		b := dead.Bucket(name)
		if b == nil {
			continue
		}
		err := b.ForEach(func(k, v []byte) error {
			var dl event.DeadLetter
			if err := json.Unmarshal(v, &dl); err != nil {
				return fmt.Errorf("decode dead letter %s %x: %w", name, k, err)
			}
			if eventID == "" || dl.Event.ID == eventID {
				out = append(out, deadRef{bucket: b, key: slices.Clone(k), dl: dl})
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeadLetters lists the dead letters of forwarder ("" = all), oldest failure first.
func (s *Store) DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error) {
	var out []event.DeadLetter
	err := s.view(ctx, func(tx *bolt.Tx) error {
		refs, err := findDead(tx, forwarder, "")
		for _, r := range refs {
			out = append(out, r.dl)
		}
		return err
	})
	slices.SortStableFunc(out, func(a, b event.DeadLetter) int { return a.Failed.Compare(b.Failed) })
	return out, s.wrap("list dead letters", err)
}

// Replay puts dead letters of forwarder ("" = all) with event id eventID ("" = all) back
// in the outbox under a new Seq, with attempts, first try and last error reset. It returns
// how many were replayed.
func (s *Store) Replay(ctx context.Context, forwarder, eventID string) (int, error) {
	n, err := s.removeDead(ctx, forwarder, eventID, func(tx *bolt.Tx, d event.Delivery) error {
		d.Attempts, d.FirstTry, d.LastError = 0, time.Time{}, ""
		return putDelivery(tx, eventsIn(tx), d)
	})
	if err != nil {
		return 0, s.wrap("replay dead letters", err)
	}
	if n > 0 {
		s.signal()
		s.log.Info("dead letters replayed", "forwarder", forwarder, "event_id", eventID, "count", n)
	}
	return n, nil
}

// Drop deletes dead letters of forwarder ("" = all) with event id eventID ("" = all) and
// returns how many it deleted.
func (s *Store) Drop(ctx context.Context, forwarder, eventID string) (int, error) {
	n, err := s.removeDead(ctx, forwarder, eventID, nil)
	if err != nil {
		return 0, s.wrap("drop dead letters", err)
	}
	if n > 0 {
		s.log.Info("dead letters dropped", "forwarder", forwarder, "event_id", eventID, "count", n)
	}
	return n, nil
}

// removeDead deletes the dead letters findDead finds, in one transaction, first handing
// each one's delivery to keep unless keep is nil, and returns how many it deleted.
func (s *Store) removeDead(ctx context.Context, forwarder, eventID string, keep func(*bolt.Tx, event.Delivery) error) (int, error) {
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		refs, err := findDead(tx, forwarder, eventID)
		if err != nil {
			return err
		}
		for _, r := range refs {
			if keep != nil {
				if err := keep(tx, r.dl.Delivery); err != nil {
					return err
				}
			}
			if err := r.bucket.Delete(r.key); err != nil {
				return err
			}
		}
		n = len(refs)
		return nil
	})
	return n, err
}

// MovePending moves every outbox entry of forwarder from to forwarder to, in one
// transaction, for a forwarder that was renamed. Each entry keeps its event (same id) and
// Enqueued time, takes a new Seq after to's entries, and starts afresh against the new
// target: attempts, first try, next try and last error are reset, since failures against
// the old target say nothing about the new one. An entry whose event to already owes is
// not copied twice; it is removed from from and counted in already. A running dispatcher
// is woken through Changes.
func (s *Store) MovePending(ctx context.Context, from, to string) (moved, already int, err error) {
	op := fmt.Sprintf("move outbox %s to %s", from, to)
	if err := event.CheckMove(from, to); err != nil {
		return 0, 0, s.wrap(op, err)
	}
	err = s.update(ctx, func(tx *bolt.Tx) error {
		outbox := tx.Bucket(bucketOutbox)
		src := outbox.Bucket([]byte(from))
		if src == nil {
			return nil
		}
		evs := eventsIn(tx)
		owed := map[string]bool{}
		if dst := outbox.Bucket([]byte(to)); dst != nil {
			if err := dst.ForEach(func(k, v []byte) error {
				r, err := readDelivery(evs, to, binary.BigEndian.Uint64(k), v)
				if err != nil {
					return fmt.Errorf("read outbox entry %s #%d: %w", to, binary.BigEndian.Uint64(k), err)
				}
				owed[r.d.Event.ID] = true
				return nil
			}); err != nil {
				return err
			}
		}
		// The entries are gathered first: bbolt forbids changing a bucket under ForEach.
		var entries []entryRef
		if err := src.ForEach(func(k, v []byte) error {
			r, err := readDelivery(evs, from, binary.BigEndian.Uint64(k), v)
			if err != nil {
				return fmt.Errorf("read outbox entry %s #%d: %w", from, binary.BigEndian.Uint64(k), err)
			}
			entries = append(entries, r)
			return nil
		}); err != nil {
			return err
		}
		for _, r := range entries {
			d := r.d
			if owed[d.Event.ID] {
				already++
				if !r.legacy {
					if err := evs.unref(r.evSeq, nil); err != nil {
						return err
					}
				}
				continue
			}
			owed[d.Event.ID] = true
			d.Forwarder = to
			d.Attempts, d.FirstTry, d.NextTry, d.LastError = 0, time.Time{}, time.Time{}, ""
			moved++
			if r.legacy {
				if err := putDelivery(tx, evs, d); err != nil {
					return err
				}
				continue
			}
			// The entry moves; its event record, and its count of references, stay.
			dst, err := appendTo(outbox, to)
			if err != nil {
				return err
			}
			if err := putRef(dst, d, r.evSeq, nil); err != nil {
				return err
			}
		}
		return outbox.DeleteBucket([]byte(from))
	})
	if err != nil {
		return 0, 0, s.wrap(op, err)
	}
	if moved > 0 {
		s.signal()
	}
	if moved+already > 0 {
		s.log.Info("outbox entries moved to another forwarder", "from", from, "to", to, "moved", moved, "already_owed", already)
	}
	return moved, already, nil
}

// DropPending deletes every outbox entry of forwarder, for a forwarder that was removed
// on purpose, and returns how many it deleted.
func (s *Store) DropPending(ctx context.Context, forwarder string) (int, error) {
	op := "drop outbox " + forwarder
	if forwarder == "" {
		return 0, s.wrap(op, errors.New("want a forwarder name"))
	}
	n := 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		outbox := tx.Bucket(bucketOutbox)
		b := outbox.Bucket([]byte(forwarder))
		if b == nil {
			return nil
		}
		evs := eventsIn(tx)
		if err := b.ForEach(func(k, v []byte) error {
			n++
			r, err := decodeEntry(forwarder, binary.BigEndian.Uint64(k), v)
			if err != nil || r.legacy {
				// An unreadable entry is dropped all the same: the operator asked for it.
				// Its event record, if any, stays (it cannot be found).
				return nil
			}
			return evs.unref(r.evSeq, nil)
		}); err != nil {
			return err
		}
		return outbox.DeleteBucket([]byte(forwarder))
	})
	if err != nil {
		return 0, s.wrap(op, err)
	}
	if n > 0 {
		s.log.Info("outbox entries dropped", "forwarder", forwarder, "count", n)
	}
	return n, nil
}
