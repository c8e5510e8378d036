package dedupe

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// The activity log: what became of each delivery attempt, for the web console. Record
// writes one small event.Attempt per outcome in its own transaction. Each attempt holds
// a reference to its event's record in the events bucket (entry.go), the one its outbox
// entry referred to, so that an event's page can show its CloudEvent after it left the
// outbox: an acknowledged or dead-lettered entry hands its reference over to its attempt,
// an entry that stays adds one. The log prunes itself as it is written: per forwarder
// the newest ActivityPerForwarder attempts, none older than ActivityMaxAge; an attempt
// pruned drops its reference, and the event record goes with the last one.
//
//	activity/<forwarder>  8-byte big-endian seq (the sub-bucket's NextSequence, so in the
//	                      order of recording) → attemptFormat, the 8-byte big-endian seq
//	                      of its event record, its time (appendTime), then event.Attempt
//	                      JSON; as written before, the JSON alone (from '{')
//	activity_events       as written before: event id → 4-byte big-endian count of the
//	                      JSON attempts referring to it, then the event (eventFormat and
//	                      its binary form, or its JSON); read and pruned, never written
//
// Keeping the event in a bucket of its own by id made each commit of outcomes rewrite
// pages all over that bucket (its keys are random), and a copy of every event: the log
// was a third of the recorder's cost. A reference costs nothing when the entry's goes
// over to the attempt, and pruning reads only an attempt's header.
const (
	ActivityPerForwarder = 1000
	ActivityMaxAge       = 7 * 24 * time.Hour
)

var (
	bucketActivity       = []byte("activity")
	bucketActivityEvents = []byte("activity_events")
)

const (
	// attemptFormat starts an attempt written with a reference to its event record.
	attemptFormat = 1
	// attemptHeader is the length of its header: format, event record seq, time.
	attemptHeader = 1 + 8 + timeLen
)

// logs reports whether the activity log keeps an attempt for o: an outcome of an outbox
// entry.
func logs(o event.Outcome) bool {
	return o.Delivery.Forwarder != "" && o.Delivery.Event.ID != ""
}

// logActivity appends one attempt per outcome that logs, recorded at now, and prunes the
// log. refs[i] is the event record outcomes[i]'s attempt refers to, its reference already
// counted (outcome); 0 when the outcome's entry had none to hand over (gone, or written
// by schema version 2): the attempt then gets a record of its own.
func (r *recorder) logActivity(outcomes []event.Outcome, refs []uint64, now time.Time) error {
	if len(outcomes) == 0 {
		return nil
	}
	log, err := r.tx.CreateBucketIfNotExists(bucketActivity)
	if err != nil {
		return err
	}
	forwarders := subBuckets{parent: log}
	for i, o := range outcomes {
		if !logs(o) {
			continue
		}
		ref := refs[i]
		if ref == 0 {
			if ref, err = r.events.put(o.Delivery.Event, 1, &r.arena); err != nil {
				return err
			}
		}
		b, err := forwarders.appendTo(o.Delivery.Forwarder)
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		key := r.arena.key(seq)
		v, err := appendAttempt(r.arena.next(), ref, event.AttemptOf(o, now))
		if err != nil {
			return err
		}
		if err := b.Put(key, r.arena.take(v)); err != nil {
			return err
		}
	}
	horizon := now.Add(-ActivityMaxAge)
	return log.ForEachBucket(func(name []byte) error {
		return r.prune(log.Bucket(name), horizon)
	})
}

// appendAttempt appends the stored form of a, referring to event record ref, to b.
func appendAttempt(b []byte, ref uint64, a event.Attempt) ([]byte, error) {
	b = append(b, attemptFormat)
	b = binary.BigEndian.AppendUint64(b, ref)
	b = appendTime(b, a.At)
	return a.AppendJSON(b)
}

// attemptJSON is the event.Attempt JSON of a stored attempt of either form.
func attemptJSON(v []byte) []byte {
	if len(v) >= attemptHeader && v[0] == attemptFormat {
		return v[attemptHeader:]
	}
	return v
}

