package ops

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Backend is what the operator commands act on: the store directly (Local) when no
// daemon runs, or the running daemon's admin API (Client), since bbolt lets only one
// process open the store.
//
// forwarder "" means every forwarder; id "" in Replay and Drop means every dead letter
// of the forwarder(s). Replay and Drop return how many dead letters they moved or removed.
type Backend interface {
	Status(ctx context.Context) (Status, error)
	DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error)
	Replay(ctx context.Context, forwarder, id string) (int, error)
	Drop(ctx context.Context, forwarder, id string) (int, error)
	// Resume unpauses a forwarder whose target was gone and reports whether it was paused.
	Resume(ctx context.Context, forwarder string) (bool, error)
	// MovePending moves the outbox entries of from, a forwarder no longer configured, to
	// the configured forwarder to (the store's MovePending).
	MovePending(ctx context.Context, from, to string) (OutboxMove, error)
	// DropPending deletes the outbox entries of forwarder, which is no longer configured,
	// and returns how many it deleted.
	DropPending(ctx context.Context, forwarder string) (int, error)
	// DryBackfill says what a backfill of chatbot serial's leads would queue, writing
	// nothing, for `backfill --dry-run`.
	DryBackfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error)
	// Reload has the running daemon read its config file again and apply it; a config
	// with problems is rejected whole with a *ConfigRejectedError.
	Reload(ctx context.Context) (ReloadReport, error)
}

// OutboxMove is what a move of outbox entries did.
type OutboxMove struct {
	Moved   int `json:"moved"`   // entries now owed to the new forwarder
	Already int `json:"already"` // entries whose event the new forwarder owed already, removed
}

// RefusedError is an operator request refused because of what it asked for (HTTP 400
// through the admin API), e.g. moving the deliveries of a forwarder that is configured.
type RefusedError struct{ Reason string }

func (e *RefusedError) Error() string { return e.Reason }

// Status is the state `leadbridge status` shows.
type Status struct {
	Version    string            `json:"version"`
	Daemon     bool              `json:"daemon"` // answered by a running daemon
	Chatbots   []ChatbotStatus   `json:"chatbots"`
	Forwarders []ForwarderStatus `json:"forwarders"`
}

// ChatbotStatus is one configured chatbot's poll state.
type ChatbotStatus struct {
	Serial    string    `json:"serial"`
	Name      string    `json:"name"`
	Account   string    `json:"account"`
	LastPoll  time.Time `json:"last_poll,omitzero"`
	LastOK    time.Time `json:"last_ok,omitzero"`
	LastError string    `json:"last_error,omitempty"` // of the last poll; empty when it succeeded
	Seen      int       `json:"seen"`                 // records the store holds as seen
	// Interval is the chatbot's own poll interval; zero when it polls at poll.interval.
	Interval time.Duration `json:"interval,omitempty"`
	// PolledBy names the replica that holds the chatbot's lease and polls it (store
	// backend nats); empty with bbolt, or while no replica holds it.
	PolledBy string `json:"polled_by,omitempty"`
}

// TypeUnconfigured is the Type of a forwarder that has deliveries in the store but is
// not in the config.
const TypeUnconfigured = "unconfigured"

// ForwarderStatus is one forwarder's outbox, dead letters and pause.
type ForwarderStatus struct {
	Name         string    `json:"name"`
	Type         string    `json:"type"`
	Pending      int       `json:"pending"`
	Dead         int       `json:"dead"`
	Paused       bool      `json:"paused"`
	PausedReason string    `json:"paused_reason,omitempty"`
	PausedSince  time.Time `json:"paused_since,omitzero"`
}

// ForwarderInfo is a configured forwarder.
type ForwarderInfo struct {
	Name string
	Type string
}

