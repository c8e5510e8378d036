package natsstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// Ingest records one polled page of a chatbot's records, as dedupe.Store.Ingest does:
// unseen records are claimed and put in the outbox of every forwarder Route names, seen
// ones are duplicates (or updated events with EmitUpdates), the first page of a chatbot
// with Initial "skip" is its baseline, unseen records older than the retention are stale.
func (s *Store) Ingest(ctx context.Context, serial string, leads []event.Lead) (event.Ingested, error) {
	return s.newPage(serial, nil, true).add(ctx, leads, true)
}

// Backfill takes records a backfill asked for, shaped by o, as dedupe.Store.Backfill
// does: no baseline, no initialization, records older than the retention taken too;
// with o.Only nothing is marked seen.
func (s *Store) Backfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error) {
	return s.newPage(serial, &o, true).add(ctx, leads, true)
}

// DryBackfill says what Backfill would do with the same arguments, writing nothing.
func (s *Store) DryBackfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error) {
	return s.newPage(serial, &o, false).add(ctx, leads, true)
}

// IngestPage is Ingest for a page handed over in parts, with the contract of
// dedupe.Store.IngestPage: the baseline is decided once for the page, Rejected indices
// count from the page's first record, and the part marked last (or read returning nil
// after some part) completes the page.
func (s *Store) IngestPage(ctx context.Context, serial string, read func(take func(leads []event.Lead, last bool) (event.Ingested, error)) error) error {
	if err := ctx.Err(); err != nil {
		return s.wrap("ingest "+serial, err)
	}
	p := s.newPage(serial, nil, true)
	err := event.TakePage(read, func(leads []event.Lead, last bool) (event.Ingested, error) { return p.add(ctx, leads, last) })
	if errors.Is(err, event.ErrPartAfterEnd) || errors.Is(err, event.ErrReadAfterFailed) {
		return s.wrap("ingest "+serial, err)
	}
	return err
}

// page is one page being taken, in one or more parts.
type page struct {
	s        *Store
	serial   string
	backfill *event.BackfillOptions // nil for a poll
	write    bool                   // false for a dry run
	started  bool                   // now and baseline are set
	now      time.Time
	baseline bool
	offset   int // records of the page taken so far
	inPage   map[string]struct{}
	nonce    string // makes a backfill's message ids its own
}

func (s *Store) newPage(serial string, backfill *event.BackfillOptions, write bool) *page {
	return &page{s: s, serial: serial, backfill: backfill, write: write, inPage: map[string]struct{}{}}
}

// claim is a seen key to write once the part's entries are published.
type claim struct {
	key   string
	val   []byte
	rev   uint64 // the revision replaced; 0: create
	fresh bool   // an unseen record: a failed create means another replica took it
	f     fate
	ev    string // its event id, if it has an event
}

// add takes the next part of the page; last completes it.
func (p *page) add(ctx context.Context, leads []event.Lead, last bool) (event.Ingested, error) {
	s := p.s
	op := "ingest " + p.serial
	if err := ctx.Err(); err != nil {
		return event.Ingested{}, s.wrap(op, err)
	}
	poll := p.backfill == nil
	var st event.ChatbotState
	if _, _, err := getJSON(ctx, s.chatbots, p.serial, &st); err != nil {
		return event.Ingested{}, s.wrap(op, fmt.Errorf("chatbot %s state: %w", p.serial, err))
	}
	if !p.started {
		p.started, p.now = true, s.now()
		p.baseline = poll && !s.initialEmit && !st.Initialized
		if !poll {
			p.nonce = rand.Text()
		}
	}
	if len(leads) == 0 && !last {
		return event.Ingested{}, nil
	}
	cands, rejected := p.candidates(leads)
	plan, err := p.decide(ctx, cands)
	if err != nil {
		return event.Ingested{}, s.wrap(op, err)
	}
	plan.res.Rejected = append(rejected, plan.res.Rejected...)
	// Encoding and size failures were found after the invalid records: keep the page's order.
	slices.SortStableFunc(plan.res.Rejected, func(a, b event.Rejected) int { return a.Index - b.Index })
	if !p.write {
		p.offset += len(leads)
		return plan.res, nil
	}
	if err := p.commit(ctx, &plan, poll && last && !st.Initialized, poll && last); err != nil {
		return event.Ingested{}, s.wrap(op, err)
	}
	p.offset += len(leads)
	if len(plan.pubs) > 0 {
		s.signal()
	}
	for _, r := range plan.res.Rejected {
		s.log.Warn("record rejected", "chatbot", p.serial, "index", r.Index, "event_id", r.EventID, "reason", r.Reason)
	}
	for _, ev := range plan.res.Events {
		s.log.Debug("record taken", append(ev.LogAttrs(), "action", ev.Action())...)
	}
	return plan.res, nil
}

