package dedupe

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// Chatbots returns the state of every chatbot the store has heard of, by serial. The
// poll bookkeeping (LastPoll, LastOK, LastError) is this process's latest, including
// what RecordPoll noted but has not flushed yet. Seen is counted from the seen keys
// themselves, in the same read transaction, so it cannot drift from them.
func (s *Store) Chatbots(ctx context.Context) (map[string]event.ChatbotState, error) {
	return s.chatbots(ctx, true)
}

// PollStates is Chatbots without the seen counts, which read every seen key: what
// readiness and each metrics scrape read.
func (s *Store) PollStates(ctx context.Context) (map[string]event.ChatbotState, error) {
	return s.chatbots(ctx, false)
}

// chatbots is Chatbots, counting the seen keys only if count is set.
func (s *Store) chatbots(ctx context.Context, count bool) (map[string]event.ChatbotState, error) {
	out := map[string]event.ChatbotState{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		if b := tx.Bucket(bucketChatbots); b != nil {
			err := b.ForEach(func(k, _ []byte) error {
				var st event.ChatbotState
				if _, err := getJSON(b, k, &st); err != nil {
					return fmt.Errorf("chatbot %s: %w", k, err)
				}
				st.Seen = 0 // a count stored by an older build is not trusted
				out[string(k)] = st
				return nil
			})
			if err != nil {
				return err
			}
		}
		if !count {
			return nil
		}
		countSeen(tx, func(serial string, n int) {
			st := out[serial]
			st.Seen = n
			out[serial] = st
		})
		return nil
	})
	if err != nil {
		return out, s.wrap("chatbots", err)
	}
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	for serial, m := range s.polls {
		st := out[serial]
		m.apply(&st)
		out[serial] = st
	}
	return out, nil
}

// countSeen calls fn with each chatbot's number of seen keys. A key starts with its
// chatbot's serial and "|" (event.Lead.Key), so one chatbot's keys are adjacent in the
// bucket and one pass over its keys counts them all, without decoding a value.
func countSeen(tx *bolt.Tx, fn func(serial string, n int)) {
	b := tx.Bucket(bucketSeen)
	if b == nil {
		return
	}
	var serial []byte
	n := 0
	c := b.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if s, _, _ := bytes.Cut(k, []byte("|")); !bytes.Equal(s, serial) {
			if n > 0 {
				fn(string(serial), n)
			}
			serial, n = s, 0
		}
		n++
	}
	if n > 0 {
		fn(string(serial), n)
	}
}

// DefaultPollFlushInterval is how often the poll bookkeeping noted by RecordPoll is
// written to the file when Options.PollFlushInterval is zero.
const DefaultPollFlushInterval = 30 * time.Second

// pollMark is the poll bookkeeping of one chatbot noted since the last flush.
type pollMark struct {
	lastPoll  time.Time
	lastOK    time.Time // zero when no poll since the last flush succeeded
	lastError string
}

// apply puts m over st's poll fields.
func (m pollMark) apply(st *event.ChatbotState) {
	st.LastPoll, st.LastError = m.lastPoll, m.lastError
	if !m.lastOK.IsZero() {
		st.LastOK = m.lastOK
	}
}

