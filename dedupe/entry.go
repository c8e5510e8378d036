package dedupe

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// Since schema version 3 an event is stored once, however many forwarders owe it, and
// each outbox entry is a small binary value referring to it:
//
//	events               8-byte big-endian event seq (the bucket's NextSequence) → event record
//	outbox/<forwarder>   8-byte big-endian seq → entry
//
// An event record is the format byte eventFormat, a 4-byte big-endian count of the
// outbox entries and activity log attempts referring to it, then the event's binary form
// (appendEvent). The record is deleted with the last entry or attempt referring to it. The event's JSON is not kept: it would
// make the file, and the pages of it a run reads back, more than twice as large, for
// less CPU than it saves (forwarders encode the event when they send it). An entry is
// the format byte entryFormat, the 8-byte event seq, Enqueued, FirstTry and NextTry (12
// bytes each, see appendTime), a 4-byte big-endian Attempts, then LastError.
//
// An outbox entry written by schema version 2 or older is the Delivery's JSON (it starts
// with '{'): it is still read, and rewritten in the binary form when its retry state
// changes or it is moved. Dead letters stay self-contained DeadLetter JSON, so that
// `dlq` reads them whatever became of the events bucket.
const (
	eventFormat = 1
	entryFormat = 1
	// eventHeader is the length of an event record's header: format and refs.
	eventHeader = 1 + 4
	// entryLen is the length of an entry without its LastError.
	entryLen = 1 + 8 + 3*timeLen + 4
	// timeLen is the length of a time as appendTime writes it.
	timeLen = 12
)

var bucketEvents = []byte("events")

// appendFill is how full bbolt fills a page of the events and outbox buckets before it
// splits it. Their keys only grow, so a split page is never added to again: bbolt's
// default of half full would leave the file, and the pages of it in memory, twice as
// large as their content.
const appendFill = 0.95

// entryRef is an outbox entry as stored: its retry state and the event it refers to.
// legacy entries (schema version 2 JSON) hold their event themselves (d.Event) and
// refer to none.
type entryRef struct {
	d      event.Delivery // Forwarder and Seq are set by the reader, Event only for legacy
	evSeq  uint64
	legacy bool
}

// appendTime appends t as 8-byte big-endian Unix seconds and 4-byte nanoseconds; the
// zero time reads back as the zero time (decodeTime).
func appendTime(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix()))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

// decodeTime reads what appendTime wrote, in UTC.
func decodeTime(b []byte) time.Time {
	return time.Unix(int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint32(b[8:]))).UTC()
}

// encodeEntry is the stored form of an entry referring to event record evSeq with d's
// retry state.
func encodeEntry(evSeq uint64, d event.Delivery) []byte {
	return appendEntry(make([]byte, 0, entryLen+len(d.LastError)), evSeq, d)
}

// appendEntry appends encodeEntry's value to b.
func appendEntry(b []byte, evSeq uint64, d event.Delivery) []byte {
	b = append(b, entryFormat)
	b = binary.BigEndian.AppendUint64(b, evSeq)
	b = appendTime(b, d.Enqueued)
	b = appendTime(b, d.FirstTry)
	b = appendTime(b, d.NextTry)
	b = binary.BigEndian.AppendUint32(b, uint32(d.Attempts))
	return append(b, d.LastError...)
}

// decodeEntry reads an entry of either form; forwarder and seq name it.
func decodeEntry(forwarder string, seq uint64, v []byte) (entryRef, error) {
	if len(v) > 0 && v[0] == '{' {
		var d event.Delivery
		if err := json.Unmarshal(v, &d); err != nil {
			return entryRef{}, fmt.Errorf("decode stored entry: %w", err)
		}
		d.Forwarder, d.Seq = forwarder, seq
		return entryRef{d: d, legacy: true}, nil
	}
	if len(v) < entryLen || v[0] != entryFormat {
		return entryRef{}, fmt.Errorf("outbox entry is malformed (%d bytes, format %d)", len(v), first(v))
	}
	r := entryRef{evSeq: binary.BigEndian.Uint64(v[1:])}
	r.d = event.Delivery{
		Forwarder: forwarder,
		Seq:       seq,
		Enqueued:  decodeTime(v[9:]),
		FirstTry:  decodeTime(v[9+timeLen:]),
		NextTry:   decodeTime(v[9+2*timeLen:]),
		Attempts:  int(binary.BigEndian.Uint32(v[9+3*timeLen:])),
		LastError: string(v[entryLen:]),
	}
	return r, nil
}

