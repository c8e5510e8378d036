package natsstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// The activity log: what became of each delivery attempt, for the web console, bounded
// as package dedupe bounds it (the same constants) but by JetStream's own limits instead
// of pruning by hand:
//
//	stream P_activity         subjects P.activity.<forwarder>; one event.Attempt JSON per
//	                          outcome, at most ActivityPerForwarder per forwarder
//	                          (MaxMsgsPerSubject, the oldest discarded), none older than
//	                          ActivityMaxAge (MaxAge)
//	stream P_activity_events  subjects P.activity_event.<forwarder>.<event id>; the event
//	                          JSON, the last one per subject (MaxMsgsPerSubject 1), its
//	                          header activitySeqHeader naming the P_activity sequence of
//	                          the forwarder's latest attempt at it; MaxAge ActivityMaxAge
//
// An event is found by ActivityEvent only while that attempt is still in the log (a
// forwarder's attempts leave in order, so its latest at an event leaves last), as dedupe
// forgets an event no attempt refers to. Its copy in P_activity_events outlives the
// reference by at most ActivityMaxAge, unread.
//
// Ages are judged by the store's clock (Options.Now), as dedupe judges them; MaxAge
// (the server's clock) removes what the clock has long left behind.
const (
	ActivityPerForwarder = 1000
	ActivityMaxAge       = 7 * 24 * time.Hour
)

// activitySeqHeader carries, on an event kept for the log, the sequence of the attempt
// in P_activity that refers to it.
const activitySeqHeader = "Leadbridge-Activity-Seq"

// prepareActivity creates or updates the activity log's streams.
func (s *Store) prepareActivity(ctx context.Context, res *resources, replicas int) error {
	for _, cfg := range []jetstream.StreamConfig{
		{Name: s.prefix + "_activity", Subjects: []string{s.subject("activity", "*")},
			MaxMsgsPerSubject: ActivityPerForwarder},
		{Name: s.prefix + "_activity_events", Subjects: []string{s.subject("activity_event", "*.*")},
			MaxMsgsPerSubject: 1},
	} {
		cfg.MaxAge, cfg.Storage, cfg.Replicas = ActivityMaxAge, jetstream.FileStorage, replicas
		cfg.Retention, cfg.Discard = jetstream.LimitsPolicy, jetstream.DiscardOld
		st, err := res.stream(ctx, cfg)
		if err != nil {
			return err
		}
		if cfg.MaxMsgsPerSubject == 1 {
			s.activityEvents = st
		} else {
			s.activity = st
		}
	}
	return nil
}

// eventSubject is the subject of event id as kept for forwarder's attempts.
func (s *Store) eventSubject(forwarder, id string) string {
	return s.subject("activity_event", forwarder+"."+id)
}

// logActivity appends one attempt per outcome, recorded now, and keeps each outcome's
// event beside the log. The outcomes are recorded already: a failure here is logged
// (with what failed and how many attempts the log misses) and never returned, so the log
// can miss an attempt but an outcome is never recorded twice for its sake.
func (s *Store) logActivity(ctx context.Context, outcomes []event.Outcome) {
	now := s.now()
	type logged struct {
		d   event.Delivery
		ack jetstream.PubAckFuture
	}
	var pubs []logged
	missed, firstErr := 0, error(nil)
	fail := func(n int, err error) {
		missed += n
		if firstErr == nil {
			firstErr = err
		}
	}
	for _, o := range outcomes {
		d := o.Delivery
		if d.Forwarder == "" || d.Event.ID == "" {
			continue // not an outcome of an outbox entry: nothing to show
		}
		if err := errors.Join(checkName(d.Forwarder), checkName(d.Event.ID)); err != nil {
			fail(1, err)
			continue
		}
		raw, err := event.AttemptOf(o, now).AppendJSON(nil)
		if err != nil {
			fail(1, err)
			continue
		}
		f, err := s.js.PublishMsgAsync(&nats.Msg{Subject: s.subject("activity", d.Forwarder), Data: raw})
		if err != nil {
			fail(1, err)
			continue
		}
		pubs = append(pubs, logged{d: d, ack: f})
	}
	var events []jetstream.PubAckFuture
	for _, p := range pubs {
		ack, err := awaitAck(ctx, p.ack)
		if err != nil {
			fail(1, err)
			continue
		}
		raw, err := p.d.Event.AppendJSON(nil)
		if err != nil {
			fail(1, err)
			continue
		}
		m := nats.NewMsg(s.eventSubject(p.d.Forwarder, p.d.Event.ID))
		m.Data = raw
		m.Header.Set(activitySeqHeader, strconv.FormatUint(ack.Sequence, 10))
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			fail(1, err)
			continue
		}
		events = append(events, f)
	}
	for _, f := range events {
		if _, err := awaitAck(ctx, f); err != nil {
			fail(1, err)
		}
	}
	if missed > 0 {
		s.log.Warn("the activity log misses attempts whose outcomes are recorded", "count", missed, "err", firstErr)
	}
}