// decodeActivityEvent reads an event as activity_events keeps it after its count: the
// binary form, or the JSON an older leadbridge wrote.
func decodeActivityEvent(b []byte) (event.Event, error) {
	var ev event.Event
	switch {
	case len(b) > 0 && b[0] == '{':
		return ev, json.Unmarshal(b, &ev)
	case len(b) > 0 && b[0] == eventFormat:
		return decodeEvent(b[1:])
	}
	return ev, fmt.Errorf("kept event is malformed (%d bytes, format %d)", len(b), first(b))
}

// dropEventRef counts one attempt fewer referring to event id in activity_events (evs,
// nil in a store that never had it), and forgets the event when none is left.
func dropEventRef(evs *bolt.Bucket, id string) error {
	if evs == nil {
		return nil
	}
	v := evs.Get([]byte(id))
	if len(v) < 4 {
		return nil
	}
	n := binary.BigEndian.Uint32(v)
	if n <= 1 {
		return evs.Delete([]byte(id))
	}
	nv := slices.Clone(v)
	binary.BigEndian.PutUint32(nv, n-1)
	return evs.Put([]byte(id), nv)
}

// prunedAttempt is an attempt prune deletes: its key, and the reference to its event
// it drops, to its record (ref) or, written before attempts had one, by id.
type prunedAttempt struct {
	seq     uint64
	ref     uint64
	eventID string
	byID    bool
}

