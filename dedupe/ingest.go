package dedupe

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// Ingest records one polled page of a chatbot's records in a single transaction: unseen
// records are marked seen and put in the outbox for every forwarder Route names; seen
// ones are duplicates, or updated events when their content changed and EmitUpdates is
// on. The first Ingest of a chatbot with Initial "skip" marks its records seen without
// sending them. If the transaction fails nothing is marked seen and the error is returned.
//
// A record repeated within the page counts once. Result.Events holds the created and
// updated events of the page in record order, including those no forwarder wanted.
// Records already seen are counted as Duplicate even during the baseline.
//
// No single record fails the page. A record the store cannot take (another chatbot's, an
// unknown kind, a CreatedAt outside years 0..9999, an event that cannot be encoded) is
// checked before anything of it is written, left unseen, and listed in Result.Rejected
// with its index in leads and a reason naming the field; the rest are taken.
//
// With a Retention, an unseen record created before the retention horizon is counted in
// Result.Stale and neither taken nor marked seen: its key could have been pruned, so it
// may be a record announced long ago. A seen record's last-seen time is refreshed when
// it is older than a tenth of the retention, so that a poll of known records writes
// almost nothing while keys the API still returns are never pruned.
func (s *Store) Ingest(ctx context.Context, serial string, leads []event.Lead) (event.Ingested, error) {
	return s.takeWhole(ctx, serial, leads, nil, true)
}

// Backfill takes records a backfill asked for, shaped by o. Unlike Ingest it never
// applies the initial=skip baseline, never marks the chatbot initialized, and takes
// records older than the retention horizon too: they are marked seen as of now, so their
// keys outlive the retention from the backfill on. Records re-sent with o.Resend count as
// Duplicate and appear in Result.Events.
//
// With o.Only set, the backfill is for those forwarders alone and marks nothing seen, so
// the others still get every record from polling: a record never seen is queued for the
// Only forwarders and counted New, and the next Ingest queues it for every forwarder (the
// Only ones again, with the same event id); a changed record's new content is not stored,
// so the next Ingest still sends its updated event (same id) to every forwarder.
func (s *Store) Backfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error) {
	return s.takeWhole(ctx, serial, leads, &o, true)
}

// DryBackfill says what Backfill would do with the same arguments (Result.Events is what
// would be sent) in read transactions: it writes, signals and logs nothing, and never
// waits for a writer such as the running daemon's poll.
func (s *Store) DryBackfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error) {
	return s.takeWhole(ctx, serial, leads, &o, false)
}

// takeWhole takes a whole page: a poll's if backfill is nil, else a backfill's; in write
// transactions if write, else in read ones (a dry run).
func (s *Store) takeWhole(ctx context.Context, serial string, leads []event.Lead, backfill *event.BackfillOptions, write bool) (event.Ingested, error) {
	if s.readOnly {
		return event.Ingested{}, s.wrap("ingest "+serial, ErrReadOnly)
	}
	if err := ctx.Err(); err != nil {
		return event.Ingested{}, s.wrap("ingest "+serial, err)
	}
	p := s.newPageIngest(serial, backfill, write)
	return p.add(leads, true)
}

// IngestPage is Ingest for a page handed over in parts, so that the caller never holds
// all of it: read calls take with each part in order; take records it as Ingest would,
// in transactions of at most 1,000 records, and returns what it did, Events included.
// The parts are one page: a record repeated across parts counts once, Rejected indices
// count from the page's first record, and the first-start baseline (initial: skip) is
// decided before the first part, for all of them. The page is complete, and the chatbot
// marked initialized, with the part handed over with last set (in that part's last
// transaction), or else once read returns nil after handing over some part; a read that
// hands over nothing (the poller knew the answer) touches nothing. A page cut short by a
// failure leaves the baseline to the next poll. A failing take returns the store's error, after which read
// should stop; IngestPage returns read's error (which may be take's).
func (s *Store) IngestPage(ctx context.Context, serial string, read func(take func(leads []event.Lead, last bool) (event.Ingested, error)) error) error {
	if s.readOnly {
		return s.wrap("ingest "+serial, ErrReadOnly)
	}
	if err := ctx.Err(); err != nil {
		return s.wrap("ingest "+serial, err)
	}
	p := s.newPageIngest(serial, nil, true)
	err := event.TakePage(read, p.add)
	if errors.Is(err, event.ErrPartAfterEnd) || errors.Is(err, event.ErrReadAfterFailed) {
		return s.wrap("ingest "+serial, err)
	}
	return err
}

