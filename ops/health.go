package ops

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// staleIntervals is how many poll intervals a chatbot may go without a successful poll
// before leadbridge is not ready.
const staleIntervals = 3

// maxReasonError caps the error text quoted in a readiness reason.
const maxReasonError = 200

// maxReadyChatbots caps the chatbots /readyz lists, and names in its reasons, so that
// the answer stays short with thousands of them: the failing ones come first, the rest
// are counted.
const maxReadyChatbots = 5

// Health decides readiness: the store answers, no forwarder is paused, the outbox holds
// no delivery stranded with a forwarder the config no longer has, and every
// chatbot had a successful poll within 3 of its poll intervals (a chatbot that has not yet
// succeeded counts from the start, so a fresh start is ready). It reads the polls from
// the store's chatbot state, counting only those since its start (this process's), and
// is safe for concurrent use.
type Health struct {
	store StoreStats
	now   func() time.Time
	start time.Time

	mu       sync.Mutex // guards the configured set, which SetConfigured changes
	chatbots []event.Chatbot
	known    map[string]bool // configured forwarders
	interval time.Duration
	added    map[string]time.Time // chatbots added by SetConfigured, since when

	// components are in-process parts (the embedded NATS server) readiness waits for.
	components []component
}

// NewHealth watches the given chatbots, polled every interval (a minute, poll.interval's
// default, if <= 0) unless a chatbot's own Interval says otherwise, and the outbox
// entries of forwarders not among the configured ones.
// now tells the time (time.Now if nil); the start is now().
func NewHealth(src StoreStats, chatbots []event.Chatbot, forwarders []ForwarderInfo, interval time.Duration, now func() time.Time) *Health {
	if interval <= 0 {
		interval = time.Minute
	}
	if now == nil {
		now = time.Now
	}
	h := &Health{store: src, now: now, start: now()}
	h.set(chatbots, forwarders, interval)
	return h
}

