package dedupe

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/leadbridge/leadbridge/event"
)

// fillFields sets every exported field of the struct v points to, nested structs
// included, to a value derived from n and the field's position, so that a field a codec
// forgets reads back as zero and shows.
func fillFields(t *testing.T, v reflect.Value, n *int) {
	t.Helper()
	timeType := reflect.TypeFor[time.Time]()
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		*n++
		switch {
		case f.Type() == timeType:
			f.Set(reflect.ValueOf(time.Date(2020+*n, time.Month(1+*n%12), 1+*n, *n, *n, *n, 1000+*n, time.UTC)))
		case f.Kind() == reflect.String:
			f.SetString(fmt.Sprintf("field %d: «%s»", *n, v.Type().Field(i).Name))
		case f.Kind() == reflect.Int, f.Kind() == reflect.Int64:
			f.SetInt(int64(-1000 * *n))
		case f.Kind() == reflect.Struct:
			fillFields(t, f, n)
		default:
			t.Fatalf("%s.%s: a field of kind %s; teach appendEvent and this test about it", v.Type(), v.Type().Field(i).Name, f.Kind())
		}
	}
}

// TestEventCodecKeepsEveryField: every exported field of event.Event and event.Lead
// survives the store's binary form, so a field added to either one fails here until the
// codec (with a new eventFormat) carries it.
func TestEventCodecKeepsEveryField(t *testing.T) {
	var ev event.Event
	n := 0
	fillFields(t, reflect.ValueOf(&ev).Elem(), &n)
	got, err := decodeEvent(appendEvent(nil, ev))
	require.NoError(t, err)
	assert.Equal(t, ev, got)

	rec, err := decodeEventRecord(appendEventRecord(nil, ev, 2))
	require.NoError(t, err)
	assert.Equal(t, ev, rec)

	// A truncated or padded form is refused, never read as a shorter event.
	enc := appendEvent(nil, ev)
	for _, bad := range [][]byte{enc[:len(enc)-1], enc[:10], append(enc, 0)} {
		_, err := decodeEvent(bad)
		assert.Error(t, err, "%d bytes", len(bad))
	}
}

// countEvents is how many event records the store holds for its outbox entries: the
// activity log, whose attempts refer to event records too, is first pruned of every
// attempt, as pruning it by age would.
func countEvents(t *testing.T, s *Store) int {
	t.Helper()
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketActivity)
		if log == nil {
			return nil
		}
		r := recorder{tx: tx, events: eventsIn(tx)}
		return log.ForEachBucket(func(name []byte) error {
			return r.prune(log.Bucket(name), time.Now().Add(ActivityMaxAge))
		})
	}))
	n := 0
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		n = tx.Bucket(bucketEvents).Stats().KeyN
		return nil
	}))
	return n
}

func twoForwarders(event.Event) []string { return []string{"bus", "crm"} }

func lead(i int) event.Lead {
	return event.Lead{Chatbot: "bot1", Kind: event.KindLead, Name: "Ada", Content: "hello", SessionID: int64(i),
		CreatedAt: time.Now().Add(-time.Duration(i) * time.Minute).UTC().Truncate(time.Microsecond)}
}