// pageIngest is one page being taken, in one or more parts.
type pageIngest struct {
	s       *Store
	serial  string
	write   bool // false for a dry run: read transactions, no signal, no log
	page    ingestPage
	offset  int  // records of the page taken so far
	started bool // page.now and page.storeNow are set
}

func (s *Store) newPageIngest(serial string, backfill *event.BackfillOptions, write bool) *pageIngest {
	return &pageIngest{s: s, serial: serial, write: write,
		page: ingestPage{backfill: backfill, inPage: make(map[string]struct{})}}
}

// add takes the next part of the page; last marks the chatbot initialized (unless a
// backfill). The page's clock is read at its first part, after the store's clock has
// observed that part's record times; a dry run leaves the store's clock alone.
func (p *pageIngest) add(leads []event.Lead, last bool) (event.Ingested, error) {
	s, serial := p.s, p.serial
	wall := s.now()
	if p.started {
		wall = p.page.now
	}
	for _, l := range leads {
		if p.write && l.Chatbot == serial && validYear(l.CreatedAt) {
			s.clock.observe(l.CreatedAt, wall)
		}
	}
	if !p.started {
		storeNow := wall // a dry run writes no time
		if p.write {
			storeNow = s.clock.read(wall)
		}
		p.started, p.page.now, p.page.storeNow = true, wall, storeNow
	}
	var res event.Ingested
	if len(leads) == 0 && !last { // the baseline is decided by the first part with records, or at the end
		return res, nil
	}
	for start := 0; start == 0 || start < len(leads); start += maxTxRecords {
		chunk := leads[start:min(start+maxTxRecords, len(leads))]
		r, err := s.ingestChunk(serial, chunk, p.offset+start, last && start+len(chunk) == len(leads), &p.page, p.write)
		if err != nil {
			// The chunks before this one are taken, with their deliveries: announce them
			// (the next poll sees them as seen) and report the failure.
			return res, s.wrap("ingest "+serial, err)
		}
		if start == 0 {
			res = r // most parts are one chunk: no copy of their events
		} else {
			res = res.Add(r)
		}
	}
	p.offset += len(leads)
	if !p.write {
		return res, nil
	}
	for _, r := range res.Rejected {
		s.log.Warn("record rejected", "chatbot", serial, "index", r.Index, "event_id", r.EventID, "reason", r.Reason)
	}
	if res.Stale > 0 {
		s.logStale(serial, res.Stale, p.page.storeNow.Add(-s.retention))
	}
	if !s.log.Enabled(context.Background(), slog.LevelDebug) {
		return res, nil
	}
	for _, ev := range res.Events {
		s.log.Debug("record taken", append(ev.LogAttrs(), "action", ev.Action())...)
	}
	return res, nil
}

// logStale logs, once per chatbot in this process, that records older than the
// retention horizon were ignored.
func (s *Store) logStale(serial string, n int, horizon time.Time) {
	s.staleMu.Lock()
	logged := s.staleLogged[serial]
	s.staleLogged[serial] = true
	s.staleMu.Unlock()
	if !logged {
		s.log.Debug("the API returns records older than store.retention; they are ignored (logged once per chatbot)",
			"chatbot", serial, "count", n, "horizon", horizon)
	}
}

// maxTxRecords bounds the records one write transaction takes. A large page is taken in
// several transactions, each record still atomically with its deliveries, so that memory
// and the cost of inserting into bbolt stay bounded; a crash between two leaves the rest
// of the page to the next poll.
const maxTxRecords = 1000

// ingestPage is what the transactions of one Ingest share.
type ingestPage struct {
	now      time.Time              // the wall clock: event and outbox times
	storeNow time.Time              // the store's clock: last-seen times and the retention horizon
	backfill *event.BackfillOptions // nil for a poll
	baseline bool                   // decided by the first transaction: this page is the chatbot's baseline
	inPage   map[string]struct{}    // keys met so far in the page
}

