package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// each calls fn with every live key and value of kv.
func each(ctx context.Context, kv jetstream.KeyValue, fn func(jetstream.KeyValueEntry) error) error {
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch ended early")
			}
			if e == nil {
				return nil // the initial values are all delivered
			}
			if err := fn(e); err != nil {
				return err
			}
		}
	}
}

// Chatbots returns the state of every chatbot the store has heard of, by serial.
func (s *Store) Chatbots(ctx context.Context) (map[string]event.ChatbotState, error) {
	out := map[string]event.ChatbotState{}
	err := each(ctx, s.chatbots, func(e jetstream.KeyValueEntry) error {
		var st event.ChatbotState
		if err := json.Unmarshal(e.Value(), &st); err != nil {
			return fmt.Errorf("chatbot %s: decode stored state: %w", e.Key(), err)
		}
		out[e.Key()] = st
		return nil
	})
	return out, s.wrap("chatbots", err)
}

// PollStates is Chatbots: the seen counts are kept beside the state here, so they cost
// nothing more to read.
func (s *Store) PollStates(ctx context.Context) (map[string]event.ChatbotState, error) {
	return s.Chatbots(ctx)
}

// RecordPoll notes a poll of chatbot serial at the given time and its outcome (pollErr
// nil = success, which clears LastError). Unlike bbolt's it writes at once: the state is
// shared with the other replicas.
func (s *Store) RecordPoll(ctx context.Context, serial string, at time.Time, pollErr error) error {
	if !namePattern.MatchString(serial) {
		return s.wrap("record poll of "+serial, errors.New("serial: want letters, digits, - and _"))
	}
	err := updateJSON(ctx, s.chatbots, serial, func(st *event.ChatbotState) {
		st.LastPoll = at
		if pollErr == nil {
			st.LastOK, st.LastError = at, ""
		} else {
			st.LastError = pollErr.Error()
		}
	})
	if err != nil {
		return s.wrap("record poll of "+serial, err)
	}
	if pollErr == nil {
		s.mu.Lock()
		s.lastOK[serial] = at
		s.mu.Unlock()
	}
	return nil
}

