package ops

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// ReloadReport is what a config reload changed, as `leadbridge reload` prints it:
// chatbot serials and forwarder names, never a value.
type ReloadReport struct {
	ChatbotsAdded   []string `json:"chatbots_added,omitempty"`
	ChatbotsRemoved []string `json:"chatbots_removed,omitempty"`
	ChatbotsChanged []string `json:"chatbots_changed,omitempty"`
	AccountsAdded   []string `json:"accounts_added,omitempty"`
	AccountsRemoved []string `json:"accounts_removed,omitempty"`
	// AccountsChanged are the accounts whose LeadList connection (base_url, api_key,
	// timeout, max_rps or neoagent.max_body_bytes) changed: they got a new client and
	// request budget.
	AccountsChanged   []string `json:"accounts_changed,omitempty"`
	ForwardersAdded   []string `json:"forwarders_added,omitempty"`
	ForwardersRemoved []string `json:"forwarders_removed,omitempty"`
	ForwardersChanged []string `json:"forwarders_changed,omitempty"`
	// PollPace says that poll.interval or poll.lookback changed.
	PollPace bool `json:"poll_pace,omitempty"`
	// Kept are the keys that need a restart: their new value was ignored.
	Kept []string `json:"kept,omitempty"`
	// Stranded counts the pending deliveries of each removed forwarder, kept in the outbox.
	Stranded map[string]int `json:"stranded,omitempty"`
}

// ConfigRejectedError is a reload refused whole because the config file has problems
// (HTTP 422 through the admin API): the running config stays.
type ConfigRejectedError struct {
	// Problems says what is wrong, one line each, naming the key path.
	Problems []string
}

func (e *ConfigRejectedError) Error() string {
	return fmt.Sprintf("config rejected, the running config stays: %d problem(s):\n  %s",
		len(e.Problems), strings.Join(e.Problems, "\n  "))
}

// rejectedBody is the JSON of a 422 answer to POST /admin/reload.
type rejectedBody struct {
	Error    string   `json:"error"`
	Problems []string `json:"problems"`
}

// Reload has the daemon read its config file again (Local.Reloader); without a daemon
// there is nothing to reload.
func (l *Local) Reload(ctx context.Context) (ReloadReport, error) {
	if l.Reloader == nil {
		return ReloadReport{}, &RefusedError{"no daemon runs: there is no running config to reload"}
	}
	return l.Reloader(ctx)
}

func (a *admin) reload(w http.ResponseWriter, r *http.Request) {
	rep, err := a.b.Reload(r.Context())
	if rejected, ok := err.(*ConfigRejectedError); ok {
		writeJSON(w, http.StatusUnprocessableEntity, rejectedBody{Error: "config rejected", Problems: rejected.Problems})
		return
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rep)
}

// Reload has the daemon read its config file again and apply it (POST /admin/reload).
// A config with problems returns a *ConfigRejectedError listing them.
func (c *Client) Reload(ctx context.Context) (ReloadReport, error) {
	var rep ReloadReport
	err := c.do(ctx, http.MethodPost, "/admin/reload", nil, &rep)
	return rep, err
}
