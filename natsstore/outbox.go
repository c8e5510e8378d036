package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// retryState is what the retry bucket keeps of an outbox entry that failed.
type retryState struct {
	Attempts  int       `json:"attempts"`
	FirstTry  time.Time `json:"first_try"`
	NextTry   time.Time `json:"next_try"`
	LastError string    `json:"last_error,omitempty"`
	// Holder and HoldFor are a claim on the entry's next attempt (fence.go): the replica
	// attempting it, and for how long after the write (the server's stamp) the claim
	// stands unless renewed. A recorded outcome clears them.
	Holder  string        `json:"holder,omitempty"`
	HoldFor time.Duration `json:"hold_for,omitempty"`
}

func retryKey(forwarder string, seq uint64) string {
	return forwarder + "." + strconv.FormatUint(seq, 10)
}

// Pending returns up to limit (<= 0: all) of forwarder's outbox entries with Seq > after,
// in ascending Seq order. An unknown forwarder has none.
func (s *Store) Pending(ctx context.Context, forwarder string, after uint64, limit int) ([]event.Delivery, error) {
	op := "pending " + forwarder
	if after == math.MaxUint64 {
		return nil, nil
	}
	if err := checkName(forwarder); err != nil {
		return nil, s.wrap(op, err)
	}
	var out []event.Delivery
	err := s.scan(ctx, s.outbox, s.subject("outbox", forwarder), after+1, func(m *jetstream.RawStreamMsg) (bool, error) {
		d, err := s.delivery(ctx, forwarder, m)
		if err != nil {
			// One unreadable entry must not stall the entries behind it.
			s.log.Error("skipping an unreadable outbox entry", "forwarder", forwarder, "seq", m.Sequence, "err", err)
			return true, nil
		}
		out = append(out, d)
		return limit <= 0 || len(out) < limit, nil
	})
	return out, s.wrap(op, err)
}

// scan calls fn with the messages of stream on subject (a filter) from sequence from on,
// in order, while fn returns true.
func (s *Store) scan(ctx context.Context, stream jetstream.Stream, subject string, from uint64, fn func(*jetstream.RawStreamMsg) (bool, error)) error {
	for seq := max(from, 1); ; {
		m, err := stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		more, err := fn(m)
		if err != nil || !more {
			return err
		}
		seq = m.Sequence + 1
	}
}

// delivery decodes outbox message m of forwarder, with its retry state.
func (s *Store) delivery(ctx context.Context, forwarder string, m *jetstream.RawStreamMsg) (event.Delivery, error) {
	var retry []byte
	e, err := s.retry.Get(ctx, retryKey(forwarder, m.Sequence))
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return event.Delivery{}, fmt.Errorf("retry state: %w", err)
	default:
		retry = e.Value()
	}
	d, _, err := decodeDelivery(forwarder, m.Sequence, m.Data, retry)
	return d, err
}

// decodeDelivery decodes forwarder's outbox entry seq from its message data and its
// retry state (nil: none); retried says it had one.
func decodeDelivery(forwarder string, seq uint64, data, retry []byte) (d event.Delivery, retried bool, err error) {
	if err := json.Unmarshal(data, &d); err != nil {
		return d, false, fmt.Errorf("decode: %w", err)
	}
	d.Forwarder, d.Seq = forwarder, seq
	if retry == nil {
		return d, false, nil
	}
	var r retryState
	if err := json.Unmarshal(retry, &r); err != nil {
		return d, false, fmt.Errorf("retry state: decode %s: %w", retryKey(forwarder, seq), err)
	}
	d.Attempts, d.FirstTry, d.NextTry, d.LastError = r.Attempts, r.FirstTry, r.NextTry, r.LastError
	return d, true, nil
}

// rawEntry reads forwarder's outbox message seq; nil if there is none.
func (s *Store) rawEntry(ctx context.Context, forwarder string, seq uint64) (*jetstream.RawStreamMsg, error) {
	if checkName(forwarder) != nil || seq == 0 {
		return nil, nil
	}
	m, err := s.outbox.GetMsg(ctx, seq)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	case m.Subject != s.subject("outbox", forwarder):
		return nil, nil // another forwarder's entry
	}
	return m, nil
}