// awaitAck waits for the acknowledgement of an asynchronous publish.
func awaitAck(ctx context.Context, f jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-f.Ok():
		return ack, nil
	case err := <-f.Err():
		return nil, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Activity returns the attempts q selects, newest first: per forwarder it reads at most
// the ActivityPerForwarder the log holds.
func (s *Store) Activity(ctx context.Context, q event.ActivityQuery) ([]event.Attempt, error) {
	op := "read activity"
	counts, err := s.counts(ctx, s.activity, "activity")
	if err != nil {
		return nil, s.wrap(op, err)
	}
	if horizon := s.now().Add(-ActivityMaxAge); q.Since.Before(horizon) {
		q.Since = horizon
	}
	var out []event.Attempt
	for _, fwd := range slices.Sorted(maps.Keys(counts)) {
		if q.Forwarder != "" && q.Forwarder != fwd {
			continue
		}
		log, err := s.readActivity(ctx, fwd)
		if err != nil {
			return nil, s.wrap(op, err)
		}
		n := 0
		for i := len(log) - 1; i >= 0 && (q.Limit <= 0 || n < q.Limit); i-- {
			if q.Matches(log[i]) {
				out = append(out, log[i])
				n++
			}
		}
	}
	slices.SortStableFunc(out, func(a, b event.Attempt) int { return b.At.Compare(a.At) })
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

// readActivity reads forwarder's attempts in the order they were logged, through an
// ordered consumer deleted after one fetch of at most ActivityPerForwarder (all the log
// holds of a forwarder). An unreadable attempt is named in the log and skipped.
func (s *Store) readActivity(ctx context.Context, forwarder string) ([]event.Attempt, error) {
	cons, err := s.js.OrderedConsumer(ctx, s.prefix+"_activity", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{s.subject("activity", forwarder)}, InactiveThreshold: time.Minute})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", forwarder, err)
	}
	batch, err := cons.FetchNoWait(ActivityPerForwarder)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", forwarder, err)
	}
	defer func() {
		if info := cons.CachedInfo(); info != nil {
			_ = s.js.DeleteConsumer(context.WithoutCancel(ctx), info.Stream, info.Name) // else gone after InactiveThreshold
		}
	}()
	var out []event.Attempt
	for m := range batch.Messages() {
		var a event.Attempt
		if err := json.Unmarshal(m.Data(), &a); err != nil {
			meta, _ := m.Metadata()
			var seq uint64
			if meta != nil {
				seq = meta.Sequence.Stream
			}
			s.log.Error("skipping an unreadable activity record", "forwarder", forwarder, "seq", seq, "err", err)
			continue
		}
		out = append(out, a)
	}
	if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
		return nil, fmt.Errorf("%s: %w", forwarder, err)
	}
	return out, nil
}

// ActivityEvent returns the event with id id as the activity log keeps it; found is
// false once no attempt in the log refers to it. It reads, per forwarder in the log, the
// last copy of the event kept for it and the attempt that copy names. A copy that is
// gone (purged) or unreadable is passed over, the unreadable ones logged once a call: its
// attempt then shows no event.
func (s *Store) ActivityEvent(ctx context.Context, id string) (ev event.Event, found bool, err error) {
	op := "read activity event"
	if checkName(id) != nil {
		return ev, false, nil // no event has such an id (and it must not be a subject wildcard)
	}
	var unreadable []string // forwarders whose copy does not decode
	var why error
	defer func() {
		if len(unreadable) > 0 {
			s.log.Warn("the activity log shows no event for an attempt: the copy kept for it is unreadable",
				"event_id", id, "forwarders", unreadable, "err", why)
		}
	}()
	counts, err := s.counts(ctx, s.activity, "activity")
	if err != nil {
		return ev, false, s.wrap(op, err)
	}
	horizon := s.now().Add(-ActivityMaxAge)
	for _, fwd := range slices.Sorted(maps.Keys(counts)) {
		m, err := s.activityEvents.GetLastMsgForSubject(ctx, s.eventSubject(fwd, id))
		if errors.Is(err, jetstream.ErrMsgNotFound) || isNoMsg(err) {
			continue
		}
		if err != nil {
			return ev, false, s.wrap(op, err)
		}
		ok, err := s.refersTo(ctx, fwd, id, m.Header.Get(activitySeqHeader), horizon)
		if err != nil {
			return ev, false, s.wrap(op, err)
		}
		if !ok {
			continue
		}
		var kept event.Event
		if err := json.Unmarshal(m.Data, &kept); err != nil {
			unreadable, why = append(unreadable, fwd), cmp.Or(why, err)
			continue
		}
		return kept, true, nil
	}
	return ev, false, nil
}

// refersTo reports whether forwarder's attempt seq (a header value) is still in the log,
// at event id, and recorded at or after horizon.
func (s *Store) refersTo(ctx context.Context, forwarder, id, seq string, horizon time.Time) (bool, error) {
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil || n == 0 {
		return false, nil
	}
	m, err := s.activity.GetMsg(ctx, n)
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound) || isNoMsg(err):
		return false, nil // the attempt left the log
	case err != nil:
		return false, err
	case m.Subject != s.subject("activity", forwarder):
		return false, nil
	}
	var a event.Attempt
	if json.Unmarshal(m.Data, &a) != nil {
		return false, nil
	}
	return a.EventID == id && !a.At.Before(horizon), nil
}