// TestEventStoredOnceForAllItsEntries: a record owed to two forwarders is one event
// record, handed to each as ingest built it; it goes with the last entry
// referring to it, however that entry leaves (acked, dead-lettered, dropped).
func TestEventStoredOnceForAllItsEntries(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "s.db"), Initial: InitialEmit, Route: twoForwarders})
	require.NoError(t, err)
	defer s.Close()
	res, err := s.Ingest(ctx, "bot1", []event.Lead{lead(1), lead(2), lead(3)})
	require.NoError(t, err)
	require.Equal(t, 3, res.New)
	assert.Equal(t, 3, countEvents(t, s), "one record per event, not per entry")

	bus, err := s.Pending(ctx, "bus", 0, 0)
	require.NoError(t, err)
	crm, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, bus, 3)
	require.Len(t, crm, 3)
	for i, d := range bus {
		assert.Equal(t, res.Events[i], d.Event, "the decoded event is the ingested one")
		assert.Equal(t, res.Events[i], crm[i].Event)
		assert.Equal(t, "bus", d.Forwarder)
		assert.False(t, d.Enqueued.IsZero())
	}

	// Event 0: acked by both. Event 1: acked by bus, dead for crm. Event 2: retried by
	// bus, then bus's outbox dropped and crm's acked.
	at := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	retry := bus[2]
	retry.Attempts, retry.FirstTry, retry.NextTry, retry.LastError = 1, at, at.Add(time.Minute), "HTTP 503"
	deadD := crm[1]
	deadD.Attempts, deadD.FirstTry, deadD.LastError = 3, at, "HTTP 400"
	require.NoError(t, s.Record(ctx, []event.Outcome{
		{Delivery: bus[0], Verdict: event.Acked},
		{Delivery: crm[0], Verdict: event.Acked},
		{Delivery: bus[1], Verdict: event.Acked},
		{Delivery: deadD, Verdict: event.Dead, At: at},
		{Delivery: retry, Verdict: event.Retrying},
	}))
	assert.Equal(t, 1, countEvents(t, s), "events 0 and 1 have no entry left")
	got, found, err := s.Entry(ctx, "bus", bus[2].Seq)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, 1, got.Attempts)
	assert.True(t, at.Equal(got.FirstTry))
	assert.True(t, at.Add(time.Minute).Equal(got.NextTry))
	assert.Equal(t, "HTTP 503", got.LastError)
	assert.Equal(t, res.Events[2].ID, got.Event.ID)

	dls, err := s.DeadLetters(ctx, "crm")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, res.Events[1].ID, dls[0].Event.ID)
	assert.Equal(t, res.Events[1].Data, dls[0].Event.Data, "a dead letter keeps its whole event")
	assert.Equal(t, "HTTP 400", dls[0].LastError)

	n, err := s.DropPending(ctx, "bus")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Equal(t, 1, countEvents(t, s), "crm still owes event 2")
	require.NoError(t, s.Record(ctx, []event.Outcome{{Delivery: crm[2], Verdict: event.Acked}}))
	assert.Equal(t, 0, countEvents(t, s))

	// A replayed dead letter gets an event record of its own, freed when delivered.
	replayed, err := s.Replay(ctx, "crm", "")
	require.NoError(t, err)
	require.Equal(t, 1, replayed)
	assert.Equal(t, 1, countEvents(t, s))
	again, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, again, 1)
	assert.Equal(t, res.Events[1].Data, again[0].Event.Data)
	require.NoError(t, s.Record(ctx, []event.Outcome{{Delivery: again[0], Verdict: event.Acked}}))
	assert.Equal(t, 0, countEvents(t, s))
}

// TestMovePendingKeepsOneEventRecord: moving entries to another forwarder keeps their
// event records; an entry whose event the target already owes gives up its
// reference, and the record goes with the last one.
func TestMovePendingKeepsOneEventRecord(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "s.db"), Initial: InitialEmit, Route: twoForwarders})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Ingest(ctx, "bot1", []event.Lead{lead(1), lead(2)})
	require.NoError(t, err)
	moved, already, err := s.MovePending(ctx, "bus", "crm")
	require.NoError(t, err)
	assert.Equal(t, 0, moved)
	assert.Equal(t, 2, already)
	assert.Equal(t, 2, countEvents(t, s))
	moved, already, err = s.MovePending(ctx, "crm", "crm-v2")
	require.NoError(t, err)
	assert.Equal(t, 2, moved)
	assert.Equal(t, 0, already)
	ds, err := s.Pending(ctx, "crm-v2", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 2)
	require.NoError(t, s.Record(ctx, []event.Outcome{{Delivery: ds[0], Verdict: event.Acked}, {Delivery: ds[1], Verdict: event.Acked}}))
	assert.Equal(t, 0, countEvents(t, s))
}