// LocalStore is what Local needs of the store; the bbolt store implements it.
type LocalStore interface {
	StoreStats
	// Chatbots is PollStates with each chatbot's seen count.
	Chatbots(ctx context.Context) (map[string]event.ChatbotState, error)
	DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error)
	Replay(ctx context.Context, forwarder, eventID string) (int, error)
	Drop(ctx context.Context, forwarder, eventID string) (int, error)
	Resume(ctx context.Context, forwarder string) (bool, error)
	MovePending(ctx context.Context, from, to string) (moved, already int, err error)
	DropPending(ctx context.Context, forwarder string) (int, error)
	DryBackfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error)
}

// Local is the Backend over an open store: the daemon serves it through the admin API,
// and the commands use it directly when no daemon runs.
type Local struct {
	Store LocalStore
	// Resumer unpauses a forwarder in the running dispatcher (Dispatcher.Resume); nil
	// when no daemon runs. Its presence makes Status report Daemon.
	Resumer func(name string) bool
	// Reloader reads the config file again and applies it (the daemon's reload); nil
	// when no daemon runs.
	Reloader func(ctx context.Context) (ReloadReport, error)
	// Chatbots and Forwarders are the configured ones; after Status has been called,
	// change them with SetConfigured only.
	Chatbots   []event.Chatbot
	Forwarders []ForwarderInfo
	Version    string

	mu sync.Mutex // guards Chatbots and Forwarders once serving
}

// SetConfigured replaces the configured chatbots and forwarders (after a reload); it is
// safe to call while Status runs.
func (l *Local) SetConfigured(chatbots []event.Chatbot, forwarders []ForwarderInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.Chatbots, l.Forwarders = slices.Clone(chatbots), slices.Clone(forwarders)
}

// configuredNow is the configured chatbots and forwarders.
func (l *Local) configuredNow() ([]event.Chatbot, []ForwarderInfo) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.Chatbots, l.Forwarders
}

var _ Backend = (*Local)(nil)

// Status reads the configured chatbots' poll state with their seen counts (with bbolt a
// pass over every seen key) and every forwarder's outbox, dead letters and pause,
// including forwarders not in the config that still have any: what `leadbridge status`
// shows.
func (l *Local) Status(ctx context.Context) (Status, error) {
	return l.status(ctx, l.Store.Chatbots)
}

// StatusWithoutSeen is Status from the store's PollStates, which readiness and metrics
// read too: ChatbotStatus.Seen is whatever PollStates leaves there (zero with bbolt,
// which counts only for Status). The web console calls it on its pages.
func (l *Local) StatusWithoutSeen(ctx context.Context) (Status, error) {
	return l.status(ctx, l.Store.PollStates)
}

// status is Status with the chatbots' states read by states.
func (l *Local) status(ctx context.Context, states func(context.Context) (map[string]event.ChatbotState, error)) (Status, error) {
	polls, err := states(ctx)
	if err != nil {
		return Status{}, err
	}
	depth, err := l.Store.Depth(ctx)
	if err != nil {
		return Status{}, err
	}
	dead, err := l.Store.DeadCount(ctx)
	if err != nil {
		return Status{}, err
	}
	paused, err := l.Store.Paused(ctx)
	if err != nil {
		return Status{}, err
	}

	bots, fwds := l.configuredNow()
	s := Status{
		Version:    l.Version,
		Daemon:     l.Resumer != nil,
		Chatbots:   make([]ChatbotStatus, 0, len(bots)),
		Forwarders: make([]ForwarderStatus, 0, len(fwds)),
	}
	for _, c := range bots {
		st := polls[c.Serial]
		s.Chatbots = append(s.Chatbots, ChatbotStatus{Serial: c.Serial, Name: c.Name, Account: c.Account,
			LastPoll: st.LastPoll, LastOK: st.LastOK, LastError: st.LastError, Seen: st.Seen, Interval: c.Interval})
	}
	if err := polledBy(ctx, l.Store, s.Chatbots); err != nil {
		return Status{}, err
	}
	forwarder := func(name, typ string) ForwarderStatus {
		f := ForwarderStatus{Name: name, Type: typ, Pending: depth[name], Dead: dead[name]}
		if p, ok := paused[name]; ok {
			f.Paused, f.PausedReason, f.PausedSince = true, p.Reason, p.Since
		}
		return f
	}
	configured := map[string]bool{}
	for _, f := range fwds {
		configured[f.Name] = true
		s.Forwarders = append(s.Forwarders, forwarder(f.Name, f.Type))
	}
	var extra []string
	for _, m := range []map[string]int{depth, dead} {
		for name, n := range m {
			if n > 0 && !configured[name] {
				extra = append(extra, name)
			}
		}
	}
	for name := range paused {
		if !configured[name] {
			extra = append(extra, name)
		}
	}
	slices.Sort(extra)
	for _, name := range slices.Compact(extra) {
		s.Forwarders = append(s.Forwarders, forwarder(name, TypeUnconfigured))
	}
	return s, nil
}

