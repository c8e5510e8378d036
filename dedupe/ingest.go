package dedupe

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// IngestOptions changes how IngestWith treats a page; it serves backfill. IngestWith never
// applies the initial=skip baseline (a backfill is deliberate) and never marks the
// chatbot initialized.
//
// With Only set, the backfill is for those forwarders alone and writes no seen key, so
// the other forwarders still get every record from normal polling:
//   - A record never seen is queued for the Only forwarders (intersected with Route) and
//     counted New, but it is NOT marked seen and does not count toward the chatbot's
//     Seen. The next Ingest takes it as new and queues it for every forwarder Route
//     names, the Only ones again with the same event id (an identifiable repeat).
//   - A seen record is treated as without Only (Resend re-queues its created event; a
//     changed one is an updated event if EmitUpdates is on), for the Only forwarders.
//     A changed record's new content is not stored, so the next Ingest still sends its
//     updated event (same id) to every forwarder.
type IngestOptions struct {
	Resend bool     // seen records go to the outbox again, as their created event (same id)
	Only   []string // if set, deliveries only for these forwarders (intersected with Route), and nothing marked seen
	DryRun bool     // compute the result (Events = what would be sent) and write nothing
}

// Ingest records one polled page of a chatbot's records in a single transaction: unseen
// records are marked seen and put in the outbox for every forwarder Route names; seen
// ones are duplicates, or updated events when their content changed and EmitUpdates is
// on. The first Ingest of a chatbot with Initial "skip" marks its records seen without
// sending them. If the transaction fails nothing is marked seen and the error is returned.
//
// A record repeated within the page counts once. Result.Events holds the created and
// updated events of the page in record order, including those no forwarder wanted.
// Records already seen are counted as Duplicate even during the baseline.
func (s *Store) Ingest(serial string, leads []event.Lead) (event.Ingested, error) {
	return s.ingest(serial, leads, IngestOptions{}, false)
}

// IngestWith is Ingest for a deliberate backfill, shaped by o. Records re-sent with
// o.Resend count as Duplicate and appear in Result.Events.
func (s *Store) IngestWith(serial string, leads []event.Lead, o IngestOptions) (event.Ingested, error) {
	return s.ingest(serial, leads, o, true)
}

func (s *Store) ingest(serial string, leads []event.Lead, o IngestOptions, deliberate bool) (event.Ingested, error) {
	if s.readOnly {
		return event.Ingested{}, s.wrap("ingest "+serial, ErrReadOnly)
	}
	tx, err := s.db.Begin(true)
	if err != nil {
		return event.Ingested{}, s.wrap("ingest "+serial, err)
	}
	in := ingestTx{s: s, tx: tx, now: time.Now(), only: o.Only, resend: o.Resend}
	res, err := in.run(serial, leads, deliberate)
	if err == nil && !o.DryRun {
		err = tx.Commit()
	} else {
		err = errors.Join(err, tx.Rollback())
	}
	if err != nil {
		return event.Ingested{}, s.wrap("ingest "+serial, err)
	}
	if o.DryRun {
		return res, nil
	}
	if in.added > 0 {
		s.signal()
	}
	for _, ev := range res.Events {
		s.log.Debug("record taken", append(ev.LogAttrs(), "action", ev.Action())...)
	}
	return res, nil
}

// ingestTx is one Ingest in progress inside a write transaction.
type ingestTx struct {
	s      *Store
	tx     *bolt.Tx
	now    time.Time
	only   []string
	resend bool
	added  int // outbox entries put
}