// writeV2Store writes what leadbridge's schema version 2 left on disk: the outbox
// entries as event.Delivery JSON, no events bucket.
func writeV2Store(t *testing.T, path string, ds []event.Delivery) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketMeta, bucketSeen, bucketOutbox, bucketDead, bucketChatbots, bucketPaused} {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		if err := tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, 2)); err != nil {
			return err
		}
		for _, d := range ds {
			b, err := tx.Bucket(bucketOutbox).CreateBucketIfNotExists([]byte(d.Forwarder))
			if err != nil {
				return err
			}
			raw, err := json.Marshal(d)
			if err != nil {
				return err
			}
			if err := b.SetSequence(d.Seq); err != nil {
				return err
			}
			if err := b.Put(seqKey(d.Seq), raw); err != nil {
				return err
			}
		}
		return nil
	}))
	require.NoError(t, db.Close())
}

// TestVersion2OutboxStillWorks: a store written by schema version 2 (JSON outbox
// entries) opens, read-only too; its entries are delivered, retried (then kept in the
// new form), dead-lettered and moved as before, beside entries taken since.
func TestVersion2OutboxStillWorks(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "v2.db")
	at := time.Date(2026, 11, 29, 8, 0, 0, 0, time.UTC)
	var old []event.Delivery
	for i := range 4 {
		d := event.Delivery{Forwarder: "crm", Seq: uint64(i + 1), Event: event.NewCreated(lead(10 + i)), Enqueued: at}
		if i == 3 {
			d.Attempts, d.FirstTry, d.NextTry, d.LastError = 2, at, at.Add(time.Hour), "HTTP 502"
		}
		old = append(old, d)
	}
	old = append(old, event.Delivery{Forwarder: "bus", Seq: 1, Event: event.NewCreated(lead(20)), Enqueued: at})
	writeV2Store(t, path, old)

	ro, err := Open(Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	got, err := ro.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, got, 4)
	require.NoError(t, ro.Close())

	s, err := Open(Options{Path: path, Initial: InitialEmit, Route: twoForwarders})
	require.NoError(t, err)
	defer s.Close()
	got, err = s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, got, 4)
	for i, d := range got {
		assert.Equal(t, old[i].Event, d.Event)
		assert.Equal(t, old[i].Seq, d.Seq)
		assert.Equal(t, old[i].Attempts, d.Attempts)
		assert.Equal(t, old[i].LastError, d.LastError)
		assert.True(t, old[i].NextTry.Equal(d.NextTry))
	}
	// New records go after the old entries, in the new form.
	res, err := s.Ingest(ctx, "bot1", []event.Lead{lead(1)})
	require.NoError(t, err)
	require.Equal(t, 1, res.New)
	all, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, all, 5)
	assert.Equal(t, uint64(5), all[4].Seq)
	assert.Equal(t, res.Events[0].ID, all[4].Event.ID)

	retry := got[1]
	retry.Attempts, retry.FirstTry, retry.NextTry, retry.LastError = 1, at, at.Add(time.Minute), "HTTP 503"
	dead := got[2]
	dead.Attempts, dead.LastError = 5, "HTTP 400"
	require.NoError(t, s.Record(ctx, []event.Outcome{
		{Delivery: got[0], Verdict: event.Acked},
		{Delivery: retry, Verdict: event.Retrying},
		{Delivery: dead, Verdict: event.Dead, At: at},
	}))
	left, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, left, 3)
	assert.Equal(t, old[1].Event, left[0].Event)
	assert.Equal(t, "HTTP 503", left[0].LastError)
	assert.Equal(t, 1, left[0].Attempts)
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketOutbox).Bucket([]byte("crm")).Get(seqKey(retry.Seq))
		assert.Equal(t, byte(entryFormat), v[0], "a retried legacy entry is rewritten in the new form")
		return nil
	}))
	dls, err := s.DeadLetters(ctx, "crm")
	require.NoError(t, err)
	require.Len(t, dls, 1)
	assert.Equal(t, old[2].Event, dls[0].Event)

	moved, already, err := s.MovePending(ctx, "bus", "crm")
	require.NoError(t, err)
	assert.Equal(t, 1, moved, "the legacy bus entry moves")
	assert.Equal(t, 1, already, "the new record's bus entry: crm owes it already")
	final, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, final, 4)
	assert.Equal(t, old[4].Event.Data, final[3].Event.Data)
	var outcomes []event.Outcome
	for _, d := range final {
		outcomes = append(outcomes, event.Outcome{Delivery: d, Verdict: event.Acked})
	}
	require.NoError(t, s.Record(ctx, outcomes))
	assert.Equal(t, 0, countEvents(t, s), "no event record outlives its entries")
	var version uint32
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		version = binary.BigEndian.Uint32(tx.Bucket(bucketMeta).Get(keySchema))
		return nil
	}))
	assert.EqualValues(t, schemaVersion, version, "opened for writing, the file says what it now holds")
}