// candidate is a valid record of a part, the first with its key in the page.
type candidate struct {
	i   int // its index in the page
	l   event.Lead
	key string
}

// candidates are the part's valid records, each once in the page, and the invalid ones.
func (p *page) candidates(leads []event.Lead) (cands []candidate, rejected []event.Rejected) {
	for j, l := range leads {
		i := p.offset + j
		if reason := invalid(p.serial, l); reason != "" {
			rejected = append(rejected, event.Rejected{Index: i, EventID: l.ID(), Reason: reason})
			continue
		}
		key := l.ID()
		if _, dup := p.inPage[key]; dup {
			continue
		}
		p.inPage[key] = struct{}{}
		cands = append(cands, candidate{i: i, l: l, key: key})
	}
	return cands, rejected
}

// partPlan is what a part's records come to before anything is written: what add will
// report, the seen keys to claim, the outbox entries to publish first, and the change to
// the chatbot's seen count.
type partPlan struct {
	res       event.Ingested
	claims    []claim
	pubs      []*nats.Msg
	seenDelta int
}

// decide reads the candidates' seen keys, in batches, and decides each record's fate in
// page order: what it owes and what claim takes it.
func (p *page) decide(ctx context.Context, cands []candidate) (partPlan, error) {
	s := p.s
	var plan partPlan
	var opts event.BackfillOptions
	poll := p.backfill == nil
	if !poll {
		opts = *p.backfill
	}
	var horizon time.Time
	if poll && s.retention > 0 {
		// By the server's clock if the wall clock is ahead of it: a wall clock jumped
		// ahead would judge fresh records stale and never take them, while the seen keys
		// expire by the server's clock anyway.
		horizon = s.server.earlier(p.now).Add(-s.retention)
	}
	mark := p.write && len(opts.Only) == 0
	keys := make([]string, len(cands))
	for k, c := range cands {
		keys[k] = c.key
	}
	known, err := s.lastValues(ctx, s.seen, keys)
	if err != nil {
		return plan, fmt.Errorf("read the seen keys of %d records: %w", len(keys), err)
	}
	res := &plan.res
	for _, c := range cands {
		i, l, key := c.i, c.l, c.key
		hash := contentHash(l)
		var old seenValue
		var rev uint64
		if e, ok := known[key]; ok {
			var err error
			rev = e.rev
			if old, err = decodeSeen(e.value); err != nil {
				s.log.Warn("rewriting a malformed seen value", "chatbot", p.serial, "event_id", key, "err", err)
			}
		}
		seen := rev != 0
		changed := seen && !bytes.Equal(old.hash, hash)
		f := fateOf(seen, changed, !horizon.IsZero() && l.CreatedAt.Before(horizon), p.baseline, opts.Resend, s.emitUpdates)
		if f == fateStale {
			res.Stale++
			continue
		}
		var ev event.Event
		switch f {
		case fateNew, fateResent:
			ev = event.NewCreated(l)
		case fateUpdated:
			ev = event.NewUpdated(l, p.now)
		}
		var evJSON []byte
		var owed []*nats.Msg
		if ev.ID != "" {
			var err error
			if evJSON, err = ev.AppendJSON(nil); err != nil {
				res.Rejected = append(res.Rejected, event.Rejected{Index: i, EventID: key,
					Reason: fmt.Sprintf("its event cannot be encoded as JSON (%T)", err)})
				continue
			}
			if p.write { // a dry run routes nothing (routing counts filtered records)
				// A record this backfill claims as unseen owes what a poll's claim would:
				// the same ids, so a backfill cut off before its claim and the poll that
				// then takes the record (or the other way round) owe each delivery once.
				owed = p.entries(ev, evJSON, opts.Only, rev, !(mark && !seen))
			}
			if size, limit := s.largest(owed); size > 0 && size+deadLetterRoom > limit {
				// The server would refuse its entry at every poll, and with it the page,
				// or, once it fails, its dead letter at every try.
				res.Rejected = append(res.Rejected, event.Rejected{Index: i, EventID: key,
					Reason: fmt.Sprintf("its outbox entry is %d bytes; with the %d a dead letter adds, more than the NATS server takes in one message (max_payload %d)",
						size, deadLetterRoom, limit)})
				continue
			}
		}
		refresh := seen && s.retention > 0 && p.now.Sub(old.lastSeen) >= s.retention/10
		if mark && (!seen || changed || refresh) {
			v := seenValue{created: l.CreatedAt, lastSeen: p.now, hash: hash, serial: p.serial}
			plan.claims = append(plan.claims, claim{key: key, val: v.encode(), rev: rev, fresh: !seen, f: f, ev: ev.ID})
		}
		switch f {
		case fateBaseline:
			plan.seenDelta++
			res.Baseline++
		case fateNew:
			if mark {
				plan.seenDelta++
			}
			res.New++
		case fateUpdated:
			res.Updated++
		default:
			res.Duplicate++
		}
		if ev.ID == "" {
			continue
		}
		res.Events = append(res.Events, ev)
		if p.write {
			plan.pubs = append(plan.pubs, owed...)
		}
	}
	return plan, nil
}