func first(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// appendString appends s with its uvarint length.
func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// appendEvent appends ev's binary form: its fields in declaration order, strings with
// their uvarint length, times as appendTime, integers as varints. Every field of
// event.Event and event.Lead is in it (TestEventCodecKeepsEveryField fails otherwise);
// a new field needs a new eventFormat, the old one still read.
func appendEvent(b []byte, ev event.Event) []byte {
	for _, s := range []string{ev.SpecVersion, ev.ID, ev.Source, ev.Type} {
		b = appendString(b, s)
	}
	b = appendTime(b, ev.Time)
	b = appendString(b, ev.DataContentType)
	b = appendString(b, ev.Subject)
	l := ev.Data
	for _, s := range []string{l.Chatbot, l.ChatbotName, l.Account, string(l.Kind), l.Name, l.Email, l.Phone, l.Content} {
		b = appendString(b, s)
	}
	b = binary.AppendVarint(b, l.SessionID)
	b = appendString(b, l.URI)
	b = binary.AppendVarint(b, int64(l.Count))
	return appendTime(b, l.CreatedAt)
}

// errShortEvent is a binary event that ends before its last field.
var errShortEvent = errors.New("stored event is truncated")

// eventReader reads appendEvent's fields in order; the first problem sticks in err.
type eventReader struct {
	b   []byte
	err error
}

func (r *eventReader) str() string {
	n, k := binary.Uvarint(r.b)
	if k <= 0 || uint64(len(r.b)-k) < n {
		r.err, r.b = errShortEvent, nil
		return ""
	}
	s := string(r.b[k : k+int(n)])
	r.b = r.b[k+int(n):]
	return s
}

func (r *eventReader) time() time.Time {
	if len(r.b) < timeLen {
		r.err, r.b = errShortEvent, nil
		return time.Time{}
	}
	t := decodeTime(r.b)
	r.b = r.b[timeLen:]
	return t
}

func (r *eventReader) varint() int64 {
	n, k := binary.Varint(r.b)
	if k <= 0 {
		r.err, r.b = errShortEvent, nil
		return 0
	}
	r.b = r.b[k:]
	return n
}

// decodeEvent reads appendEvent's form.
func decodeEvent(b []byte) (event.Event, error) {
	r := eventReader{b: b}
	var ev event.Event
	ev.SpecVersion, ev.ID, ev.Source, ev.Type = r.str(), r.str(), r.str(), r.str()
	ev.Time = r.time()
	ev.DataContentType, ev.Subject = r.str(), r.str()
	l := &ev.Data
	l.Chatbot, l.ChatbotName, l.Account, l.Kind = r.str(), r.str(), r.str(), event.Kind(r.str())
	l.Name, l.Email, l.Phone, l.Content = r.str(), r.str(), r.str(), r.str()
	l.SessionID = r.varint()
	l.URI = r.str()
	l.Count = int(r.varint())
	l.CreatedAt = r.time()
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("stored event has %d bytes past its last field", len(r.b))
	}
	return ev, r.err
}

// appendEventRecord appends to b the events bucket's value for ev, referred to by refs
// outbox entries.
func appendEventRecord(b []byte, ev event.Event, refs int) []byte {
	b = append(b, eventFormat)
	b = binary.BigEndian.AppendUint32(b, uint32(refs))
	return appendEvent(b, ev)
}

// checkEventRecord checks the header of an event record.
func checkEventRecord(v []byte) error {
	if len(v) < eventHeader || v[0] != eventFormat {
		return fmt.Errorf("event record is malformed (%d bytes, format %d)", len(v), first(v))
	}
	return nil
}

// decodeEventRecord reads an event record's event.
func decodeEventRecord(v []byte) (event.Event, error) {
	if err := checkEventRecord(v); err != nil {
		return event.Event{}, err
	}
	return decodeEvent(v[eventHeader:])
}

// putEvent stores ev as a new event record referred to by refs entries, its key and
// value made in a (nil: each its own allocation), and returns its seq.
func putEvent(tx *bolt.Tx, ev event.Event, refs int, a *arena) (uint64, error) {
	events := tx.Bucket(bucketEvents)
	events.FillPercent = appendFill
	seq, err := events.NextSequence()
	if err != nil {
		return 0, err
	}
	key := a.take(binary.BigEndian.AppendUint64(a.next(), seq))
	return seq, events.Put(key, a.take(appendEventRecord(a.next(), ev, refs)))
}

// appendTo is parent's sub-bucket name, created if need be and filled for appending,
// with the next sequence to append under.
func appendTo(parent *bolt.Bucket, name string) (*bolt.Bucket, uint64, error) {
	b, err := parent.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, 0, err
	}
	b.FillPercent = appendFill
	seq, err := b.NextSequence()
	return b, seq, err
}