// SetConfigured makes readiness watch these chatbots and forwarders, polled every
// interval (a minute if <= 0), after a reload. A chatbot not watched before counts from
// now, as one does from the start.
func (h *Health) SetConfigured(chatbots []event.Chatbot, forwarders []ForwarderInfo, interval time.Duration) {
	if interval <= 0 {
		interval = time.Minute
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	was := make(map[string]bool, len(h.chatbots))
	for _, c := range h.chatbots {
		was[c.Serial] = true
	}
	added := make(map[string]time.Time, len(h.added))
	for _, c := range chatbots {
		switch at, ok := h.added[c.Serial]; {
		case ok:
			added[c.Serial] = at
		case !was[c.Serial]:
			added[c.Serial] = now
		}
	}
	h.added = added
	h.setLocked(chatbots, forwarders, interval)
}

// set is setLocked under h.mu.
func (h *Health) set(chatbots []event.Chatbot, forwarders []ForwarderInfo, interval time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.setLocked(chatbots, forwarders, interval)
}

// setLocked sets the configured set. h.mu must be held.
func (h *Health) setLocked(chatbots []event.Chatbot, forwarders []ForwarderInfo, interval time.Duration) {
	known := make(map[string]bool, len(forwarders))
	for _, f := range forwarders {
		known[f.Name] = true
	}
	h.chatbots, h.known, h.interval = slices.Clone(chatbots), known, interval
}

// Readiness is the /readyz answer, meant to be read by a person as much as a probe.
type Readiness struct {
	Ready bool   `json:"ready"`
	Store string `json:"store"` // "open", or "error: ..." when it does not answer
	// Chatbots lists at most 5 chatbots: the failing ones first, then others.
	Chatbots         []ChatbotReadiness `json:"chatbots"`
	ChatbotsTotal    int                `json:"chatbots_total"`
	ChatbotsFailing  int                `json:"chatbots_failing"`
	PausedForwarders []PausedForwarder  `json:"paused_forwarders"`
	Stranded         []Stranded         `json:"stranded"`          // deliveries owed to forwarders not in the config
	Reasons          []string           `json:"reasons,omitempty"` // why it is not ready, one line each

	// Components are in-process parts, such as the embedded NATS server.
	Components []ComponentReadiness `json:"components,omitempty"`
}

// ChatbotReadiness is one chatbot's part in readiness.
type ChatbotReadiness struct {
	Serial      string    `json:"serial"`
	Name        string    `json:"name"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	LastError   string    `json:"last_error,omitempty"` // of the last poll, if it failed
	OK          bool      `json:"ok"`
	Reason      string    `json:"reason,omitempty"`
}

// PausedForwarder is a forwarder paused because its target said it is gone.
type PausedForwarder struct {
	Name   string    `json:"name"`
	Since  time.Time `json:"since"`
	Reason string    `json:"reason"`
}

// Stranded counts the outbox entries owed to a forwarder that is not in the config: no
// lane delivers them until the forwarder comes back or an operator moves or drops them.
type Stranded struct {
	Forwarder string `json:"forwarder"`
	Pending   int    `json:"pending"`
}

// Check computes readiness now. Stranded deliveries make it not ready, like a paused
// forwarder: leads are waiting that will never go out by themselves, and only an operator
// can fix it (`leadbridge outbox move` or `outbox drop`), which is what readiness alerts
// are watched for. Restarting does not help, so /healthz (liveness) stays ok.
func (h *Health) Check(ctx context.Context) Readiness {
	now := h.now()
	h.mu.Lock()
	chatbots, known, interval, added := h.chatbots, h.known, h.interval, h.added
	h.mu.Unlock()
	r := Readiness{Ready: true, Store: "open", PausedForwarders: []PausedForwarder{}, Stranded: []Stranded{}}

	paused, err := h.store.Paused(ctx)
	r.storeFailed(err)
	for _, name := range sortedKeys(paused) {
		p := paused[name]
		r.Ready = false
		r.PausedForwarders = append(r.PausedForwarders, PausedForwarder{Name: name, Since: p.Since, Reason: p.Reason})
		r.Reasons = append(r.Reasons, fmt.Sprintf(
			"forwarder %s is paused since %s because its target is gone (%s); its deliveries wait in the outbox: fix the target, then run `leadbridge forwarder resume %s`",
			name, p.Since.UTC().Format(time.RFC3339), cut(p.Reason, maxReasonError), name))
	}

	depth, err := h.store.Depth(ctx)
	r.storeFailed(err)
	for _, name := range sortedKeys(depth) {
		if n := depth[name]; n > 0 && !known[name] {
			r.Ready = false
			r.Stranded = append(r.Stranded, Stranded{Forwarder: name, Pending: n})
			r.Reasons = append(r.Reasons, strandedReason(name, n))
		}
	}

	h.checkComponents(&r)

	states, err := h.store.PollStates(ctx)
	r.storeFailed(err)
	var ok []ChatbotReadiness
	r.Chatbots = []ChatbotReadiness{}
	r.ChatbotsTotal = len(chatbots)
	for _, bot := range chatbots {
		lastOK, err := h.store.LastOK(ctx, bot.Serial)
		r.storeFailed(err)
		lastOK, lastError := h.sinceStart(lastOK, states[bot.Serial])
		c := ChatbotReadiness{Serial: bot.Serial, Name: bot.Name, LastSuccess: lastOK,
			LastError: cut(lastError, maxReasonError), OK: true}
		since, from := lastOK, ""
		if at, ok := added[bot.Serial]; ok && since.IsZero() {
			since, from = at, " since it was added"
		} else if since.IsZero() {
			since, from = h.start, " since start"
		}
		limit := staleIntervals * intervalOf(bot, interval)
		if age := now.Sub(since); age > limit {
			c.OK = false
			c.Reason = fmt.Sprintf("no successful poll%s for %s (%d intervals = %s)",
				from, age.Round(time.Second), staleIntervals, limit)
			if c.LastError != "" {
				c.Reason += "; last error: " + c.LastError
			}
			r.Ready = false
			r.ChatbotsFailing++
			if r.ChatbotsFailing <= maxReadyChatbots {
				r.Chatbots = append(r.Chatbots, c)
				r.Reasons = append(r.Reasons, fmt.Sprintf("chatbot %s (%s): %s", bot.Name, bot.Serial, c.Reason))
			}
			continue
		}
		if len(ok) < maxReadyChatbots {
			ok = append(ok, c)
		}
	}
	if more := r.ChatbotsFailing - maxReadyChatbots; more > 0 {
		r.Reasons = append(r.Reasons, fmt.Sprintf("and %d more chatbots with no recent successful poll (of %d): `leadbridge status --failing` lists them",
			more, r.ChatbotsTotal))
	}
	r.Chatbots = append(r.Chatbots, ok[:min(len(ok), maxReadyChatbots-len(r.Chatbots))]...)
	return r
}

// intervalOf is how often bot is polled: its own interval, else the configured one.
func intervalOf(bot event.Chatbot, interval time.Duration) time.Duration {
	if bot.Interval > 0 {
		return bot.Interval
	}
	return interval
}

// sinceStart is a chatbot's last success (as the store's LastOK answers it: this
// process's carries its monotonic clock reading, so that a step of the wall clock does
// not age it) and its last poll's error (of its state st), counting only the polls since
// h's start: an earlier one is a previous process's, and readiness speaks of this one.
func (h *Health) sinceStart(lastOK time.Time, st event.ChatbotState) (time.Time, string) {
	lastError := st.LastError
	if st.LastPoll.Before(h.start) {
		lastError = ""
	}
	if lastOK.Before(h.start) {
		lastOK = time.Time{}
	}
	return lastOK, lastError
}

// storeFailed makes r not ready because the store failed with err, if err is not nil;
// the first failure is the one shown.
func (r *Readiness) storeFailed(err error) {
	if err == nil || r.Store != "open" {
		return
	}
	r.Ready = false
	r.Store = "error: " + err.Error()
	r.Reasons = append(r.Reasons, "the store does not answer: "+err.Error())
}

// cut shortens s to at most n runes, marking the cut with "…", and puts it on one line.
func cut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// strandedReason says that n deliveries of forwarder name are stranded and how to fix it.
func strandedReason(name string, n int) string {
	return fmt.Sprintf("%s stranded: forwarder %s is not in the config, so nothing delivers them; "+
		"run `leadbridge outbox move --from %s --to NEW` (renamed) or `leadbridge outbox drop --forwarder %s` (removed)",
		deliveries(n), name, name, name)
}

// deliveries is "1 delivery" or "N deliveries".
func deliveries(n int) string {
	if n == 1 {
		return "1 delivery"
	}
	return fmt.Sprintf("%d deliveries", n)
}

// sortedKeys returns m's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
