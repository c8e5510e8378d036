package natsstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// The Import methods take what another store (a bbolt file) holds, for `store copy`.
// Each may be run again on the same data: a seen key already present stays as it is,
// and an outbox entry or dead letter carries a message id naming where it came from, so
// that a copy run again within the duplicate window adds nothing twice.

// ImportSeen marks the record with identity key (event.Lead.Key) seen, created and last
// seen at the given times with the given content hash, unless it is seen already;
// added says which. Its chatbot's Seen count follows.
func (s *Store) ImportSeen(ctx context.Context, key string, created, lastSeen time.Time, hash []byte) (added bool, err error) {
	serial, _, ok := strings.Cut(key, "|")
	if !ok || !namePattern.MatchString(serial) {
		return false, s.wrap("import seen key", errors.New("not a record identity key (serial|type|session|time)"))
	}
	sum := sha256.Sum256([]byte(key))
	id := hex.EncodeToString(sum[:]) // the record's event id, as event.Lead.ID
	v := seenValue{created: created, lastSeen: lastSeen, hash: hash, serial: serial}
	err = s.putSeen(ctx, claim{key: id, val: v.encode()})
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, s.wrap("import seen key "+id, err)
	}
	err = updateJSON(ctx, s.chatbots, serial, func(st *event.ChatbotState) { st.Seen++ })
	return true, s.wrap("import seen key "+id, err)
}

// ImportDelivery adds d to its forwarder's outbox under a new Seq, keeping its event,
// Enqueued time and retry state; from names the source store and d.Seq its place there.
func (s *Store) ImportDelivery(ctx context.Context, from string, d event.Delivery) error {
	op := fmt.Sprintf("import outbox entry %s #%d", d.Forwarder, d.Seq)
	if err := checkName(d.Forwarder); err != nil {
		return s.wrap(op, err)
	}
	evJSON, err := json.Marshal(d.Event)
	if err != nil {
		return s.wrap(op, err)
	}
	m := s.entryMsg(d.Forwarder, "import."+from+"."+d.Forwarder+"."+strconv.FormatUint(d.Seq, 10),
		entry{Forwarder: d.Forwarder, Event: evJSON, Enqueued: d.Enqueued})
	ack, err := s.js.PublishMsg(ctx, m)
	if err != nil {
		return s.wrap(op, err)
	}
	if d.Attempts == 0 || ack.Duplicate {
		return nil
	}
	r := retryState{Attempts: d.Attempts, FirstTry: d.FirstTry, NextTry: d.NextTry, LastError: d.LastError}
	rm, err := s.fitError(&r.LastError, func() (*nats.Msg, error) {
		raw, err := json.Marshal(r)
		return &nats.Msg{Data: raw}, err
	})
	if err == nil {
		_, err = s.retry.Put(ctx, retryKey(d.Forwarder, ack.Sequence), rm.Data)
	}
	return s.wrap(op, err)
}

// ImportDeadLetter adds dl to the dead letters; n numbers it in the source store's list.
func (s *Store) ImportDeadLetter(ctx context.Context, from string, n int, dl event.DeadLetter) error {
	op := fmt.Sprintf("import dead letter #%d", n)
	if err := checkName(dl.Forwarder); err != nil {
		return s.wrap(op, err)
	}
	m, err := s.fitError(&dl.LastError, func() (*nats.Msg, error) {
		raw, err := json.Marshal(dl)
		m := nats.NewMsg(s.subject("dead", dl.Forwarder))
		m.Data = raw
		m.Header.Set(jetstream.MsgIDHeader, "import."+from+".dead."+strconv.Itoa(n))
		return m, err
	})
	if err != nil {
		return s.wrap(op, err)
	}
	_, err = s.js.PublishMsg(ctx, m)
	return s.wrap(op, err)
}

// ImportChatbot merges st into chatbot serial's state: initialized if either is, the
// later poll times, the error of the later poll. The Seen count is ImportSeen's.
func (s *Store) ImportChatbot(ctx context.Context, serial string, st event.ChatbotState) error {
	if !namePattern.MatchString(serial) {
		return s.wrap("import chatbot "+serial, errors.New("serial: want letters, digits, - and _"))
	}
	err := updateJSON(ctx, s.chatbots, serial, func(cur *event.ChatbotState) {
		cur.Initialized = cur.Initialized || st.Initialized
		if st.LastPoll.After(cur.LastPoll) {
			cur.LastPoll, cur.LastError = st.LastPoll, st.LastError
		}
		if st.LastOK.After(cur.LastOK) {
			cur.LastOK = st.LastOK
		}
	})
	if err == nil && !st.LastOK.IsZero() {
		s.mu.Lock()
		if st.LastOK.After(s.lastOK[serial]) {
			s.lastOK[serial] = st.LastOK
		}
		s.mu.Unlock()
	}
	return s.wrap("import chatbot "+serial, err)
}

// ImportPause keeps forwarder paused as p says, unless it is paused already.
func (s *Store) ImportPause(ctx context.Context, forwarder string, p event.Pause) error {
	if err := checkName(forwarder); err != nil {
		return s.wrap("import pause", err)
	}
	err := updateJSON(ctx, s.paused, forwarder, func(cur *event.Pause) {
		if cur.Since.IsZero() {
			*cur = p
		}
	})
	return s.wrap("import pause "+forwarder, err)
}