// RecordPoll notes a poll of chatbot serial at the given time and its outcome
// (pollErr nil = success, which clears LastError). Chatbots sees it at once; the file
// gets it at the next flush (every Options.PollFlushInterval, and at Close), in one
// transaction with every other chatbot's, so that a poll that finds nothing new costs
// no fsync. The one exception is a chatbot's first success while the file holds none
// for it: that is written before RecordPoll returns.
//
// A crash loses at most the marks of the last flush interval, and that is safe: no
// record's fate depends on them. Which records are new is decided by the seen keys,
// written durably by Ingest with the deliveries. LastOK only starts the catch-up window
// of the next start (a day before it); a lost mark leaves an older one, so that window
// starts at most one flush interval earlier, and records read again in it are seen.
// A lost first mark would leave none, and a chatbot without one gets only the plain
// lookback window, which after a long downtime would miss the gap's older part: hence
// the exception.
func (s *Store) RecordPoll(ctx context.Context, serial string, at time.Time, pollErr error) error {
	if s.readOnly {
		return s.wrap("record poll of "+serial, ErrReadOnly)
	}
	if err := ctx.Err(); err != nil {
		return s.wrap("record poll of "+serial, err)
	}
	s.pollMu.Lock()
	if s.closed {
		s.pollMu.Unlock()
		return s.wrap("record poll of "+serial, berrors.ErrDatabaseNotOpen)
	}
	m := s.polls[serial]
	m.lastPoll = at
	if pollErr == nil {
		m.lastOK, m.lastError = at, ""
		s.lastOK[serial] = at
	} else {
		m.lastError = pollErr.Error()
	}
	s.polls[serial] = m
	now := pollErr == nil && !s.durableOK[serial]
	s.pollMu.Unlock()
	if !now {
		return nil
	}
	return s.flush(ctx, serial)
}

// FlushPolls writes the poll bookkeeping noted since the last flush in one transaction.
// It runs every Options.PollFlushInterval and at Close; nothing else needs to call it.
// If the write fails, the marks are kept for the next flush.
func (s *Store) FlushPolls(ctx context.Context) error {
	if s.readOnly {
		return nil
	}
	return s.flush(ctx, "")
}

// flush writes the marks noted so far, of every chatbot or only of serial.
func (s *Store) flush(ctx context.Context, serial string) error {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.pollMu.Lock()
	marks := make(map[string]pollMark, len(s.polls))
	for k, m := range s.polls {
		if serial == "" || k == serial {
			marks[k] = m
		}
	}
	s.pollMu.Unlock()
	if len(marks) == 0 {
		return nil
	}
	err := s.update(ctx, func(tx *bolt.Tx) error {
		for k, m := range marks {
			if err := updateChatbotTx(tx, k, m.apply); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		if serial != "" {
			return s.wrap("record poll of "+serial, err)
		}
		return s.wrap(fmt.Sprintf("record the polls of %d chatbots", len(marks)), err)
	}
	// Readers saw the marks in memory until now; they see them in the file from now.
	// A mark noted again during the write stays for the next flush.
	s.pollMu.Lock()
	for k, m := range marks {
		if !m.lastOK.IsZero() {
			s.durableOK[k] = true
		}
		if s.polls[k] == m {
			delete(s.polls, k)
		}
	}
	s.pollMu.Unlock()
	return nil
}

// LastOK returns chatbot serial's last successful poll, zero if none: the latest success
// RecordPoll noted in this process, as it was given (with its monotonic clock reading,
// if any), else the one stored when the store was opened. It is read from memory, so it
// answers even when the file does not (ctx goes unused).
func (s *Store) LastOK(_ context.Context, serial string) (time.Time, error) {
	s.pollMu.Lock()
	defer s.pollMu.Unlock()
	return s.lastOK[serial], nil
}

// loadLastOK notes in last the stored last success of every chatbot that has one. A
// state that cannot be read counts as none (Ingest and RecordPoll report it when they
// need it).
func loadLastOK(tx *bolt.Tx, last map[string]time.Time) {
	b := tx.Bucket(bucketChatbots)
	if b == nil {
		return
	}
	_ = b.ForEach(func(k, _ []byte) error {
		var st event.ChatbotState
		if _, err := getJSON(b, k, &st); err == nil && !st.LastOK.IsZero() {
			last[string(k)] = st.LastOK
		}
		return nil
	})
}

// flushPolls runs FlushPolls at every tick until stop is closed.
func (s *Store) flushPolls(tick <-chan time.Time, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		case <-tick:
			if err := s.FlushPolls(context.Background()); err != nil {
				s.log.Error("writing the poll bookkeeping failed; it is kept and written at the next try", "err", err)
			}
		}
	}
}

