package dedupe

import (
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
// writes one small event.Attempt per outcome in its own transaction, and keeps each
// event once beside the log (with a count of the attempts that refer to it), so that an
// event's page can show its CloudEvent after it left the outbox. The log prunes itself
// as it is written: per forwarder the newest ActivityPerForwarder attempts, none older
// than ActivityMaxAge.
//
//	activity/<forwarder>  8-byte big-endian seq (the sub-bucket's NextSequence, so in the
//	                      order of recording) → event.Attempt JSON
//	activity_events       event id → 4-byte big-endian count of attempts referring to
//	                      it, then the event: eventFormat and its binary form
//	                      (appendEvent), or, as written before, its JSON (from '{')
//
// The event is kept in the binary form because the log is written in the transaction
// that records outcomes, which ingest waits for: the JSON was a third of the log's cost.
const (
	ActivityPerForwarder = 1000
	ActivityMaxAge       = 7 * 24 * time.Hour
)

var (
	bucketActivity       = []byte("activity")
	bucketActivityEvents = []byte("activity_events")
)

// logActivity appends one attempt per outcome, recorded at now, and prunes the log.
func logActivity(tx *bolt.Tx, outcomes []event.Outcome, now time.Time) error {
	if len(outcomes) == 0 {
		return nil
	}
	log, err := tx.CreateBucketIfNotExists(bucketActivity)
	if err != nil {
		return err
	}
	evs, err := tx.CreateBucketIfNotExists(bucketActivityEvents)
	if err != nil {
		return err
	}
	for _, o := range outcomes {
		if o.Delivery.Forwarder == "" || o.Delivery.Event.ID == "" {
			continue // not an outcome of an outbox entry: nothing to show
		}
		b, err := log.CreateBucketIfNotExists([]byte(o.Delivery.Forwarder))
		if err != nil {
			return err
		}
		seq, err := b.NextSequence()
		if err != nil {
			return err
		}
		if err := putJSON(b, seqKey(seq), event.AttemptOf(o, now)); err != nil {
			return err
		}
		if err := addEventRef(evs, o.Delivery.Event); err != nil {
			return err
		}
	}
	horizon := now.Add(-ActivityMaxAge)
	return log.ForEachBucket(func(name []byte) error {
		return pruneActivity(log.Bucket(name), evs, horizon)
	})
}

// addEventRef keeps ev beside the log, counting one more attempt that refers to it.
func addEventRef(evs *bolt.Bucket, ev event.Event) error {
	id := []byte(ev.ID)
	if v := evs.Get(id); len(v) >= 4 {
		nv := slices.Clone(v)
		binary.BigEndian.PutUint32(nv, binary.BigEndian.Uint32(v)+1)
		return evs.Put(id, nv)
	}
	v := binary.BigEndian.AppendUint32(make([]byte, 0, 512), 1)
	return evs.Put(id, appendEvent(append(v, eventFormat), ev))
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

// dropEventRef counts one attempt fewer referring to event id, and forgets the event
// when none is left.
func dropEventRef(evs *bolt.Bucket, id string) error {
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

// pruneActivity deletes a forwarder's oldest attempts while it holds more than
// ActivityPerForwarder or they were recorded before horizon. Keys are deleted only from
// the front, so the count is the sequence minus the first key plus one.
func pruneActivity(b *bolt.Bucket, evs *bolt.Bucket, horizon time.Time) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		count := b.Sequence() - binary.BigEndian.Uint64(k) + 1
		var a struct { // only what pruning needs: decoding the whole attempt cost twice as much
			At      time.Time `json:"at"`
			EventID string    `json:"event_id"`
		}
		unreadable := json.Unmarshal(v, &a) != nil
		if count <= ActivityPerForwarder && !unreadable && !a.At.Before(horizon) {
			return nil
		}
		if err := b.Delete(k); err != nil {
			return err
		}
		if !unreadable {
			if err := dropEventRef(evs, a.EventID); err != nil {
				return err
			}
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
				if err := json.Unmarshal(v, &a); err != nil {
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
// false once no attempt in the log refers to it.
func (s *Store) ActivityEvent(ctx context.Context, id string) (ev event.Event, found bool, err error) {
	err = s.view(ctx, func(tx *bolt.Tx) error {
		evs := tx.Bucket(bucketActivityEvents)
		if evs == nil {
			return nil
		}
		v := evs.Get([]byte(id))
		if len(v) < 4 {
			return nil
		}
		var err error
		if ev, err = decodeActivityEvent(v[4:]); err != nil {
			return fmt.Errorf("decode event %s: %w", id, err)
		}
		found = true
		return nil
	})
	return ev, found, s.wrap("read activity event", err)
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