// prune deletes a forwarder's oldest attempts, in b, while it holds more than
// ActivityPerForwarder or they were recorded before horizon, with their references to
// their events. Keys are deleted only from the front, so the count is the sequence minus
// the first key plus one. The attempts to delete, a run from the first, are found first
// and then deleted each by its key: a bbolt cursor may skip the key after one it deleted
// (etcd-io/bbolt#146), and finding the first key again after each one searched the tree
// from its root twice per attempt.
func (r *recorder) prune(b *bolt.Bucket, horizon time.Time) error {
	gone := r.pruned[:0]
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		seq := binary.BigEndian.Uint64(k)
		count := b.Sequence() - seq + 1
		p := prunedAttempt{seq: seq}
		var at time.Time
		unreadable := false
		if len(v) >= attemptHeader && v[0] == attemptFormat {
			p.ref, at = binary.BigEndian.Uint64(v[1:]), decodeTime(v[9:])
		} else {
			var a struct { // only what pruning needs: decoding the whole attempt cost twice as much
				At      time.Time `json:"at"`
				EventID string    `json:"event_id"`
			}
			unreadable = json.Unmarshal(v, &a) != nil
			at, p.eventID, p.byID = a.At, a.EventID, !unreadable
		}
		if count <= ActivityPerForwarder && !unreadable && !at.Before(horizon) {
			break
		}
		gone = append(gone, p)
	}
	r.pruned = gone
	for _, p := range gone {
		key := r.arena.key(p.seq)
		if k, _ := c.Seek(key); !bytes.Equal(k, key) {
			continue
		}
		if err := c.Delete(); err != nil {
			return err
		}
		var err error
		switch {
		case p.ref != 0:
			err = r.events.unref(p.ref, &r.arena)
		case p.byID:
			err = dropEventRef(r.tx.Bucket(bucketActivityEvents), p.eventID)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Activity returns the attempts q selects, newest first. A store without an activity
// log (read-only, written by an older leadbridge) has none.
func (s *Store) Activity(ctx context.Context, q event.ActivityQuery) ([]event.Attempt, error) {
	var out []event.Attempt
	err := s.view(ctx, func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketActivity)
		if log == nil {
			return nil
		}
		evs := tx.Bucket(bucketActivityEvents)
		return log.ForEachBucket(func(name []byte) error {
			if q.Forwarder != "" && q.Forwarder != string(name) {
				return nil
			}
			n := 0
			c := log.Bucket(name).Cursor()
			for k, v := c.Last(); k != nil && (q.Limit <= 0 || n < q.Limit); k, v = c.Prev() {
				var a event.Attempt
				if err := json.Unmarshal(attemptJSON(v), &a); err != nil {
					s.log.Error("skipping an unreadable activity record", "forwarder", string(name),
						"seq", binary.BigEndian.Uint64(k), "err", err)
					continue
				}
				if a.At.Before(q.Since) {
					break // recorded in order: the rest are older still
				}
				if a.Account == "" && evs != nil {
					a.Account = accountOf(evs, a.EventID)
				}
				if q.Matches(a) {
					out = append(out, a)
					n++
				}
			}
			return nil
		})
	})
	if err != nil {
		return nil, s.wrap("read activity", err)
	}
	slices.SortStableFunc(out, func(a, b event.Attempt) int { return b.At.Compare(a.At) })
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// ActivityEvent returns the event with id id as the activity log keeps it; found is
// false once no attempt in the log refers to it. It looks for the newest attempt of the
// event that refers to its record, then in what an older leadbridge kept by id. A
// record that attempt refers to but that is missing or unreadable is logged, and the
// event not found: the attempt then shows no event.
func (s *Store) ActivityEvent(ctx context.Context, id string) (ev event.Event, found bool, err error) {
	var lost error // why the record the newest attempt refers to could not be read
	err = s.view(ctx, func(tx *bolt.Tx) error {
		ref, err := attemptRef(tx, id)
		if err != nil {
			return err
		}
		if ref != 0 {
			ev, lost = eventsIn(tx).read(ref)
			found = lost == nil
			return nil
		}
		evs := tx.Bucket(bucketActivityEvents)
		if evs == nil {
			return nil
		}
		v := evs.Get([]byte(id))
		if len(v) < 4 {
			return nil
		}
		if ev, err = decodeActivityEvent(v[4:]); err != nil {
			return fmt.Errorf("decode event %s: %w", id, err)
		}
		found = true
		return nil
	})
	if lost != nil {
		s.log.Warn("the activity log shows no event for an attempt: its event record is lost", "event_id", id, "err", lost)
	}
	return ev, found, s.wrap("read activity event", err)
}

// attemptRef is the event record that the newest attempt of event id referring to one
// refers to; 0 if there is none. The log is bounded, so it is read through, each attempt
// decoded only when its JSON names the id.
func attemptRef(tx *bolt.Tx, id string) (uint64, error) {
	log := tx.Bucket(bucketActivity)
	if log == nil {
		return 0, nil
	}
	quoted, err := json.Marshal(id)
	if err != nil {
		return 0, err
	}
	needle := append([]byte(`"event_id":`), quoted...)
	var ref uint64
	var newest time.Time
	err = log.ForEachBucket(func(name []byte) error {
		c := log.Bucket(name).Cursor()
		for k, v := c.Last(); k != nil; k, v = c.Prev() {
			if len(v) < attemptHeader || v[0] != attemptFormat || !bytes.Contains(v[attemptHeader:], needle) {
				continue
			}
			var a struct {
				EventID string `json:"event_id"`
			}
			if json.Unmarshal(v[attemptHeader:], &a) != nil || a.EventID != id {
				continue
			}
			if at := decodeTime(v[9:]); ref == 0 || at.After(newest) {
				ref, newest = binary.BigEndian.Uint64(v[1:]), at
			}
			return nil // the newest of this forwarder's
		}
		return nil
	})
	return ref, err
}

// accountOf is the account of the event with id id as kept beside the log, for an
// attempt recorded before attempts named it; "" if the event is not there.
func accountOf(evs *bolt.Bucket, id string) string {
	v := evs.Get([]byte(id))
	if len(v) < 4 {
		return ""
	}
	ev, err := decodeActivityEvent(v[4:])
	if err != nil {
		return ""
	}
	return event.Event{Data: event.Lead{Account: ev.Data.Account}}.Account()
}
