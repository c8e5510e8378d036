package event

import "time"

// Delivery is one event owed to one forwarder: an outbox entry. Seq orders the
// forwarder's deliveries oldest first and, with Forwarder, identifies the entry.
type Delivery struct {
	Forwarder string    `json:"forwarder"`
	Seq       uint64    `json:"seq"`
	Event     Event     `json:"event"`
	Enqueued  time.Time `json:"enqueued"`  // when the record was taken into the store
	Attempts  int       `json:"attempts"`  // failed attempts so far
	FirstTry  time.Time `json:"first_try"` // zero until the first attempt; starts the retry budget
	NextTry   time.Time `json:"next_try"`  // after a failed attempt: not before this time
	LastError string    `json:"last_error,omitempty"`
}

// DeadLetter is a delivery given up on: a permanent failure or a spent retry budget.
type DeadLetter struct {
	Delivery
	Failed time.Time `json:"failed"` // when it was given up
}

// Ingested is what the store made of one polled page of records.
type Ingested struct {
	New       int     // records never seen before, now in the outbox
	Duplicate int     // records seen before, unchanged (or changes not announced)
	Updated   int     // seen records whose content changed, announced as updated events
	Baseline  int     // records marked seen without an event (first poll with initial: skip)
	Stale     int     // unseen records created before the retention horizon: ignored, not marked seen
	Events    []Event // the events put in the outbox, in record order
	// Rejected lists the records the store could not take; they are not marked seen.
	Rejected []Rejected
}

// Add returns the counts and events of in and b together (b's after in's).
func (in Ingested) Add(b Ingested) Ingested {
	in.New += b.New
	in.Duplicate += b.Duplicate
	in.Updated += b.Updated
	in.Baseline += b.Baseline
	in.Stale += b.Stale
	in.Rejected = append(in.Rejected, b.Rejected...)
	in.Events = append(in.Events, b.Events...)
	return in
}

// Rejected is a record the store could not take, by its index in the page given to the
// store and its event id, with a reason that names the field and never its content.
type Rejected struct {
	Index   int
	EventID string
	Reason  string
}

// Verdict is what became of a delivery attempt, as the outbox records it.
type Verdict int

// The verdicts an attempt can end in.
const (
	Acked    Verdict = iota + 1 // the target took it: the entry leaves the outbox
	Retrying                    // a failure to retry: Attempts, FirstTry, NextTry and LastError are kept
	Dead                        // given up: the entry moves to the dead letters
)

// Outcome is one attempt's verdict on the outbox entry (Delivery.Forwarder,
// Delivery.Seq), for the outbox to record. For Retrying and Dead the entry takes
// Delivery's Attempts, FirstTry, NextTry and LastError; At is when a Dead one was given up.
// Took is how long the attempt took (for a batch, the whole batch's), for the activity log.
type Outcome struct {
	Delivery Delivery
	Verdict  Verdict
	At       time.Time
	Took     time.Duration
}