// ingestChunk takes leads, which start at index offset of the page, in one write
// transaction, or says what it would do in a read transaction if not write; last says
// it is the page's last chunk, which marks the chatbot initialized. A transaction that
// would write nothing is rolled back, not committed, so that a poll of known records
// costs no fsync.
//
// Route runs with no transaction open: it runs the forwarders' jq filters, which may
// take up to their time bound each, and the write transaction blocks every other
// writer of the store (other chatbots' pages, the dispatcher's outcomes). So a chunk
// that makes events is first run only to find them, and rolled back; its events are
// routed; and the chunk is run again with their routes. Should another writer change
// what the chunk makes in between (taking some of its records), the run that meets
// events without a route is rolled back too and they are routed; the third run routes
// whatever it still lacks inside its transaction, so that a chunk always ends.
//
// Running a chunk twice costs throughput, so when CheapRoute says that no forwarder has
// a filter, Route is only the forwarders' types, chatbots and accounts lists, cheap and
// bounded, and the chunk routes inside its one transaction. A reload that adds a filter
// just after it was asked lets at most this chunk run the filter inside the transaction,
// each run still within its time bound.
func (s *Store) ingestChunk(serial string, leads []event.Lead, offset int, last bool, page *ingestPage, write bool) (event.Ingested, error) {
	var routes map[string]routed
	cheap := s.cheapRoute != nil && s.cheapRoute()
	for attempt := 1; ; attempt++ {
		tx, err := s.db.Begin(write)
		if err != nil {
			return event.Ingested{}, err
		}
		in := ingestTx{s: s, tx: tx, ingestPage: page, routes: routes, routeHere: cheap || attempt == maxRouteAttempts}
		res, err := in.run(serial, leads, offset, last)
		if err != nil || len(in.unrouted) == 0 {
			return s.finishChunk(&in, res, err)
		}
		for _, key := range in.met { // the next run meets them again
			delete(page.inPage, key)
		}
		if err := tx.Rollback(); err != nil {
			return event.Ingested{}, err
		}
		if routes == nil {
			routes = make(map[string]routed, len(in.unrouted))
		}
		for _, u := range in.unrouted {
			routes[u.ev.ID] = routed{event: u.json, names: s.route(u.ev)}
		}
	}
}

// maxRouteAttempts is the run of a chunk that routes, inside its transaction, the events
// the runs before it did not meet.
const maxRouteAttempts = 3

// routed is an event's route, found outside the transaction: the event as encoded then,
// and the forwarders that want it.
type routed struct {
	event []byte
	names []string
}

// finishChunk commits (or, if it wrote nothing or failed, rolls back) the transaction of
// in, whose run returned res and err.
func (s *Store) finishChunk(in *ingestTx, res event.Ingested, err error) (event.Ingested, error) {
	tx := in.tx
	if err == nil && in.wrote {
		if err = s.clock.persist(tx); err == nil {
			err = tx.Commit()
		}
	} else {
		err = errors.Join(err, tx.Rollback())
	}
	if err != nil {
		return event.Ingested{}, err
	}
	if in.added > 0 {
		s.signal()
	}
	return res, nil
}

// ingestTx is one chunk of an Ingest in progress inside a transaction; in a read one (a
// dry run) it decides everything and puts nothing.
type ingestTx struct {
	*ingestPage
	s     *Store
	tx    *bolt.Tx
	added int  // outbox entries put
	wrote bool // anything put at all

	// The chunk in progress.
	serial    string
	st        event.ChatbotState // the chatbot's state, as the chunk changes it
	res       event.Ingested
	opts      event.BackfillOptions // zero for a poll
	horizon   time.Time             // unseen records created before it are stale; zero: none
	seen      *bolt.Bucket
	seenAt    *bolt.Cursor // seenValue's
	keyBuf    []byte       // seenValue's
	events    *eventRecords
	outbox    subBuckets // its forwarders' sub-buckets
	write     bool       // the transaction writes (not a dry run)
	mark      bool       // taken records are marked seen (not a backfill for some forwarders only)
	marks     []seenMark // seen keys to write at the end of the chunk
	met       []string   // keys this run added to inPage
	remaining int        // records of the chunk from the one being taken on
	arena     arena      // the keys and values the transaction puts

	// Routing (see ingestChunk).
	routes    map[string]routed // by event id, found before this run
	routeHere bool              // route an event routes lacks now, in the transaction
	unrouted  []unrouted        // events routes lacks, to route before the next run
}

