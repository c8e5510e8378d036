package event

import "time"

// DefaultAccount names the account of the chatbots configured at the top of neoagent
// (neoagent.base_url, api_key, chatbots), beside any in neoagent.accounts.
const DefaultAccount = "default"

// Chatbot is one configured chatbot: its serial number, a display name for events, the
// account it is polled with, and its own schedule.
type Chatbot struct {
	Serial string
	Name   string
	// Account names the NeoAgent account (API key and host) the chatbot belongs to;
	// every event of the chatbot carries it.
	Account string
	// Interval and Lookback override the poller's for this chatbot when not zero.
	Interval time.Duration
	Lookback time.Duration
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

// BackfillOptions are the two choices a backfill makes (the store's Backfill and
// DryBackfill): whether seen records are sent again, and to which forwarders.
type BackfillOptions struct {
	Resend bool     // seen records go to the outbox again, as their created event (same id)
	Only   []string // if set, deliveries only for these forwarders (intersected with Route), and nothing marked seen
}