// arena hands out the keys and values of one write transaction from shared blocks
// instead of one allocation each: bbolt keeps them until the transaction ends, and a
// block is dropped with the transaction. A value is appended to next() and then taken
// with take; one that outgrows its block moves, whole, to memory of its own.
type arena struct {
	b []byte
}

// An arena's first block is arenaFirst bytes, each next one twice the last up to
// arenaMax; arenaRoom is the room below which a value starts a new block.
const (
	arenaFirst = 4 << 10
	arenaMax   = 64 << 10
	arenaRoom  = 1 << 10
)

// next is where the next value is to be appended: nowhere on a nil arena, whose values
// are each their own allocation.
func (a *arena) next() []byte {
	if a == nil {
		return nil
	}
	if cap(a.b)-len(a.b) < arenaRoom {
		a.b = make([]byte, 0, min(max(2*cap(a.b), arenaFirst), arenaMax))
	}
	return a.b[len(a.b):len(a.b)]
}

// take keeps v, appended to next(), and returns it capped so that no append can reach
// the value after it.
func (a *arena) take(v []byte) []byte {
	if a == nil {
		return v
	}
	if cap(v) == cap(a.b)-len(a.b) { // else append moved it: it only outgrew the room left
		a.b = a.b[:len(a.b)+len(v)]
	}
	return v[:len(v):len(v)]
}

// readEvent reads event record seq.
func readEvent(tx *bolt.Tx, seq uint64) (event.Event, error) {
	events := tx.Bucket(bucketEvents)
	var v []byte
	if events != nil {
		v = events.Get(seqKey(seq))
	}
	if v == nil {
		return event.Event{}, fmt.Errorf("event record #%d is missing", seq)
	}
	ev, err := decodeEventRecord(v)
	if err != nil {
		return event.Event{}, fmt.Errorf("event record #%d: %w", seq, err)
	}
	return ev, nil
}

// unref drops one reference to event record seq, deleting it with the last one, or at
// once when it is unreadable. A missing record is not an error: there is nothing left
// to free.
func unref(tx *bolt.Tx, seq uint64) error {
	events := tx.Bucket(bucketEvents)
	key := seqKey(seq)
	v := events.Get(key)
	if v == nil {
		return nil
	}
	if checkEventRecord(v) != nil {
		// Unreadable: no entry can deliver it, and a failure here would fail the other
		// verdicts recorded with this one.
		return events.Delete(key)
	}
	refs := binary.BigEndian.Uint32(v[1:])
	if refs <= 1 {
		return events.Delete(key)
	}
	nv := append([]byte(nil), v...) // v is bbolt's memory, read-only
	binary.BigEndian.PutUint32(nv[1:], refs-1)
	return events.Put(key, nv)
}

// readDelivery reads the whole of an outbox entry: its retry state and its event.
func readDelivery(tx *bolt.Tx, forwarder string, seq uint64, v []byte) (entryRef, error) {
	r, err := decodeEntry(forwarder, seq, v)
	if err != nil || r.legacy {
		return r, err
	}
	r.d.Event, err = readEvent(tx, r.evSeq)
	return r, err
}

// putDelivery stores d (its event included) in its forwarder's outbox sub-bucket under
// the next sequence, which it sets as d.Seq, with an event record of its own.
func putDelivery(tx *bolt.Tx, d event.Delivery) error {
	evSeq, err := putEvent(tx, d.Event, 1, nil)
	if err != nil {
		return err
	}
	return putRef(tx, d, evSeq, nil)
}

// putRef stores an entry referring to event record evSeq with d's retry state in d's
// forwarder's outbox, under the next sequence, its key and value made in a (nil: each
// its own allocation).
func putRef(tx *bolt.Tx, d event.Delivery, evSeq uint64, a *arena) error {
	b, seq, err := appendTo(tx.Bucket(bucketOutbox), d.Forwarder)
	if err != nil {
		return err
	}
	key := a.take(binary.BigEndian.AppendUint64(a.next(), seq))
	return b.Put(key, a.take(appendEntry(a.next(), evSeq, d)))
}

// addRef counts one more reference to event record seq. It reports false, changing
// nothing, when the record is missing or unreadable: there is nothing to refer to.
func addRef(tx *bolt.Tx, seq uint64) (bool, error) {
	events := tx.Bucket(bucketEvents)
	key := seqKey(seq)
	v := events.Get(key)
	if v == nil || checkEventRecord(v) != nil {
		return false, nil
	}
	nv := append([]byte(nil), v...) // v is bbolt's memory, read-only
	binary.BigEndian.PutUint32(nv[1:], binary.BigEndian.Uint32(v[1:])+1)
	return true, events.Put(key, nv)
}