// Entry returns forwarder's outbox entry seq; found is false when there is none.
func (s *Store) Entry(ctx context.Context, forwarder string, seq uint64) (d event.Delivery, found bool, err error) {
	op := fmt.Sprintf("read %s #%d", forwarder, seq)
	m, err := s.rawEntry(ctx, forwarder, seq)
	if err != nil || m == nil {
		return d, false, s.wrap(op, err)
	}
	d, err = s.delivery(ctx, forwarder, m)
	if err != nil {
		return d, false, s.wrap(op, err)
	}
	return d, true, nil
}

// Record applies the outcomes of delivery attempts: an Acked entry leaves the outbox, a
// Retrying one keeps its attempt count, first and next try and last error, a Dead one
// moves to the dead letters. An outcome for an entry no longer in the outbox is skipped.
// Unlike bbolt's, the outcomes are not applied in one transaction: those of different
// entries are applied at once (requestWindow in flight), those of one entry in order. A
// failure names the first outcome that failed; every other one was applied, unless it
// came after a failed one of the same entry, and applying the same outcomes again
// skips what is done. The outcomes applied also go to the activity log (activity.go),
// which never makes Record fail.
func (s *Store) Record(ctx context.Context, outcomes []event.Outcome) error {
	errs := applyOutcomes(outcomes, func(o event.Outcome) error { return s.recordOutcome(ctx, o, nil) })
	return s.settle(ctx, outcomes, errs)
}

