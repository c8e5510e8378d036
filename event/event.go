// Package event holds leadbridge's domain types: a Lead read from the LeadList API, the
// CloudEvent built from it, the pending and dead deliveries that carry it to targets, and
// what the store keeps beside them (a chatbot's state, a forwarder's pause, how a
// backfill ingests). Every other package imports this one; it imports none of them.
package event

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Kind tells a lead from an appointment.
type Kind string

// The kinds of record the LeadList API returns.
const (
	KindLead        Kind = "lead"
	KindAppointment Kind = "appointment"
)

// ParseKind maps the API's Type field ("Lead", "Appointment", any case) to a Kind.
func ParseKind(apiType string) (Kind, error) {
	switch strings.ToLower(strings.TrimSpace(apiType)) {
	case "lead":
		return KindLead, nil
	case "appointment":
		return KindAppointment, nil
	}
	return "", fmt.Errorf("unknown record Type %q (want Lead or Appointment)", apiType)
}

// apiType is the API's spelling of the kind; it is what the identity key uses.
func (k Kind) apiType() string {
	switch k {
	case KindLead:
		return "Lead"
	case KindAppointment:
		return "Appointment"
	}
	return string(k)
}

// Action is what happened to a record: it was created, or (optionally) its content changed.
type Action string

// The actions an event can announce.
const (
	ActionCreated Action = "created"
	ActionUpdated Action = "updated"
)

// keyTimeLayout is RFC 3339 in UTC with exactly nine fractional digits, so that the same
// instant always yields the same key whatever offset and precision the API used.
const keyTimeLayout = "2006-01-02T15:04:05.000000000Z07:00"

// Lead is one record of the LeadList API, lead or appointment, tied to its chatbot.
// It is also the "data" of every event.
type Lead struct {
	Chatbot     string `json:"chatbot"`
	ChatbotName string `json:"chatbot_name"`
	// Account is the account the chatbot was polled with (DefaultAccount for the
	// top-level one). It is not part of the record's identity: Key leaves it out, so
	// moving a chatbot to another account does not make its records new.
	Account   string    `json:"account"`
	Kind      Kind      `json:"kind"`
	Name      string    `json:"name"`
	Email     string    `json:"email"`
	Phone     string    `json:"phone"`
	Content   string    `json:"content"`
	SessionID int64     `json:"session_id"`
	URI       string    `json:"uri"`
	Count     int       `json:"count"`
	CreatedAt time.Time `json:"created_at"`
}

// Key is the record's identity: chatbot serial, API Type, SessionID and CreateTime in UTC
// with nanoseconds, joined by "|". The API has no record id, and these four never change
// for one record, so the same record yields the same key on every poll and every machine.
func (l Lead) Key() string {
	var buf [128]byte // room for most keys: no allocation but the string's
	b := append(buf[:0], l.Chatbot...)
	b = append(append(b, '|'), l.Kind.apiType()...)
	b = strconv.AppendInt(append(b, '|'), l.SessionID, 10)
	b = l.CreatedAt.UTC().AppendFormat(append(b, '|'), keyTimeLayout)
	return string(b)
}

// ID is the event id of the record's created event: the SHA-256 of Key, hex encoded.
func (l Lead) ID() string {
	return hashHex(l.Key())
}

// ContentHash fingerprints the fields that may change for one record (Count, Content,
// Name, Email, PhoneNumber), so the store can notice an update.
func (l Lead) ContentHash() string {
	sum := l.ContentSum()
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return string(h[:])
}

// ContentSum is ContentHash before its hex encoding: the SHA-256 it is the hex of.
func (l Lead) ContentSum() [sha256.Size]byte {
	var buf [256]byte // room for most records: no allocation
	b := strconv.AppendInt(buf[:0], int64(l.Count), 10)
	for _, s := range []string{l.Content, l.Name, l.Email, l.Phone} {
		b = append(append(b, 0), s...)
	}
	return sha256.Sum256(b)
}

func hashHex(s string) string {
	sum := sha256.Sum256([]byte(s))
	var h [2 * sha256.Size]byte
	hex.Encode(h[:], sum[:])
	return string(h[:])
}

// SpecVersion is the CloudEvents version leadbridge emits.
const SpecVersion = "1.0"

// TypePrefix starts every event type: neoagent.<kind>.<action>.
const TypePrefix = "neoagent."

// TypeTest is the type of the events `leadbridge send-test` sends, so that no target
// takes one for a real record.
const TypeTest = TypePrefix + "test"

// Event is a CloudEvents 1.0 event in JSON structured mode, carrying one Lead.
type Event struct {
	SpecVersion     string    `json:"specversion"`
	ID              string    `json:"id"`
	Source          string    `json:"source"`
	Type            string    `json:"type"`
	Time            time.Time `json:"time"`
	DataContentType string    `json:"datacontenttype"`
	Subject         string    `json:"subject"`
	Data            Lead      `json:"data"`
}

// NewCreated builds the created event of a lead; its id is l.ID().
func NewCreated(l Lead) Event {
	return newEvent(l, ActionCreated, l.ID(), l.CreatedAt)
}

// NewUpdated builds the updated event of a lead whose content changed, observed at the
// given time. Its id derives from the key and the new content, so it differs from the
// created event's and from any other update's, yet is the same on every machine.
func NewUpdated(l Lead, observed time.Time) Event {
	id := hashHex(l.Key() + "|updated|" + l.ContentHash())
	return newEvent(l, ActionUpdated, id, observed)
}

func newEvent(l Lead, a Action, id string, at time.Time) Event {
	l.CreatedAt = l.CreatedAt.UTC()
	return Event{
		SpecVersion:     SpecVersion,
		ID:              id,
		Source:          "neoagent/" + l.Chatbot,
		Type:            TypePrefix + string(l.Kind) + "." + string(a),
		Time:            at.UTC(),
		DataContentType: "application/json",
		Subject:         strconv.FormatInt(l.SessionID, 10),
		Data:            l,
	}
}

// Kind is the kind of record the event carries.
func (e Event) Kind() Kind { return e.Data.Kind }

// Chatbot is the serial of the chatbot the record came from.
func (e Event) Chatbot() string { return e.Data.Chatbot }

// Account is the account of the chatbot the record came from; an event taken before
// leadbridge had accounts carries none, and was of the top-level one: DefaultAccount.
func (e Event) Account() string {
	if e.Data.Account == "" {
		return DefaultAccount
	}
	return e.Data.Account
}

// Action tells a created event from an updated one.
func (e Event) Action() Action {
	return Action(e.Type[strings.LastIndexByte(e.Type, '.')+1:])
}

// LogAttrs are the attributes every log line about this event carries: chatbot, kind,
// event id and session id, and never the person's name, email, phone or message.
func (e Event) LogAttrs() []any {
	return []any{"chatbot", e.Chatbot(), "kind", e.Kind(), "event_id", e.ID, "session_id", e.Data.SessionID}
}