func updateChatbotTx(tx *bolt.Tx, serial string, fn func(*event.ChatbotState)) error {
	b := tx.Bucket(bucketChatbots)
	var st event.ChatbotState
	if _, err := getJSON(b, []byte(serial), &st); err != nil {
		return fmt.Errorf("chatbot %s: %w", serial, err)
	}
	fn(&st)
	return putJSON(b, []byte(serial), st)
}

// Pause marks forwarder paused (its target said 410 Gone); its deliveries stay in the
// outbox. Pausing a paused forwarder updates reason and config hash but keeps Since.
func (s *Store) Pause(ctx context.Context, forwarder, reason, configHash string) error {
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPaused)
		p := event.Pause{Since: time.Now()}
		if _, err := getJSON(b, []byte(forwarder), &p); err != nil {
			return err
		}
		p.Reason, p.ConfigHash = reason, configHash
		return putJSON(b, []byte(forwarder), p)
	})
	if err != nil {
		return s.wrap("pause "+forwarder, err)
	}
	s.log.Warn("forwarder paused", "forwarder", forwarder, "reason", reason)
	return nil
}

// Resume unpauses forwarder and reports whether it was paused.
func (s *Store) Resume(ctx context.Context, forwarder string) (bool, error) {
	was := false
	err := s.update(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPaused)
		was = b.Get([]byte(forwarder)) != nil
		return b.Delete([]byte(forwarder))
	})
	if err != nil {
		return false, s.wrap("resume "+forwarder, err)
	}
	if was {
		s.log.Info("forwarder resumed", "forwarder", forwarder)
	}
	return was, nil
}

// Paused returns the paused forwarders by name.
func (s *Store) Paused(ctx context.Context) (map[string]event.Pause, error) {
	out := map[string]event.Pause{}
	err := s.view(ctx, func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketPaused)
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, _ []byte) error {
			var p event.Pause
			if _, err := getJSON(b, k, &p); err != nil {
				return fmt.Errorf("paused %s: %w", k, err)
			}
			out[string(k)] = p
			return nil
		})
	})
	return out, s.wrap("paused forwarders", err)
}

// Prune removes the seen keys of records neither created nor last seen within the
// retention before now, and returns how many it removed. With Retention <= 0 it keeps
// everything. A key the API still returns is refreshed by Ingest and never pruned, and
// Ingest ignores unseen records older than the retention horizon, so a pruned record is
// never taken as new again.
//
// now is a wall clock reading: if it is implausibly far ahead of the time the store can
// vouch for (see maxClockJump), or behind a time the store already used, the store's
// clock is used instead, with a warning, so that a clock jump cannot prune keys early.
func (s *Store) Prune(ctx context.Context, now time.Time) (int, error) {
	if s.readOnly {
		return 0, s.wrap("prune", ErrReadOnly)
	}
	if s.retention <= 0 {
		return 0, nil
	}
	cutoff := s.clock.read(now).Add(-s.retention)
	n, malformed := 0, 0
	err := s.update(ctx, func(tx *bolt.Tx) error {
		seen := tx.Bucket(bucketSeen)
		var old [][]byte
		err := seen.ForEach(func(k, raw []byte) error {
			v, err := decodeSeen(raw)
			if err != nil {
				malformed++ // kept: losing it could announce its record again
				return nil
			}
			if v.created.Before(cutoff) && v.lastSeen.Before(cutoff) {
				old = append(old, slices.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range old {
			if err := seen.Delete(k); err != nil {
				return err
			}
		}
		n = len(old)
		return s.clock.persist(tx)
	})
	if err != nil {
		return 0, s.wrap("prune", err)
	}
	if malformed > 0 {
		s.log.Warn("kept seen keys whose values are malformed", "count", malformed)
	}
	if n > 0 {
		s.log.Info("pruned seen keys", "count", n, "cutoff", cutoff)
	}
	return n, nil
}