// applyOutcomes applies each outcome with apply and returns the errors by index: the
// outcomes of different entries in parallel, those of one entry (forwarder and Seq) in
// order, stopping at the first that fails.
func applyOutcomes(outcomes []event.Outcome, apply func(event.Outcome) error) []error {
	type entryKey struct {
		forwarder string
		seq       uint64
	}
	var groups [][]int
	index := make(map[entryKey]int, len(outcomes))
	for i, o := range outcomes {
		k := entryKey{o.Delivery.Forwarder, o.Delivery.Seq}
		g, ok := index[k]
		if !ok {
			g = len(groups)
			index[k] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	errs := make([]error, len(outcomes))
	inParallel(len(groups), func(g int) error {
		for j, i := range groups[g] {
			if errs[i] = apply(outcomes[i]); errs[i] != nil {
				for _, later := range groups[g][j+1:] {
					errs[later] = fmt.Errorf("not applied after the failure of #%d before it: %w", outcomes[i].Delivery.Seq, errs[i])
				}
				return nil
			}
		}
		return nil
	})
	return errs
}

// settle logs the outcomes applied (errs[i] nil) to the activity log and returns an
// error naming the first one that was not, with how many were not.
func (s *Store) settle(ctx context.Context, outcomes []event.Outcome, errs []error) error {
	applied := make([]event.Outcome, 0, len(outcomes))
	var first error
	failed := 0
	for i, err := range errs {
		if err == nil {
			applied = append(applied, outcomes[i])
			continue
		}
		failed++
		if first == nil {
			d := outcomes[i].Delivery
			first = fmt.Errorf("%s #%d: %w", d.Forwarder, d.Seq, err)
		}
	}
	s.logActivity(ctx, applied)
	if first != nil {
		return s.wrap("record delivery outcomes", fmt.Errorf("%d of %d not applied, the first: %w", failed, len(outcomes), first))
	}
	return nil
}

// heldMsg is an outbox entry a Shared outbox holds: what Record needs not read again.
type heldMsg struct {
	msg     jetstream.Msg
	retried bool // its retry state was found when it was read, or a retry was recorded since
}

// recordOutcome applies o. held is the entry as a Shared outbox holds it (nil: read it):
// then an acknowledged entry is removed without reading it first, by the consumer's ack
// that the server confirms when the outbox is a work queue, else (or if that ack is not
// confirmed) by a delete, which is a no-op for an entry gone meanwhile; and its retry
// state is removed only if it has one.
func (s *Store) recordOutcome(ctx context.Context, o event.Outcome, held *heldMsg) error {
	d := o.Delivery
	key := retryKey(d.Forwarder, d.Seq)
	if held != nil && o.Verdict == event.Acked {
		acked := s.workQueue && held.msg.DoubleAck(ctx) == nil
		if !acked {
			if err := s.deleteEntry(ctx, d.Seq); err != nil {
				return err
			}
		}
		if !held.retried {
			return nil
		}
		return s.dropRetry(ctx, key)
	}
	m, err := s.rawEntry(ctx, d.Forwarder, d.Seq)
	if err != nil || m == nil {
		return err
	}
	switch o.Verdict {
	case event.Acked:
		return s.removeEntry(ctx, d.Forwarder, d.Seq)
	case event.Retrying:
		r := retryState{Attempts: d.Attempts, FirstTry: d.FirstTry, NextTry: d.NextTry, LastError: d.LastError}
		m, err := s.fitError(&r.LastError, func() (*nats.Msg, error) {
			raw, err := json.Marshal(r)
			return &nats.Msg{Data: raw}, err
		})
		if err != nil {
			return err
		}
		_, err = s.retry.Put(ctx, key, m.Data)
		return err
	}
	// Dead: the dead letter is the entry as stored, with the attempt's retry state.
	var cur event.Delivery
	if err := json.Unmarshal(m.Data, &cur); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	cur.Forwarder, cur.Seq = d.Forwarder, m.Sequence
	cur.Attempts, cur.FirstTry, cur.NextTry, cur.LastError = d.Attempts, d.FirstTry, d.NextTry, d.LastError
	// Published before the entry is removed, with an id of its own: a crash between
	// leaves the entry, whose next failure publishes the same dead letter, dropped.
	dm, err := s.fitError(&cur.LastError, func() (*nats.Msg, error) {
		raw, err := json.Marshal(event.DeadLetter{Delivery: cur, Failed: o.At})
		m := nats.NewMsg(s.subject("dead", d.Forwarder))
		m.Data = raw
		m.Header.Set(jetstream.MsgIDHeader, "dead."+key)
		return m, err
	})
	if err != nil {
		return err
	}
	if _, err := s.js.PublishMsg(ctx, dm); err != nil {
		return fmt.Errorf("publish dead letter: %w", err)
	}
	return s.removeEntry(ctx, d.Forwarder, d.Seq)
}

// fitError returns the message encode makes, with *lastError cut as much as needed (the
// end goes, " [cut]" marks it) for the message to be within what the server takes: an
// error text (a target's answer, say) may be longer than any message, and a retry state
// or dead letter the server refuses would be refused at every try. Ingest leaves room
// in every entry for the rest of its dead letter (deadLetterRoom).
func (s *Store) fitError(lastError *string, encode func() (*nats.Msg, error)) (*nats.Msg, error) {
	for {
		m, err := encode()
		if err != nil {
			return nil, err
		}
		size, limit := s.largest([]*nats.Msg{m})
		if size <= limit || *lastError == "" {
			return m, nil
		}
		*lastError = cutError(*lastError, int(size-limit))
	}
}

// cutError is e shortened by at least over bytes, at a character boundary, marked as cut.
func cutError(e string, over int) string {
	const mark = " [cut]"
	keep := len(e) - over - len(mark)
	if keep <= 0 {
		return ""
	}
	for keep > 0 && !utf8.RuneStart(e[keep]) {
		keep--
	}
	return e[:keep] + mark
}

// removeEntry deletes forwarder's outbox message seq and its retry state.
func (s *Store) removeEntry(ctx context.Context, forwarder string, seq uint64) error {
	if err := s.deleteEntry(ctx, seq); err != nil {
		return err
	}
	return s.dropRetry(ctx, retryKey(forwarder, seq))
}

// deleteEntry deletes outbox message seq; one already gone is no error.
func (s *Store) deleteEntry(ctx context.Context, seq uint64) error {
	if err := s.outbox.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) && !isNoMsg(err) {
		return err
	}
	return nil
}

// isNoMsg reports an API error saying the message is not there (deleted meanwhile).
func isNoMsg(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeMessageNotFound || apiErr.Code == 404)
}

// dropRetry removes a retry state, if any.
func (s *Store) dropRetry(ctx context.Context, key string) error {
	if err := s.retry.Purge(ctx, key, jetstream.PurgeTTL(purgeTTL)); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("retry state %s: %w", key, err)
	}
	return nil
}

