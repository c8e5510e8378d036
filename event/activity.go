package event

import (
	"strconv"
	"time"
)

// Attempt is one recorded delivery outcome, as the activity log keeps it: which event,
// which forwarder, what became of it. It carries no personal data (no name, email, phone
// or message); the event itself is kept beside the log once per id.
type Attempt struct {
	At        time.Time `json:"at"` // when the outcome was recorded
	Forwarder string    `json:"forwarder"`
	EventID   string    `json:"event_id"`
	Chatbot   string    `json:"chatbot"`
	Kind      Kind      `json:"kind"`
	Verdict   Verdict   `json:"verdict"`
	Attempt   int       `json:"attempt"` // the attempt's number, 1 for the first
	// Took is how long the attempt took, from the call to the target to its answer (for
	// a batch, the whole batch's); zero in attempts recorded before leadbridge kept it.
	Took time.Duration `json:"took,omitempty"`
	// InOutbox is the time from the record's taking into the store (Delivery.Enqueued)
	// to At: how long the event waited for this outcome, retries included.
	InOutbox time.Duration `json:"latency"`
	Error    string        `json:"error,omitempty"` // the attempt's error, empty when delivered
	// Account is the account of the event's chatbot; empty in attempts recorded before
	// leadbridge kept it (the store fills it from the event it keeps beside the log).
	Account string `json:"account,omitempty"`
}

// AppendJSON appends the attempt's JSON to b: byte for byte what json.Marshal(a) makes
// (see Event.AppendJSON), for the activity log, which writes one per outcome. It fails
// as json.Marshal does, only for a time whose year is outside 0-9999.
func (a Attempt) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"at":`...)
	b, err := appendJSONTime(b, a.At)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"forwarder":`...)
	b = AppendJSONString(b, a.Forwarder)
	b = append(b, `,"event_id":`...)
	b = AppendJSONString(b, a.EventID)
	b = append(b, `,"chatbot":`...)
	b = AppendJSONString(b, a.Chatbot)
	b = append(b, `,"kind":`...)
	b = AppendJSONString(b, string(a.Kind))
	b = append(b, `,"verdict":`...)
	b = strconv.AppendInt(b, int64(a.Verdict), 10)
	b = append(b, `,"attempt":`...)
	b = strconv.AppendInt(b, int64(a.Attempt), 10)
	if a.Took != 0 {
		b = append(b, `,"took":`...)
		b = strconv.AppendInt(b, int64(a.Took), 10)
	}
	b = append(b, `,"latency":`...)
	b = strconv.AppendInt(b, int64(a.InOutbox), 10)
	if a.Error != "" {
		b = append(b, `,"error":`...)
		b = AppendJSONString(b, a.Error)
	}
	if a.Account != "" {
		b = append(b, `,"account":`...)
		b = AppendJSONString(b, a.Account)
	}
	return append(b, '}'), nil
}

// ActivityQuery selects attempts from the activity log; an empty field matches all.
type ActivityQuery struct {
	Forwarder string
	Account   string
	Chatbot   string
	Kind      Kind
	Verdict   Verdict
	EventID   string
	Since     time.Time // only attempts recorded at or after it
	Limit     int       // at most this many, newest first; <= 0: all
}

// Matches reports whether a is selected by q, Limit aside.
func (q ActivityQuery) Matches(a Attempt) bool {
	return (q.Forwarder == "" || a.Forwarder == q.Forwarder) &&
		(q.Account == "" || a.Account == q.Account) &&
		(q.Chatbot == "" || a.Chatbot == q.Chatbot) &&
		(q.Kind == "" || a.Kind == q.Kind) &&
		(q.Verdict == 0 || a.Verdict == q.Verdict) &&
		(q.EventID == "" || a.EventID == q.EventID) &&
		!a.At.Before(q.Since)
}

// AttemptOf is the activity record of an outcome recorded at the given time.
func AttemptOf(o Outcome, at time.Time) Attempt {
	d := o.Delivery
	n := d.Attempts // Retrying and Dead count the failed attempt already
	if o.Verdict == Acked {
		n++
	}
	a := Attempt{At: at, Forwarder: d.Forwarder, EventID: d.Event.ID, Chatbot: d.Event.Chatbot(),
		Kind: d.Event.Kind(), Verdict: o.Verdict, Attempt: n, Took: max(o.Took, 0), Account: d.Event.Account()}
	if !d.Enqueued.IsZero() {
		a.InOutbox = max(at.Sub(d.Enqueued), 0)
	}
	if o.Verdict != Acked {
		a.Error = d.LastError
	}
	return a
}

// String names a verdict as a person reads it: delivered, retrying or dead.
func (v Verdict) String() string {
	switch v {
	case Acked:
		return "delivered"
	case Retrying:
		return "retrying"
	case Dead:
		return "dead"
	}
	return "unknown"
}

// ParseVerdict reads a verdict's String; ok is false for anything else.
func ParseVerdict(s string) (v Verdict, ok bool) {
	for _, v := range []Verdict{Acked, Retrying, Dead} {
		if v.String() == s {
			return v, true
		}
	}
	return 0, false
}
