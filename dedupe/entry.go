package dedupe

import (
	"bytes"
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

// eventReader reads appendEvent's fields in order from b; the first problem sticks in
// err. Its strings are cut from s, one copy of b made at the start: an event has a dozen
// strings, and each its own allocation made reading the outbox a tenth of the pipeline's
// garbage.
type eventReader struct {
	b   []byte
	s   string // b as a string
	off int    // of the next field in b and s
	err error
}

func (r *eventReader) str() string {
	n, k := binary.Uvarint(r.b[r.off:])
	if k <= 0 || uint64(len(r.b)-r.off-k) < n {
		r.fail()
		return ""
	}
	start := r.off + k
	r.off = start + int(n)
	return r.s[start:r.off]
}

func (r *eventReader) time() time.Time {
	if len(r.b)-r.off < timeLen {
		r.fail()
		return time.Time{}
	}
	t := decodeTime(r.b[r.off:])
	r.off += timeLen
	return t
}

func (r *eventReader) varint() int64 {
	n, k := binary.Varint(r.b[r.off:])
	if k <= 0 {
		r.fail()
		return 0
	}
	r.off += k
	return n
}

// fail notes a field that ends past b; every read after it reads nothing.
func (r *eventReader) fail() {
	if r.err == nil {
		r.err = errShortEvent
	}
	r.off = len(r.b)
}

// decodeEvent reads appendEvent's form.
func decodeEvent(b []byte) (event.Event, error) {
	r := eventReader{b: b, s: string(b)}
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
	if r.err == nil && r.off != len(r.b) {
		r.err = fmt.Errorf("stored event has %d bytes past its last field", len(r.b)-r.off)
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

// appendTo is parent's sub-bucket name, created if need be and filled for appending.
func appendTo(parent *bolt.Bucket, name string) (*bolt.Bucket, error) {
	b, err := parent.CreateBucketIfNotExists([]byte(name))
	if err != nil {
		return nil, err
	}
	b.FillPercent = appendFill
	return b, nil
}

// subBuckets are the sub-buckets of parent (one per forwarder) that a transaction uses
// over and over, each looked up by name once: a lookup copies the name, and one not yet
// open in the transaction searches parent.
type subBuckets struct {
	parent *bolt.Bucket
	list   []namedBucket
}

// namedBucket is a sub-bucket subBuckets looked up.
type namedBucket struct {
	name string
	b    *bolt.Bucket // nil: parent has none by that name
	c    *bolt.Cursor // over b, made when first needed
}

// get is parent's sub-bucket name, its b nil if there is none. It stays valid until the
// next get or appendTo.
func (s *subBuckets) get(name string) *namedBucket {
	for i := range s.list {
		if s.list[i].name == name {
			return &s.list[i]
		}
	}
	s.list = append(s.list, namedBucket{name: name, b: s.parent.Bucket([]byte(name))})
	return &s.list[len(s.list)-1]
}

// appendTo is parent's sub-bucket name, created if need be and filled for appending.
func (s *subBuckets) appendTo(name string) (*bolt.Bucket, error) {
	n := s.get(name)
	if n.b == nil {
		b, err := appendTo(s.parent, name)
		if err != nil {
			return nil, err
		}
		n.b = b
	}
	n.b.FillPercent = appendFill
	return n.b, nil
}

// cursor is a cursor over n.b, which must be there. Whoever uses it places it with Seek
// first (see eventRecords).
func (n *namedBucket) cursor() *bolt.Cursor {
	if n.c == nil {
		n.c = n.b.Cursor()
	}
	return n.c
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

// key is seq's key (seqKey) made in a.
func (a *arena) key(seq uint64) []byte {
	return a.take(binary.BigEndian.AppendUint64(a.next(), seq))
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

// eventRecords is the events bucket of one transaction with one cursor for its lookups:
// bbolt's Bucket.Get and Delete each make a cursor of their own, an allocation and a
// stack grown anew, and a batch of outcomes or a page of records looks up many records.
// Every lookup places the cursor with Seek; it is never stepped, since a bbolt cursor may
// skip a key after a change to its bucket (etcd-io/bbolt#146).
type eventRecords struct {
	b   *bolt.Bucket // nil in a read-only store that never had one
	c   *bolt.Cursor
	key [8]byte // of the record last looked up or put (bbolt copies a key it puts)
}

// eventsIn is tx's events bucket.
func eventsIn(tx *bolt.Tx) *eventRecords {
	e := &eventRecords{b: tx.Bucket(bucketEvents)}
	if e.b != nil {
		e.c = e.b.Cursor()
	}
	return e
}

// find is record seq's value, nil if it is missing; the cursor is left on it.
func (e *eventRecords) find(seq uint64) []byte {
	if e.b == nil {
		return nil
	}
	binary.BigEndian.PutUint64(e.key[:], seq)
	k, v := e.c.Seek(e.key[:])
	if !bytes.Equal(k, e.key[:]) {
		return nil
	}
	return v
}

// put stores ev as a new event record referred to by refs entries, its value made in a
// (nil: an allocation of its own), and returns its seq.
func (e *eventRecords) put(ev event.Event, refs int, a *arena) (uint64, error) {
	e.b.FillPercent = appendFill
	seq, err := e.b.NextSequence()
	if err != nil {
		return 0, err
	}
	binary.BigEndian.PutUint64(e.key[:], seq)
	return seq, e.b.Put(e.key[:], a.take(appendEventRecord(a.next(), ev, refs)))
}

// read reads event record seq.
func (e *eventRecords) read(seq uint64) (event.Event, error) {
	v := e.find(seq)
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
// to free. A record that stays is rewritten in a (nil: an allocation of its own).
func (e *eventRecords) unref(seq uint64, a *arena) error {
	v := e.find(seq)
	if v == nil {
		return nil
	}
	// An unreadable record goes at once: no entry can deliver it, and a failure here
	// would fail the other verdicts recorded with this one.
	if checkEventRecord(v) != nil || binary.BigEndian.Uint32(v[1:]) <= 1 {
		return e.c.Delete()
	}
	return e.recount(v, -1, a)
}

// addRef counts one more reference to event record seq, rewritten in a (nil: an
// allocation of its own). It reports false, changing nothing, when the record is missing
// or unreadable: there is nothing to refer to.
func (e *eventRecords) addRef(seq uint64, a *arena) (bool, error) {
	v := e.find(seq)
	if v == nil || checkEventRecord(v) != nil {
		return false, nil
	}
	return true, e.recount(v, +1, a)
}

// recount rewrites v, the readable record find last found, with delta more references.
func (e *eventRecords) recount(v []byte, delta int32, a *arena) error {
	nv := a.take(append(a.next(), v...)) // v is bbolt's memory, read-only
	binary.BigEndian.PutUint32(nv[1:], uint32(int32(binary.BigEndian.Uint32(v[1:]))+delta))
	return e.b.Put(e.key[:], nv)
}

// readDelivery reads the whole of an outbox entry: its retry state and its event.
func readDelivery(evs *eventRecords, forwarder string, seq uint64, v []byte) (entryRef, error) {
	r, err := decodeEntry(forwarder, seq, v)
	if err != nil || r.legacy {
		return r, err
	}
	r.d.Event, err = evs.read(r.evSeq)
	return r, err
}

// putDelivery stores d (its event included) in its forwarder's outbox sub-bucket under
// the next sequence, with an event record of its own.
func putDelivery(tx *bolt.Tx, evs *eventRecords, d event.Delivery) error {
	evSeq, err := evs.put(d.Event, 1, nil)
	if err != nil {
		return err
	}
	b, err := appendTo(tx.Bucket(bucketOutbox), d.Forwarder)
	if err != nil {
		return err
	}
	return putRef(b, d, evSeq, nil)
}

// putRef stores an entry referring to event record evSeq with d's retry state in b, d's
// forwarder's outbox sub-bucket filled for appending, under b's next sequence, its value
// made in a (nil: an allocation of its own).
func putRef(b *bolt.Bucket, d event.Delivery, evSeq uint64, a *arena) error {
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	return b.Put(a.key(seq), a.take(appendEntry(a.next(), evSeq, d)))
}