// TestAckOfAnUnreadableEntry: an ack for an entry, or of an event record, that can no
// longer be read removes it and does not fail the other verdicts of the same write (the
// recorder would retry that write for ever).
func TestAckOfAnUnreadableEntry(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "s.db"), Initial: InitialEmit, Route: twoForwarders})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Ingest(ctx, "bot1", []event.Lead{lead(1), lead(2)})
	require.NoError(t, err)
	ds, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 2)
	bus, err := s.Pending(ctx, "bus", 0, 0)
	require.NoError(t, err)
	require.Len(t, bus, 2)
	// crm's first entry is damaged, and so is the event record of the second record.
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketOutbox).Bucket([]byte("crm")).Put(seqKey(ds[0].Seq), []byte{entryFormat, 1, 2}); err != nil {
			return err
		}
		return tx.Bucket(bucketEvents).Put(seqKey(2), []byte{eventFormat, 0})
	}))
	require.NoError(t, s.Record(ctx, []event.Outcome{
		{Delivery: ds[0], Verdict: event.Acked},
		{Delivery: ds[1], Verdict: event.Acked},
		{Delivery: bus[1], Verdict: event.Acked},
	}))
	left, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	assert.Empty(t, left)
	require.NoError(t, s.Record(ctx, []event.Outcome{{Delivery: bus[0], Verdict: event.Acked}}))
	// The damaged entry's reference to event 1 could not be released: that record stays,
	// one count too high, the price of an entry nobody can read.
	assert.Equal(t, 1, countEvents(t, s))
	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		assert.Nil(t, tx.Bucket(bucketEvents).Get(seqKey(2)), "the damaged event record went with its first release")
		return nil
	}))
}

// TestActivityRefersToTheEventRecord: an attempt refers to the event record its entry
// referred to (an entry that leaves hands its reference over), so the log keeps no copy
// of the event; the record goes once neither an entry nor an attempt refers to it.
func TestActivityRefersToTheEventRecord(t *testing.T) {
	ctx := context.Background()
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "s.db"), Initial: InitialEmit, Route: twoForwarders})
	require.NoError(t, err)
	defer s.Close()
	_, err = s.Ingest(ctx, "bot1", []event.Lead{lead(1)})
	require.NoError(t, err)
	bus, err := s.Pending(ctx, "bus", 0, 0)
	require.NoError(t, err)
	crm, err := s.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	retry := crm[0]
	retry.Attempts, retry.LastError = 1, "HTTP 503"
	require.NoError(t, s.Record(ctx, []event.Outcome{{Delivery: bus[0], Verdict: event.Acked}, {Delivery: retry, Verdict: event.Retrying}}))
	require.NoError(t, s.Record(ctx, []event.Outcome{{Delivery: crm[0], Verdict: event.Acked}}))

	require.NoError(t, s.db.View(func(tx *bolt.Tx) error {
		assert.Nil(t, tx.Bucket(bucketActivityEvents), "no copy of the event beside the log")
		events := tx.Bucket(bucketEvents)
		assert.Equal(t, 1, events.Stats().KeyN, "one record for the event")
		v := events.Get(seqKey(1))
		require.NotNil(t, v)
		assert.EqualValues(t, 3, binary.BigEndian.Uint32(v[1:]), "referred to by the three attempts, no entry")
		return nil
	}))
	ev, found, err := s.ActivityEvent(ctx, bus[0].Event.ID)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, bus[0].Event, ev)

	assert.Equal(t, 0, countEvents(t, s), "pruned attempts drop their references")
	_, found, err = s.ActivityEvent(ctx, bus[0].Event.ID)
	require.NoError(t, err)
	assert.False(t, found)
}