// counts returns the messages per forwarder in stream kind ("outbox", "dead").
func (s *Store) counts(ctx context.Context, stream jetstream.Stream, kind string) (map[string]int, error) {
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(s.subject(kind, "*")))
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	prefix := s.subject(kind, "")
	for subj, n := range info.State.Subjects {
		out[strings.TrimPrefix(subj, prefix)] = int(n)
	}
	return out, nil
}

// Depth counts the outbox entries per forwarder.
func (s *Store) Depth(ctx context.Context) (map[string]int, error) {
	n, err := s.counts(ctx, s.outbox, "outbox")
	return n, s.wrap("outbox depth", err)
}

// DeadCount counts the dead letters per forwarder.
func (s *Store) DeadCount(ctx context.Context) (map[string]int, error) {
	n, err := s.counts(ctx, s.dead, "dead")
	return n, s.wrap("dead-letter count", err)
}

// deadRef is one dead letter found by findDead.
type deadRef struct {
	seq uint64
	dl  event.DeadLetter
}

// findDead returns the dead letters of forwarder ("" = all) whose event id is eventID
// ("" = any), in stream order.
func (s *Store) findDead(ctx context.Context, forwarder, eventID string) ([]deadRef, error) {
	subject := s.subject("dead", "*")
	if forwarder != "" {
		if err := checkName(forwarder); err != nil {
			return nil, nil // no such forwarder can have any
		}
		subject = s.subject("dead", forwarder)
	}
	var out []deadRef
	err := s.scan(ctx, s.dead, subject, 1, func(m *jetstream.RawStreamMsg) (bool, error) {
		var dl event.DeadLetter
		if err := json.Unmarshal(m.Data, &dl); err != nil {
			return false, fmt.Errorf("decode dead letter #%d: %w", m.Sequence, err)
		}
		if eventID == "" || dl.Event.ID == eventID {
			out = append(out, deadRef{seq: m.Sequence, dl: dl})
		}
		return true, nil
	})
	return out, err
}

// DeadLetters lists the dead letters of forwarder ("" = all), oldest failure first.
func (s *Store) DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error) {
	refs, err := s.findDead(ctx, forwarder, "")
	out := make([]event.DeadLetter, 0, len(refs))
	for _, r := range refs {
		out = append(out, r.dl)
	}
	slices.SortStableFunc(out, func(a, b event.DeadLetter) int { return a.Failed.Compare(b.Failed) })
	return out, s.wrap("list dead letters", err)
}