// commit writes a part's plan: first every entry is in the outbox, then the records are
// claimed (a crash between leaves unclaimed records, which the next poll takes again: see
// the package doc), then the chatbot's state, marked initialized when initialize is set
// and its seen count changed. A claim another replica made first counts the record as
// that one's.
func (p *page) commit(ctx context.Context, plan *partPlan, initialize, complete bool) error {
	s := p.s
	if err := s.publishAll(ctx, plan.pubs); err != nil {
		return err
	}
	claimErrs := inParallel(len(plan.claims), func(k int) error { return s.putSeen(ctx, plan.claims[k]) })
	for k, c := range plan.claims {
		err := claimErrs[k]
		if c.fresh && (errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)) {
			// Another replica claimed it first: it is that one's record. Its entries
			// carry the same message ids as ours, so the stream kept one of each.
			s.log.Warn("a record was claimed by another replica at the same time", "chatbot", p.serial, "event_id", c.key)
			plan.res = lostRace(plan.res, c)
			plan.seenDelta--
			continue
		}
		if err != nil && !c.fresh && errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // a refresh or update raced another replica's: its write stands
		}
		if err != nil {
			return fmt.Errorf("claim %s: %w", c.key, err)
		}
	}
	if plan.seenDelta == 0 && !initialize {
		return nil
	}
	err := updateJSON(ctx, s.chatbots, p.serial, func(st *event.ChatbotState) {
		st.Seen = max(0, st.Seen+plan.seenDelta)
		if complete {
			st.Initialized = true
		}
	})
	if err != nil {
		return fmt.Errorf("chatbot %s state: %w", p.serial, err)
	}
	return nil
}

// lostRace counts the record of claim c, which another replica claimed first, as a
// duplicate that this ingest did not take.
func lostRace(res event.Ingested, c claim) event.Ingested {
	switch c.f {
	case fateBaseline:
		res.Baseline--
	case fateNew:
		res.New--
		res.Events = slices.DeleteFunc(res.Events, func(ev event.Event) bool { return ev.ID == c.ev })
	}
	res.Duplicate++
	return res
}

// entries are the outbox messages of ev, encoded as evJSON, one per forwarder that wants
// it (among only, if set). A poll's message id is the event id, the forwarder and the
// revision of the seen key the ingest replaces, so that taking the same record again
// after a crash publishes the same ids, while a later change of the same record gets new
// ones; with own, a backfill's carry its own nonce (an operator may resend on purpose).
func (p *page) entries(ev event.Event, evJSON []byte, only []string, rev uint64, own bool) []*nats.Msg {
	if p.s.route == nil {
		return nil
	}
	var out []*nats.Msg
	var done []string
	for _, name := range p.s.route(ev) {
		if slices.Contains(done, name) || (len(only) > 0 && !slices.Contains(only, name)) {
			continue
		}
		done = append(done, name)
		id := ev.ID + "." + name + "." + strconv.FormatUint(rev, 10)
		if own && p.nonce != "" {
			id += ".backfill." + p.nonce
		}
		out = append(out, p.s.entryMsg(name, id, entry{Forwarder: name, Event: evJSON, Enqueued: p.now}))
	}
	return out
}

// deadLetterRoom is what an outbox entry's dead letter may add to it: its sequence,
// attempts, three times, a longer message id, and a last error (cut to fit, see
// fitError).
const deadLetterRoom = 1024

// largest is the size, as the server counts it (headers and data), of the largest of
// msgs, and the most the server takes in one message.
func (s *Store) largest(msgs []*nats.Msg) (size, limit int64) {
	for _, m := range msgs {
		h := int64(len("NATS/1.0\r\n\r\n"))
		for k, vs := range m.Header {
			for _, v := range vs {
				h += int64(len(k) + len(": ") + len(v) + len("\r\n"))
			}
		}
		size = max(size, h+int64(len(m.Data)))
	}
	return size, s.js.Conn().MaxPayload()
}

// entry is an outbox message's body: the event.Delivery it stands for, without the Seq
// (the stream sequence) and the retry state (kept in the retry bucket).
type entry struct {
	Forwarder string          `json:"forwarder"`
	Event     json.RawMessage `json:"event"`
	Enqueued  time.Time       `json:"enqueued"`
}