func (in *ingestTx) run(serial string, leads []event.Lead, deliberate bool) (event.Ingested, error) {
	var res event.Ingested
	chatbots := in.tx.Bucket(bucketChatbots)
	var st ChatbotState
	if _, err := getJSON(chatbots, []byte(serial), &st); err != nil {
		return res, fmt.Errorf("chatbot %s state: %w", serial, err)
	}
	baseline := !deliberate && !in.s.initialEmit && !st.Initialized

	seen := in.tx.Bucket(bucketSeen)
	// A backfill for some forwarders only must not hide records from the others.
	mark := len(in.only) == 0
	inPage := make(map[string]struct{}, len(leads))
	for _, l := range leads {
		key := l.Key()
		if _, dup := inPage[key]; dup {
			continue
		}
		inPage[key] = struct{}{}

		val, err := seenValue(l)
		if err != nil {
			return res, err
		}
		old := seen.Get([]byte(key))
		changed := old != nil && !bytes.Equal(old, val)
		if mark && (old == nil || changed) {
			if err := seen.Put([]byte(key), val); err != nil {
				return res, fmt.Errorf("mark %s seen: %w", l.ID(), err)
			}
		}

		var ev event.Event
		switch {
		case old == nil && baseline:
			st.Seen++
			res.Baseline++
			continue
		case old == nil:
			if mark {
				st.Seen++
			}
			res.New++
			ev = event.NewCreated(l)
		case in.resend:
			res.Duplicate++
			ev = event.NewCreated(l)
		case changed && in.s.emitUpdates && !baseline:
			res.Updated++
			ev = event.NewUpdated(l, in.now)
		default:
			res.Duplicate++
			continue
		}
		res.Events = append(res.Events, ev)
		if err := in.enqueue(ev); err != nil {
			return res, err
		}
	}

	if !deliberate {
		st.Initialized = true
	}
	if err := putJSON(chatbots, []byte(serial), st); err != nil {
		return res, fmt.Errorf("chatbot %s state: %w", serial, err)
	}
	return res, nil
}

// enqueue puts one outbox entry for ev per forwarder that wants it.
func (in *ingestTx) enqueue(ev event.Event) error {
	if in.s.route == nil {
		return nil
	}
	outbox := in.tx.Bucket(bucketOutbox)
	var done []string
	for _, name := range in.s.route(ev) {
		if slices.Contains(done, name) || (len(in.only) > 0 && !slices.Contains(in.only, name)) {
			continue
		}
		done = append(done, name)
		if err := putDelivery(outbox, event.Delivery{Forwarder: name, Event: ev, Enqueued: in.now}); err != nil {
			return fmt.Errorf("outbox %s, event %s: %w", name, ev.ID, err)
		}
		in.added++
	}
	return nil
}

// putDelivery stores d in its forwarder's outbox sub-bucket under the next sequence,
// which it sets as d.Seq.
func putDelivery(outbox *bolt.Bucket, d event.Delivery) error {
	b, err := outbox.CreateBucketIfNotExists([]byte(d.Forwarder))
	if err != nil {
		return err
	}
	if d.Seq, err = b.NextSequence(); err != nil {
		return err
	}
	return putJSON(b, seqKey(d.Seq), d)
}

// seenValue encodes what the seen bucket keeps about a record: its CreatedAt (for
// pruning) and its content hash (to notice updates).
func seenValue(l event.Lead) ([]byte, error) {
	hash, err := hex.DecodeString(l.ContentHash())
	if err != nil {
		return nil, fmt.Errorf("content hash of %s: %w", l.ID(), err)
	}
	v := make([]byte, 12, 12+len(hash))
	binary.BigEndian.PutUint64(v, uint64(l.CreatedAt.Unix()))
	binary.BigEndian.PutUint32(v[8:], uint32(l.CreatedAt.Nanosecond()))
	return append(v, hash...), nil
}

// seenCreatedAt decodes the CreatedAt of a seen value.
func seenCreatedAt(v []byte) (time.Time, error) {
	if len(v) < 12 {
		return time.Time{}, fmt.Errorf("seen value is malformed (%d bytes)", len(v))
	}
	return time.Unix(int64(binary.BigEndian.Uint64(v)), int64(binary.BigEndian.Uint32(v[8:]))), nil
}