// unrouted is an event a run met without its route, and its encoding.
type unrouted struct {
	ev   event.Event
	json []byte
}

// fate is what a chunk makes of one valid record.
type fate int

// The fates of a record.
const (
	fateDuplicate fate = iota // seen and unchanged, or its change not announced
	fateStale                 // unseen but created before the retention horizon: not taken
	fateBaseline              // unseen, taken as known without an event (the first poll, initial: skip)
	fateNew                   // unseen: a created event
	fateResent                // seen, sent again as its created event (a backfill with Resend)
	fateUpdated               // seen, its content changed: an updated event (emit_updates)
)

// fate decides what the chunk makes of record l, seen before or not, its content changed
// or not.
func (in *ingestTx) fate(l event.Lead, seen, changed bool) fate {
	switch {
	case !seen && !in.horizon.IsZero() && l.CreatedAt.Before(in.horizon):
		return fateStale
	case !seen && in.baseline:
		return fateBaseline
	case !seen:
		return fateNew
	case in.opts.Resend:
		return fateResent
	case changed && in.s.emitUpdates && !in.baseline:
		return fateUpdated
	}
	return fateDuplicate
}

// seenMark is a seen key to write at the end of a chunk.
type seenMark struct {
	key, val []byte
	id       string // the record's event id, for an error
}

func (in *ingestTx) run(serial string, leads []event.Lead, offset int, last bool) (event.Ingested, error) {
	chatbots := in.tx.Bucket(bucketChatbots)
	if _, err := getJSON(chatbots, []byte(serial), &in.st); err != nil {
		return in.res, fmt.Errorf("chatbot %s state: %w", serial, err)
	}
	before := in.st
	poll := in.backfill == nil
	if offset == 0 {
		in.baseline = poll && !in.s.initialEmit && !in.st.Initialized
	}
	if poll && in.s.retention > 0 {
		in.horizon = in.storeNow.Add(-in.s.retention)
	}
	if !poll {
		in.opts = *in.backfill
	}
	in.serial, in.seen, in.write = serial, in.tx.Bucket(bucketSeen), in.tx.Writable()
	if in.write {
		in.events, in.outbox = eventsIn(in.tx), subBuckets{parent: in.tx.Bucket(bucketOutbox)}
	}
	// A backfill for some forwarders only must not hide records from the others.
	in.mark = in.write && len(in.opts.Only) == 0
	for j, l := range leads {
		in.remaining = len(leads) - j
		if err := in.record(offset+j, l); err != nil {
			return in.res, err
		}
	}
	if len(in.unrouted) > 0 {
		return in.res, nil // rolled back: the chunk is run again once they are routed
	}

	// Seen keys go in in key order: bbolt then appends to a few leaf pages instead of
	// inserting all over its tree (the API's order is not the keys' order).
	slices.SortFunc(in.marks, func(a, b seenMark) int { return bytes.Compare(a.key, b.key) })
	for _, m := range in.marks {
		if err := in.seen.Put(m.key, m.val); err != nil {
			return in.res, fmt.Errorf("mark %s seen: %w", m.id, err)
		}
		in.wrote = true
	}

	if poll && last {
		in.st.Initialized = true
	}
	if in.st == before || !in.write {
		return in.res, nil
	}
	in.wrote = true
	if err := putJSON(chatbots, []byte(serial), in.st); err != nil {
		return in.res, fmt.Errorf("chatbot %s state: %w", serial, err)
	}
	return in.res, nil
}