// entryMsg is the outbox message of e for forwarder, with message id id.
func (s *Store) entryMsg(forwarder, id string, e entry) *nats.Msg {
	raw, _ := json.Marshal(e) // a RawMessage of valid JSON, a string and a time: cannot fail
	m := nats.NewMsg(s.subject("outbox", forwarder))
	m.Data = raw
	m.Header.Set(jetstream.MsgIDHeader, id)
	return m
}

// putSeen writes claim c: an atomic create for an unseen record, else an update of the
// revision read. With a retention the key expires after twice the retention unless
// written again (a backstop: Prune removes it after one).
func (s *Store) putSeen(ctx context.Context, c claim) error {
	var ttl time.Duration
	if s.retention > 0 {
		ttl = max(2*s.retention, time.Second)
	}
	if c.rev == 0 {
		var opts []jetstream.KVCreateOpt
		if ttl > 0 {
			opts = append(opts, jetstream.KeyTTL(ttl))
		}
		_, err := s.seen.Create(ctx, c.key, c.val, opts...)
		return err
	}
	// kv.Update sets no TTL: publish the update as the bucket does, with one.
	m := nats.NewMsg("$KV." + s.prefix + "_seen." + c.key)
	m.Data = c.val
	opts := []jetstream.PublishOpt{jetstream.WithExpectLastSequencePerSubject(c.rev)}
	if ttl > 0 {
		opts = append(opts, jetstream.WithMsgTTL(ttl))
	}
	_, err := s.js.PublishMsg(ctx, m, opts...)
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
		return fmt.Errorf("%w: %w", err, jetstream.ErrKeyRevisionMismatch)
	}
	return err
}

// fate is what an ingest makes of one valid record.
type fate int

// The fates of a record, as in package dedupe.
const (
	fateDuplicate fate = iota // seen and unchanged, or its change not announced
	fateStale                 // unseen but created before the retention horizon: not taken
	fateBaseline              // unseen, taken as known without an event
	fateNew                   // unseen: a created event
	fateResent                // seen, sent again as its created event (a backfill with Resend)
	fateUpdated               // seen, its content changed: an updated event
)

func fateOf(seen, changed, stale, baseline, resend, emitUpdates bool) fate {
	switch {
	case !seen && stale:
		return fateStale
	case !seen && baseline:
		return fateBaseline
	case !seen:
		return fateNew
	case resend:
		return fateResent
	case changed && emitUpdates && !baseline:
		return fateUpdated
	}
	return fateDuplicate
}

// invalid says what keeps the store from taking l for chatbot serial, naming the field
// and never its content; "" if nothing does.
func invalid(serial string, l event.Lead) string {
	switch {
	case l.Chatbot != serial:
		return "chatbot: the record names another chatbot than the one polled"
	case l.Kind != event.KindLead && l.Kind != event.KindAppointment:
		return "kind: neither lead nor appointment"
	case l.CreatedAt.UTC().Year() < 0 || l.CreatedAt.UTC().Year() > 9999:
		return fmt.Sprintf("created_at: year %d is outside 0..9999", l.CreatedAt.UTC().Year())
	}
	return ""
}

func contentHash(l event.Lead) []byte {
	b, _ := hex.DecodeString(l.ContentHash()) // hex of a SHA-256: cannot fail
	return b
}

// seenValue is what the seen bucket keeps about a record.
type seenValue struct {
	created  time.Time // the record's CreatedAt
	lastSeen time.Time // when a poll last returned it, refreshed every tenth of the retention
	hash     []byte    // its content hash, to notice updates
	serial   string    // its chatbot, for the per-chatbot count Prune keeps
}

// seenHead is the fixed part of an encoded seenValue: created (Unix seconds, 8 bytes,
// and nanoseconds, 4), last seen (Unix seconds, 8), content hash (32); the serial follows.
const seenHead = 12 + 8 + sha256.Size

func (v seenValue) encode() []byte {
	b := make([]byte, 20, seenHead+len(v.serial))
	binary.BigEndian.PutUint64(b, uint64(v.created.Unix()))
	binary.BigEndian.PutUint32(b[8:], uint32(v.created.Nanosecond()))
	binary.BigEndian.PutUint64(b[12:], uint64(v.lastSeen.Unix()))
	b = append(b, v.hash...)
	return append(b, v.serial...)
}

func decodeSeen(b []byte) (seenValue, error) {
	if len(b) < seenHead {
		return seenValue{}, fmt.Errorf("seen value is malformed (%d bytes)", len(b))
	}
	return seenValue{
		created:  time.Unix(int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint32(b[8:]))),
		lastSeen: time.Unix(int64(binary.BigEndian.Uint64(b[12:])), 0),
		hash:     b[20:seenHead],
		serial:   string(b[seenHead:]),
	}, nil
}