// LastOK returns chatbot serial's last successful poll, zero if none: the one stored in
// the shared state (by whichever replica polled it last: the chatbot may have changed
// hands), or the one RecordPoll noted in this process, as it was given (with its
// monotonic clock reading), when that is as late.
func (s *Store) LastOK(ctx context.Context, serial string) (time.Time, error) {
	var st event.ChatbotState
	if _, _, err := getJSON(ctx, s.chatbots, serial, &st); err != nil {
		return time.Time{}, s.wrap("last success of "+serial, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if mine := s.lastOK[serial]; !mine.IsZero() && !st.LastOK.After(mine) {
		return mine, nil
	}
	return st.LastOK, nil
}

// Pause marks forwarder paused (its target said 410 Gone); its deliveries stay in the
// outbox. Pausing a paused forwarder updates reason and config hash but keeps Since.
func (s *Store) Pause(ctx context.Context, forwarder, reason, configHash string) error {
	if err := checkName(forwarder); err != nil {
		return s.wrap("pause "+forwarder, err)
	}
	err := updateJSON(ctx, s.paused, forwarder, func(p *event.Pause) {
		if p.Since.IsZero() {
			p.Since = time.Now()
		}
		p.Reason, p.ConfigHash = reason, configHash
	})
	if err != nil {
		return s.wrap("pause "+forwarder, err)
	}
	s.log.Warn("forwarder paused", "forwarder", forwarder, "reason", reason)
	return nil
}

// Resume unpauses forwarder and reports whether it was paused.
func (s *Store) Resume(ctx context.Context, forwarder string) (bool, error) {
	if checkName(forwarder) != nil {
		return false, nil // never paused
	}
	_, err := s.paused.Get(ctx, forwarder)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err == nil {
		err = s.paused.Purge(ctx, forwarder, jetstream.PurgeTTL(purgeTTL))
	}
	if err != nil {
		return false, s.wrap("resume "+forwarder, err)
	}
	s.log.Info("forwarder resumed", "forwarder", forwarder)
	return true, nil
}

// Paused returns the paused forwarders by name.
func (s *Store) Paused(ctx context.Context) (map[string]event.Pause, error) {
	out := map[string]event.Pause{}
	err := each(ctx, s.paused, func(e jetstream.KeyValueEntry) error {
		var p event.Pause
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return fmt.Errorf("paused %s: decode: %w", e.Key(), err)
		}
		out[e.Key()] = p
		return nil
	})
	return out, s.wrap("paused forwarders", err)
}

// Prune removes the seen keys of records neither created nor last seen within the
// retention before now, and returns how many it removed; with Retention <= 0 it keeps
// everything. now is a wall-clock reading; if it is ahead of the NATS server's clock,
// the server's is used, so that one clock jumped ahead cannot prune keys early. A key
// refreshed by another replica meanwhile is kept (the delete names the revision read).
// Each key also expires on its own after twice the retention, in case no replica
// prunes.
func (s *Store) Prune(ctx context.Context, now time.Time) (int, error) {
	if s.retention <= 0 {
		return 0, nil
	}
	serverNow, err := s.serverTime(ctx)
	if err != nil {
		return 0, s.wrap("prune", err)
	}
	if now.After(serverNow) {
		// A wall clock ahead of the server's would prune keys early, and a record the
		// API still returns whose key is gone is announced again: the earlier clock wins.
		now = serverNow
	}
	cutoff := now.Add(-s.retention)
	type old struct {
		key, serial string
		rev         uint64
	}
	var olds []old
	malformed := 0
	err = each(ctx, s.seen, func(e jetstream.KeyValueEntry) error {
		v, err := decodeSeen(e.Value())
		if err != nil {
			malformed++ // kept: losing it could announce its record again
			return nil
		}
		if v.created.Before(cutoff) && v.lastSeen.Before(cutoff) {
			olds = append(olds, old{key: e.Key(), serial: v.serial, rev: e.Revision()})
		}
		return nil
	})
	if err != nil {
		return 0, s.wrap("prune", err)
	}
	perChatbot := map[string]int{}
	n := 0
	for _, o := range olds {
		err := s.seen.Purge(ctx, o.key, jetstream.LastRevision(o.rev), jetstream.PurgeTTL(purgeTTL))
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || isWrongLast(err) {
			continue // refreshed meanwhile
		}
		if err != nil {
			return n, s.wrap("prune", err)
		}
		perChatbot[o.serial]++
		n++
	}
	for serial, removed := range perChatbot {
		if err := updateJSON(ctx, s.chatbots, serial, func(st *event.ChatbotState) { st.Seen = max(0, st.Seen-removed) }); err != nil {
			return n, s.wrap("prune", err)
		}
	}
	if malformed > 0 {
		s.log.Warn("kept seen keys whose values are malformed", "count", malformed)
	}
	if n > 0 {
		s.log.Info("pruned seen keys", "count", n, "cutoff", cutoff)
	}
	return n, nil
}

// clockKey is a key of the retry bucket (whose own keys are "<forwarder>.<seq>")
// written only to read the server's time.
const clockKey = "_clock"

// serverTime is the NATS server's clock now: the time it stamps on a fresh write.
func (s *Store) serverTime(ctx context.Context) (time.Time, error) {
	if _, err := s.retry.Put(ctx, clockKey, nil); err != nil {
		return time.Time{}, fmt.Errorf("read the server's clock: %w", err)
	}
	e, err := s.retry.Get(ctx, clockKey)
	if err != nil {
		return time.Time{}, fmt.Errorf("read the server's clock: %w", err)
	}
	s.server.observe(e.Created())
	return e.Created(), nil
}

// isWrongLast reports a "wrong last sequence" API error: a conditional write lost.
func isWrongLast(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// WatchResumes calls resumed with a forwarder's name each time its pause is removed
// from the store (by any replica or operator command), until ctx is done, so that every
// running replica resumes it, not only the one that served the command. It returns once
// the watch is set up.
func (s *Store) WatchResumes(ctx context.Context, resumed func(forwarder string)) error {
	w, err := s.paused.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return s.wrap("watch pauses", err)
	}
	go func() {
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e != nil && (e.Operation() == jetstream.KeyValueDelete || e.Operation() == jetstream.KeyValuePurge) {
					resumed(e.Key())
				}
			}
		}
	}()
	return nil
}