// record takes record l, the i-th of the page: it is rejected, skipped as a repeat
// within the page, or given its fate, counted, marked seen (at the end of the chunk) and
// queued with its event. Only a failure of the store is returned.
func (in *ingestTx) record(i int, l event.Lead) error {
	// Everything that can fail for this record alone is checked before any write.
	if reason := invalid(in.serial, l); reason != "" {
		in.res.Rejected = append(in.res.Rejected, event.Rejected{Index: i, EventID: l.ID(), Reason: reason})
		return nil
	}
	key := l.Key()
	if _, dup := in.inPage[key]; dup {
		return nil
	}
	in.inPage[key] = struct{}{}
	in.met = append(in.met, key)

	sum := l.ContentSum()
	hash := sum[:]
	raw := in.seenValue(key)
	var old seenValue
	if raw != nil {
		var err error
		if old, err = decodeSeen(raw); err != nil && in.write {
			// Still seen; the value is rewritten below.
			in.s.log.Warn("rewriting a malformed seen value", "chatbot", in.serial, "event_id", l.ID(), "err", err)
		}
	}
	changed := raw != nil && !bytes.Equal(old.hash, hash)

	f := in.fate(l, raw != nil, changed)
	if f == fateStale {
		in.res.Stale++
		return nil
	}
	var ev event.Event
	var evJSON []byte // what forwarders will send; it also tells a routed event unchanged (route)
	switch f {
	case fateNew, fateResent:
		ev = event.NewCreated(l)
	case fateUpdated:
		ev = event.NewUpdated(l, in.now)
	}
	// The JSON only tells whether a route found before this run still fits (route): a
	// chunk that routes in its transaction from the start needs none, and encoding every
	// event of a large page twice (here and in its forwarders) was a fifth of taking it.
	// Its time is then the one thing of an event of a valid record JSON could refuse.
	switch {
	case ev.ID == "":
	case in.routes == nil && in.routeHere:
		if !validYear(ev.Time) {
			in.res.Rejected = append(in.res.Rejected, event.Rejected{Index: i, EventID: l.ID(),
				Reason: "its event cannot be encoded as JSON (time: year outside 0..9999)"})
			return nil
		}
	default:
		var err error
		if evJSON, err = ev.AppendJSON(nil); err != nil {
			in.res.Rejected = append(in.res.Rejected, event.Rejected{Index: i, EventID: l.ID(),
				Reason: fmt.Sprintf("its event cannot be encoded as JSON (%T)", err)})
			return nil
		}
	}

	refresh := raw != nil && in.s.retention > 0 && in.storeNow.Sub(old.lastSeen) >= in.s.retention/10
	if in.mark && (raw == nil || changed || refresh) {
		v := seenValue{created: l.CreatedAt, lastSeen: in.storeNow, hash: hash}
		id := ev.ID // a created event's id is the record's: not hashed again
		if f != fateNew && f != fateResent {
			id = l.ID()
		}
		if in.marks == nil { // room for the chunk's remaining records at once
			in.marks = make([]seenMark, 0, in.remaining)
		}
		in.marks = append(in.marks, seenMark{key: in.arena.take(append(in.arena.next(), key...)), val: in.arena.take(v.appendTo(in.arena.next())), id: id})
	}

	switch f {
	case fateBaseline:
		in.res.Baseline++
	case fateNew:
		in.res.New++
	case fateResent:
		in.res.Duplicate++
	case fateUpdated:
		in.res.Updated++
	default:
		in.res.Duplicate++
	}
	if ev.ID == "" {
		return nil
	}
	if in.res.Events == nil { // room for the chunk's remaining records at once: an event is large
		in.res.Events = make([]event.Event, 0, in.remaining)
	}
	in.res.Events = append(in.res.Events, ev)
	if !in.write {
		return nil
	}
	return in.enqueue(ev, evJSON, in.opts.Only)
}

// seenValue is the seen bucket's value for key, nil if there is none. Its lookups share
// a cursor and a buffer for the key: a Get makes a cursor of its own, and the chunk looks
// up each of its records. Nothing is put in the bucket before the chunk's end (run).
func (in *ingestTx) seenValue(key string) []byte {
	if in.seenAt == nil {
		in.seenAt = in.seen.Cursor()
	}
	in.keyBuf = append(in.keyBuf[:0], key...)
	k, v := in.seenAt.Seek(in.keyBuf)
	if !bytes.Equal(k, in.keyBuf) {
		return nil
	}
	return v
}