// Replay puts dead letters of forwarder ("" = all) with event id eventID ("" = all) back
// in the outbox under a new Seq, with attempts, first try and last error reset. It returns
// how many were replayed. Each is published (with an id naming the dead letter, so that
// a replay cut off and run again adds it once) before it is deleted.
func (s *Store) Replay(ctx context.Context, forwarder, eventID string) (int, error) {
	refs, err := s.findDead(ctx, forwarder, eventID)
	if err != nil {
		return 0, s.wrap("replay dead letters", err)
	}
	n := 0
	for _, r := range refs {
		evJSON, err := json.Marshal(r.dl.Event)
		if err != nil {
			return n, s.wrap("replay dead letters", err)
		}
		m := s.entryMsg(r.dl.Forwarder, "replay."+strconv.FormatUint(r.seq, 10),
			entry{Forwarder: r.dl.Forwarder, Event: evJSON, Enqueued: r.dl.Enqueued})
		if err := s.publishAll(ctx, []*nats.Msg{m}); err != nil {
			return n, s.wrap("replay dead letters", err)
		}
		if err := s.dead.DeleteMsg(ctx, r.seq); err != nil && !isNoMsg(err) {
			return n, s.wrap("replay dead letters", err)
		}
		n++
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
	refs, err := s.findDead(ctx, forwarder, eventID)
	if err != nil {
		return 0, s.wrap("drop dead letters", err)
	}
	n := 0
	for _, r := range refs {
		if err := s.dead.DeleteMsg(ctx, r.seq); err != nil && !isNoMsg(err) {
			return n, s.wrap("drop dead letters", err)
		}
		n++
	}
	if n > 0 {
		s.log.Info("dead letters dropped", "forwarder", forwarder, "event_id", eventID, "count", n)
	}
	return n, nil
}

// MovePending moves every outbox entry of forwarder from to forwarder to, for a
// forwarder that was renamed, as dedupe.Store.MovePending does: same event and Enqueued
// time, a new Seq, the retry state reset; an entry whose event to already owes is
// removed and counted in already. Each copy is published (with an id naming the entry
// moved, so that a move cut off and run again copies it once) before from's entries are
// purged.
func (s *Store) MovePending(ctx context.Context, from, to string) (moved, already int, err error) {
	op := fmt.Sprintf("move outbox %s to %s", from, to)
	if err := event.CheckMove(from, to); err != nil {
		return 0, 0, s.wrap(op, err)
	}
	if err := errors.Join(checkName(from), checkName(to)); err != nil {
		return 0, 0, s.wrap(op, err)
	}
	owed := map[string]bool{}
	err = s.scan(ctx, s.outbox, s.subject("outbox", to), 1, func(m *jetstream.RawStreamMsg) (bool, error) {
		var e struct {
			Event struct {
				ID string `json:"id"`
			} `json:"event"`
		}
		if err := json.Unmarshal(m.Data, &e); err != nil {
			return false, fmt.Errorf("decode outbox entry %s #%d: %w", to, m.Sequence, err)
		}
		owed[e.Event.ID] = true
		return true, nil
	})
	if err != nil {
		return 0, 0, s.wrap(op, err)
	}
	var msgs []*nats.Msg
	var seqs []uint64
	err = s.scan(ctx, s.outbox, s.subject("outbox", from), 1, func(m *jetstream.RawStreamMsg) (bool, error) {
		seqs = append(seqs, m.Sequence)
		var d event.Delivery
		if err := json.Unmarshal(m.Data, &d); err != nil {
			return false, fmt.Errorf("decode outbox entry %s #%d: %w", from, m.Sequence, err)
		}
		if owed[d.Event.ID] {
			already++
			return true, nil
		}
		owed[d.Event.ID] = true
		evJSON, err := json.Marshal(d.Event)
		if err != nil {
			return false, err
		}
		msgs = append(msgs, s.entryMsg(to, "move."+from+"."+strconv.FormatUint(m.Sequence, 10),
			entry{Forwarder: to, Event: evJSON, Enqueued: d.Enqueued}))
		return true, nil
	})
	if err == nil {
		err = s.publishAll(ctx, msgs)
	}
	if err == nil {
		err = s.purge(ctx, from, seqs)
	}
	if err != nil {
		return 0, 0, s.wrap(op, err)
	}
	moved = len(msgs)
	if moved > 0 {
		s.signal()
	}
	if moved+already > 0 {
		s.log.Info("outbox entries moved to another forwarder", "from", from, "to", to, "moved", moved, "already_owed", already)
	}
	return moved, already, nil
}

// purge removes forwarder's outbox entries seqs (read by the caller) and their retry
// states. Entries added since the read stay.
func (s *Store) purge(ctx context.Context, forwarder string, seqs []uint64) error {
	for _, seq := range seqs {
		if err := s.removeEntry(ctx, forwarder, seq); err != nil {
			return err
		}
	}
	return nil
}

// DropPending deletes every outbox entry of forwarder, for a forwarder that was removed
// on purpose, and returns how many it deleted.
func (s *Store) DropPending(ctx context.Context, forwarder string) (int, error) {
	op := "drop outbox " + forwarder
	if forwarder == "" {
		return 0, s.wrap(op, errors.New("want a forwarder name"))
	}
	if err := checkName(forwarder); err != nil {
		return 0, s.wrap(op, err)
	}
	var seqs []uint64
	err := s.scan(ctx, s.outbox, s.subject("outbox", forwarder), 1, func(m *jetstream.RawStreamMsg) (bool, error) {
		seqs = append(seqs, m.Sequence)
		return true, nil
	})
	if err == nil {
		err = s.purge(ctx, forwarder, seqs)
	}
	if err != nil {
		return 0, s.wrap(op, err)
	}
	if len(seqs) > 0 {
		s.log.Info("outbox entries dropped", "forwarder", forwarder, "count", len(seqs))
	}
	return len(seqs), nil
}
