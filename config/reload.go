package config

import (
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"

	"github.com/leadbridge/leadbridge/event"
)

// Diff is what a reload changes between a running config and a new one: chatbots by
// serial (of every account), accounts and forwarders by name, in the new config's order
// (removed ones in the old one's). Kept lists the keys that cannot change without a
// restart, whose new value differs and is ignored. It holds names and key paths only,
// never a value.
type Diff struct {
	ChatbotsAdded, ChatbotsRemoved, ChatbotsChanged []string
	// AccountsChanged are the accounts whose LeadList connection (base_url, api_key,
	// timeout, max_rps, or neoagent.max_body_bytes) changed: they need a new Client and
	// request budget.
	AccountsAdded, AccountsRemoved, AccountsChanged       []string
	ForwardersAdded, ForwardersRemoved, ForwardersChanged []string
	// Pace is true when poll.interval or poll.lookback changed.
	Pace bool
	// Kept are the restart-only keys whose new value was ignored (see Reloadable).
	Kept []string
}

// restartOnly are the keys a running leadbridge cannot take without a restart: the
// listener and its token, the store and what the store was opened with, the logger,
// the shutdown grace the dispatcher runs with, the poll loop's jitter and backoff, and
// the embedded NATS server.
var restartOnly = []struct {
	path  string
	field func(*Config) any
}{
	{"http.listen", func(c *Config) any { return &c.HTTP.Listen }},
	{"http.admin_token", func(c *Config) any { return &c.HTTP.AdminToken }},
	{"store.path", func(c *Config) any { return &c.Store.Path }},
	{"store.retention", func(c *Config) any { return &c.Store.Retention }},
	{"poll.initial", func(c *Config) any { return &c.Poll.Initial }},
	{"poll.jitter", func(c *Config) any { return &c.Poll.Jitter }},
	{"poll.max_backoff", func(c *Config) any { return &c.Poll.MaxBackoff }},
	{"dedupe.emit_updates", func(c *Config) any { return &c.Dedupe.EmitUpdates }},
	{"shutdown.grace", func(c *Config) any { return &c.Shutdown.Grace }},
	{"log.level", func(c *Config) any { return &c.Log.Level }},
	{"log.format", func(c *Config) any { return &c.Log.Format }},
	{"nats_server", func(c *Config) any { return &c.NATSServer }},
}

// Reloadable is next with every restart-only key set back to its value in running, and
// the paths of the keys that were, so that a reload keeps them and says so. running and
// next are not changed.
func Reloadable(running, next *Config) (*Config, []string) {
	out := *next
	out.Forwarders = slices.Clone(next.Forwarders)
	var kept []string
	for _, k := range restartOnly {
		was, now := reflect.ValueOf(k.field(running)).Elem(), reflect.ValueOf(k.field(&out)).Elem()
		if !reflect.DeepEqual(was.Interface(), now.Interface()) {
			now.Set(was)
			kept = append(kept, k.path)
		}
	}
	return &out, kept
}

// Compare is the Diff from running to next, which should come from Reloadable.
func Compare(running, next *Config, kept []string) Diff {
	d := Diff{Kept: kept}
	d.ChatbotsAdded, d.ChatbotsRemoved, d.ChatbotsChanged = compareBy(running.Chatbots(), next.Chatbots(),
		func(cb event.Chatbot) string { return cb.Serial }, func(a, b event.Chatbot) bool { return a == b })
	d.AccountsAdded, d.AccountsRemoved, d.AccountsChanged = compareBy(running.AllAccounts(), next.AllAccounts(),
		func(a Account) string { return a.Name }, func(a, b Account) bool {
			return a.BaseURL == b.BaseURL && a.APIKey == b.APIKey && a.Timeout == b.Timeout && a.MaxRPS == b.MaxRPS &&
				running.NeoAgent.MaxBodyBytes == next.NeoAgent.MaxBodyBytes
		})
	d.ForwardersAdded, d.ForwardersRemoved, d.ForwardersChanged = compareBy(running.Forwarders, next.Forwarders,
		func(f ForwarderConfig) string { return f.Name }, func(a, b ForwarderConfig) bool { return a.Fingerprint() == b.Fingerprint() })
	d.Pace = running.Poll.Interval != next.Poll.Interval || running.Poll.Lookback != next.Poll.Lookback
	return d
}

// compareBy names, by key, the items of next not in old (added), of old not in next
// (removed), and in both but not same (changed).
func compareBy[T any](old, next []T, key func(T) string, same func(a, b T) bool) (added, removed, changed []string) {
	was := make(map[string]T, len(old))
	for _, x := range old {
		was[key(x)] = x
	}
	now := make(map[string]bool, len(next))
	for _, x := range next {
		k := key(x)
		now[k] = true
		switch w, ok := was[k]; {
		case !ok:
			added = append(added, k)
		case !same(w, x):
			changed = append(changed, k)
		}
	}
	for _, x := range old {
		if !now[key(x)] {
			removed = append(removed, key(x))
		}
	}
	return added, removed, changed
}

// LogAttrs are slog attributes summing up d: the names and serials that changed and how
// many, never a value.
func (d Diff) LogAttrs() []any {
	var attrs []any
	list := func(key string, names []string) {
		if len(names) > 0 {
			attrs = append(attrs, key, strings.Join(names, ","))
		}
	}
	attrs = append(attrs, "chatbots_added", len(d.ChatbotsAdded), "chatbots_removed", len(d.ChatbotsRemoved),
		"chatbots_changed", len(d.ChatbotsChanged), "accounts_added", len(d.AccountsAdded),
		"accounts_removed", len(d.AccountsRemoved), "accounts_changed", len(d.AccountsChanged),
		"forwarders_added", len(d.ForwardersAdded),
		"forwarders_removed", len(d.ForwardersRemoved), "forwarders_changed", len(d.ForwardersChanged))
	list("added_chatbots", d.ChatbotsAdded)
	list("removed_chatbots", d.ChatbotsRemoved)
	list("changed_chatbots", d.ChatbotsChanged)
	list("added_accounts", d.AccountsAdded)
	list("removed_accounts", d.AccountsRemoved)
	list("changed_accounts", d.AccountsChanged)
	list("added_forwarders", d.ForwardersAdded)
	list("removed_forwarders", d.ForwardersRemoved)
	list("changed_forwarders", d.ForwardersChanged)
	if d.Pace {
		attrs = append(attrs, "poll_pace_changed", true)
	}
	return attrs
}

// AdminAddress reads only the http section of the config file at path: the address and
// admin token of the daemon that runs it, for `leadbridge reload`, which must reach the
// daemon even when the rest of the file is wrong (the daemon then names the problems).
// Environment variables are expanded as Load does; the rest of the file is not checked.
func AdminAddress(path string) (HTTP, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return HTTP{}, fmt.Errorf("config: %w", err)
	}
	expanded, envValues, probs := expandEnv(data, os.Getenv)
	if len(probs) > 0 {
		return HTTP{}, &ValidationError{Source: path, Problems: probs}
	}
	c := DefaultConfig()
	if msg := decodeYAML(expanded, envValues, c); msg != "" {
		return HTTP{}, &ValidationError{Source: path, Problems: []Problem{{Msg: msg}}}
	}
	for _, p := range c.doc.problems {
		if p.Path == "http" || strings.HasPrefix(p.Path, "http.") {
			return HTTP{}, &ValidationError{Source: path, Problems: []Problem{p}}
		}
	}
	return c.HTTP, nil
}