// invalid says what keeps the store from taking l for chatbot serial, naming the field
// and never its content; "" if nothing does.
func invalid(serial string, l event.Lead) string {
	switch {
	case l.Chatbot != serial:
		return "chatbot: the record names another chatbot than the one polled"
	case l.Kind != event.KindLead && l.Kind != event.KindAppointment:
		return "kind: neither lead nor appointment"
	case !validYear(l.CreatedAt):
		return fmt.Sprintf("created_at: year %d is outside 0..9999", l.CreatedAt.UTC().Year())
	}
	return ""
}

// validYear reports whether t can be written as an RFC 3339 time in UTC (what the event
// JSON needs).
func validYear(t time.Time) bool {
	y := t.UTC().Year()
	return y >= 0 && y <= 9999
}

// enqueue stores ev, encoded as evJSON, once, with one outbox entry referring to it per
// forwarder that wants it (among only, if set).
func (in *ingestTx) enqueue(ev event.Event, evJSON []byte, only []string) error {
	if in.s.route == nil {
		return nil
	}
	all, ok := in.route(ev, evJSON)
	if !ok {
		return nil
	}
	var names []string
	for _, name := range all {
		if !slices.Contains(names, name) && (len(only) == 0 || slices.Contains(only, name)) {
			names = append(names, name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	evSeq, err := in.events.put(ev, len(names), &in.arena)
	if err != nil {
		return fmt.Errorf("event %s: %w", ev.ID, err)
	}
	for _, name := range names {
		b, err := in.outbox.appendTo(name)
		if err == nil {
			err = putRef(b, event.Delivery{Forwarder: name, Enqueued: in.now}, evSeq, &in.arena)
		}
		if err != nil {
			return fmt.Errorf("outbox %s, event %s: %w", name, ev.ID, err)
		}
	}
	in.added += len(names)
	in.wrote = true
	return nil
}

// route returns the forwarders that want ev, encoded as evJSON, from the routes found
// before the run, or found now on the last run. Otherwise it notes ev as unrouted and
// returns false: the run is only finding the chunk's events (see ingestChunk).
func (in *ingestTx) route(ev event.Event, evJSON []byte) ([]string, bool) {
	if r, ok := in.routes[ev.ID]; ok && bytes.Equal(r.event, evJSON) {
		return r.names, true
	}
	if in.routeHere {
		return in.s.route(ev), true
	}
	in.unrouted = append(in.unrouted, unrouted{ev: ev, json: evJSON})
	return nil, false
}

// seenValue is what the seen bucket keeps about a record.
type seenValue struct {
	created  time.Time // the record's CreatedAt
	lastSeen time.Time // when a poll last returned it, refreshed every tenth of the retention
	hash     []byte    // its content hash, to notice updates
}

// Lengths of the encoded seen values: version 1 (created, hash) and version 2 (created,
// last seen, hash).
const (
	seenLenV1 = 12 + sha256.Size
	seenLenV2 = 12 + 8 + sha256.Size
)

// appendTo appends v in the current (version 2) form to b.
func (v seenValue) appendTo(b []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(v.created.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(v.created.Nanosecond()))
	b = binary.BigEndian.AppendUint64(b, uint64(v.lastSeen.Unix()))
	return append(b, v.hash...)
}

// decodeSeen reads a seen value of either version; a version 1 value's CreatedAt stands
// for its last-seen time.
func decodeSeen(b []byte) (seenValue, error) {
	var v seenValue
	switch len(b) {
	case seenLenV1:
		v.hash = b[12:]
	case seenLenV2:
		v.lastSeen = time.Unix(int64(binary.BigEndian.Uint64(b[12:])), 0)
		v.hash = b[20:]
	default:
		return v, fmt.Errorf("seen value is malformed (%d bytes)", len(b))
	}
	v.created = time.Unix(int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint32(b[8:])))
	if len(b) == seenLenV1 {
		v.lastSeen = v.created
	}
	return v, nil
}
