package event

import "time"

// Chatbot is one configured chatbot: its serial number and a display name for events.
type Chatbot struct {
	Serial string
	Name   string
}

// ChatbotState is what the store knows about one chatbot.
type ChatbotState struct {
	Initialized bool      `json:"initialized"` // its first Ingest happened (the baseline is done)
	LastPoll    time.Time `json:"last_poll"`   // last poll, successful or not
	LastOK      time.Time `json:"last_ok"`     // last successful poll
	LastError   string    `json:"last_error,omitempty"`
	Seen        int       `json:"seen"` // seen keys held for it
}

// Pause is why and since when a forwarder is paused.
type Pause struct {
	Reason     string    `json:"reason"`
	ConfigHash string    `json:"config_hash"` // the forwarder's config when paused; a changed config may resume it
	Since      time.Time `json:"since"`
}

// IngestOptions changes how the store's IngestWith treats a page; it serves backfill.
// IngestWith never applies the initial=skip baseline (a backfill is deliberate) and never
// marks the chatbot initialized.
//
// With Only set, the backfill is for those forwarders alone and writes no seen key, so
// the other forwarders still get every record from normal polling:
//   - A record never seen is queued for the Only forwarders (intersected with Route) and
//     counted New, but it is NOT marked seen and does not count toward the chatbot's
//     Seen. The next Ingest takes it as new and queues it for every forwarder Route
//     names, the Only ones again with the same event id (an identifiable repeat).
//   - A seen record is treated as without Only (Resend re-queues its created event; a
//     changed one is an updated event if EmitUpdates is on), for the Only forwarders.
//     A changed record's new content is not stored, so the next Ingest still sends its
//     updated event (same id) to every forwarder.
type IngestOptions struct {
	Resend bool     // seen records go to the outbox again, as their created event (same id)
	Only   []string // if set, deliveries only for these forwarders (intersected with Route), and nothing marked seen
	DryRun bool     // compute the result (Events = what would be sent) and write nothing
}