// DeadLetters lists the dead letters of forwarder ("" = all), oldest failure first.
func (l *Local) DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error) {
	return l.Store.DeadLetters(ctx, forwarder)
}

// Replay puts dead letters back in the outbox; a running dispatcher is woken by the store.
func (l *Local) Replay(ctx context.Context, forwarder, id string) (int, error) {
	return l.Store.Replay(ctx, forwarder, id)
}

// Drop deletes dead letters.
func (l *Local) Drop(ctx context.Context, forwarder, id string) (int, error) {
	return l.Store.Drop(ctx, forwarder, id)
}

// Resume clears the forwarder's pause in the store and, with a daemon, in its dispatcher.
func (l *Local) Resume(ctx context.Context, forwarder string) (bool, error) {
	was, err := l.Store.Resume(ctx, forwarder)
	if err != nil {
		return false, err
	}
	if l.Resumer != nil {
		l.Resumer(forwarder)
	}
	return was, nil
}

// configured reports whether name is a configured forwarder.
func (l *Local) configured(name string) bool {
	_, fwds := l.configuredNow()
	return slices.ContainsFunc(fwds, func(f ForwarderInfo) bool { return f.Name == name })
}

// notConfigured refuses to touch the outbox of a configured forwarder: its lane (in a
// running daemon) may be delivering those very entries.
func (l *Local) notConfigured(flag, name string) error {
	switch {
	case name == "":
		return &RefusedError{flag + " is empty: name the forwarder whose deliveries are stranded"}
	case l.configured(name):
		return &RefusedError{fmt.Sprintf("%s %q is a configured forwarder: its deliveries are not stranded "+
			"(remove it from the config and reload or restart, then move or drop what it left)", flag, name)}
	}
	return nil
}

// MovePending moves the stranded deliveries of from to the configured forwarder to; a
// running dispatcher is woken by the store and delivers them.
func (l *Local) MovePending(ctx context.Context, from, to string) (OutboxMove, error) {
	if err := l.notConfigured("from", from); err != nil {
		return OutboxMove{}, err
	}
	if !l.configured(to) {
		return OutboxMove{}, &RefusedError{fmt.Sprintf("to %q is not a configured forwarder; "+
			"moving deliveries there would strand them again", to)}
	}
	moved, already, err := l.Store.MovePending(ctx, from, to)
	return OutboxMove{Moved: moved, Already: already}, err
}

// DropPending deletes the stranded deliveries of forwarder.
func (l *Local) DropPending(ctx context.Context, forwarder string) (int, error) {
	if err := l.notConfigured("forwarder", forwarder); err != nil {
		return 0, err
	}
	return l.Store.DropPending(ctx, forwarder)
}

// DryBackfill computes what a backfill of leads would queue, writing nothing.
func (l *Local) DryBackfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error) {
	return l.Store.DryBackfill(ctx, serial, leads, o)
}
