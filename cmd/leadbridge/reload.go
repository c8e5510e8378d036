package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/leadbridge/leadbridge/poller"
)

// reloadCmd has the running daemon read its config file again (POST /admin/reload).
// It reads only the http section of --config, to reach the daemon: the daemon checks
// the whole file itself, with its own environment, and names the problems.
func reloadCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("reload", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file the daemon runs with (its http.listen and admin_token are used)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	h, err := config.AdminAddress(*cfgPath)
	if err != nil {
		return usageErrorf("%v", err)
	}
	if h.Listen == "" {
		return usageErrorf("%s: http.listen is off, so the daemon has no admin API; send it SIGHUP instead (kill -HUP <pid>)", *cfgPath)
	}
	c, err := ops.Dial(ctx, h.Listen, h.AdminToken)
	if err != nil {
		return fmt.Errorf("%w\nno reload was sent; if you changed http.listen or http.admin_token, the daemon still "+
			"uses the old ones (they need a restart): send it SIGHUP instead (kill -HUP <pid>)", err)
	}
	rep, err := c.Reload(ctx)
	var rejected *ops.ConfigRejectedError
	if errors.As(err, &rejected) {
		return usageError{rejected}
	}
	if err != nil {
		return err
	}
	printReload(stdout, rep)
	return nil
}

// printReload writes what a reload changed, one line per kind of change.
func printReload(w io.Writer, r ops.ReloadReport) {
	lines := []struct {
		what  string
		names []string
	}{
		{"chatbots added", r.ChatbotsAdded}, {"chatbots removed", r.ChatbotsRemoved}, {"chatbots changed", r.ChatbotsChanged},
		{"accounts added", r.AccountsAdded}, {"accounts removed", r.AccountsRemoved},
		{"accounts changed", r.AccountsChanged},
		{"forwarders added", r.ForwardersAdded}, {"forwarders removed", r.ForwardersRemoved},
		{"forwarders changed", r.ForwardersChanged},
	}
	changed := false
	for _, l := range lines {
		if len(l.names) > 0 {
			fmt.Fprintf(w, "%s: %s\n", l.what, strings.Join(l.names, ", "))
			changed = true
		}
	}
	if r.PollPace {
		fmt.Fprintln(w, "poll interval/lookback changed: applies at each chatbot's next poll")
		changed = true
	}
	if len(r.AccountsChanged) > 0 {
		fmt.Fprintln(w, "a changed account's LeadList connection and request budget apply to its next polls")
	}
	for _, name := range slices.Sorted(maps.Keys(r.Stranded)) {
		fmt.Fprintf(w, "forwarder %s removed with %d pending deliveries: they stay in the outbox "+
			"(`leadbridge outbox move` or `outbox drop`, or add it back)\n", name, r.Stranded[name])
	}
	for _, k := range r.Kept {
		fmt.Fprintf(w, "%s needs a restart: the old value is kept\n", k)
	}
	if !changed {
		fmt.Fprintln(w, "config reloaded: nothing to change")
		return
	}
	fmt.Fprintln(w, "config reloaded")
}

// reload reads the config file again and applies it, one reload at a time, none once
// Close has begun (a *ops.RefusedError). A config with any problem (in the file, or a
// forwarder that cannot be built from it) is rejected whole with a
// *ops.ConfigRejectedError, and the running one stays. Otherwise it is
// applied without losing or repeating a delivery:
//   - added forwarders get a lane first, then new records are routed by the new config,
//     then removed forwarders' lanes stop after their attempts in flight (their pending
//     entries stay in the outbox and are reported); a changed forwarder is rebuilt and
//     takes over its lane at the next attempt, the old one closed after its attempts;
//   - the loop polls the new chatbots of every account (added ones with poll.initial's
//     rule), at the new pace, an added or changed account with a new LeadList client and
//     request budget;
//   - keys that cannot change live keep their old value and are named.
func (a *app) reload(ctx context.Context) (ops.ReloadReport, error) {
	ctx = context.WithoutCancel(ctx) // once started, a reload is applied whole, whoever asked
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	if a.closing {
		return ops.ReloadReport{}, &ops.RefusedError{Reason: "the daemon is stopping: the config was not reloaded"}
	}
	next, err := config.Load(a.cfg.Source)
	if err != nil {
		return ops.ReloadReport{}, a.rejected(problemsOf(err))
	}
	eff, kept := config.Reloadable(a.cfg, next)
	if err := eff.Validate(); err != nil {
		// The file is valid, but not with the running values of the keys that need a
		// restart (a lookback the running store.retention cannot cover, say).
		return ops.ReloadReport{}, a.rejected(append(problemsOf(err), fmt.Sprintf(
			"these problems come from keeping the running value of %s, which needs a restart: "+
				"restart to change it, or keep its running value in the file", strings.Join(kept, ", "))))
	}
	diff := config.Compare(a.cfg, eff, kept)
	routes, probs := a.buildChanged(ctx, eff, diff)
	if len(probs) > 0 {
		return ops.ReloadReport{}, a.rejected(probs)
	}

	a.swapForwarders(routes)
	a.router.Set(eff)
	stopping := a.removeForwarders(diff.ForwardersRemoved)
	a.swapPolling(eff, diff)
	a.cfg = eff
	for _, k := range kept {
		a.logger.Warn("config reload: this setting needs a restart; keeping the old value", "key", k)
	}
	rep := reportOf(diff)
	if len(diff.ForwardersRemoved) > 0 {
		// Count what stays once the attempts in flight at the removal are recorded, so
		// that a delivery they made is not reported as stranded; a target slower than
		// strandedWait leaves its attempts counted as pending.
		waitAll(stopping, strandedWait)
		rep.Stranded = a.stranded(ctx, diff.ForwardersRemoved)
	}
	a.logger.Info("config reloaded", diff.LogAttrs()...)
	a.warnOrphans(ctx)
	if a.reloaded != nil {
		a.reloaded(eff, true)
	}
	return rep, nil
}

// buildChanged builds every forwarder diff adds or changes, before anything is touched,
// and restores their pauses: a forwarder paused with these very settings stays paused;
// one whose settings changed since its pause is resumed (the change is the operator's
// fix). Any problem (a forwarder that cannot be built, a store that does not answer)
// rejects the whole config: then it closes what it built and returns the problems.
func (a *app) buildChanged(ctx context.Context, eff *config.Config, diff config.Diff) ([]forwarders.Route, []string) {
	var routes []forwarders.Route
	var probs []string
	for _, name := range slices.Concat(diff.ForwardersAdded, diff.ForwardersChanged) {
		fc, _ := eff.Forwarder(name)
		fc = resolveEmbedded(eff, fc, a.nats) // nats_server needs a restart: eff has the running one
		f, err := buildForwarder(fc, a.logger.With("component", "forwarder"))
		if err != nil {
			probs = append(probs, err.Error())
			continue
		}
		routes = append(routes, routeFor(fc, f))
	}
	if len(probs) == 0 {
		if err := ops.RestorePauses(ctx, a.store, routes, a.logger); err != nil {
			probs = append(probs, "store: "+err.Error())
		}
	}
	if len(probs) > 0 {
		for _, r := range routes {
			closeForwarder(r.Forwarder)
		}
		return nil, probs
	}
	return routes, nil
}

// swapForwarders gives each added forwarder a lane, and each changed one the lane of its
// old self, which is closed once its attempts in flight end.
func (a *app) swapForwarders(routes []forwarders.Route) {
	for _, r := range routes {
		name := r.Forwarder.Name()
		old, ok := a.forwarders[name]
		a.forwarders[name] = r.Forwarder
		if !ok {
			if err := a.dispatcher.AddRoute(r); err != nil {
				a.logger.Error("reload: adding a forwarder failed", "forwarder", name, "err", err)
			}
			continue
		}
		retired, err := a.dispatcher.ReplaceRoute(r)
		if err != nil {
			a.logger.Error("reload: replacing a forwarder failed", "forwarder", name, "err", err)
			continue
		}
		a.retire(old, retired)
	}
}

// removeForwarders stops the lanes of the named forwarders after their attempts in
// flight, closing each forwarder then; the channels close as they stop.
func (a *app) removeForwarders(names []string) []<-chan struct{} {
	var stopping []<-chan struct{}
	for _, name := range names {
		if stopped, ok := a.dispatcher.RemoveRoute(name); ok {
			a.retire(a.forwarders[name], stopped)
			stopping = append(stopping, stopped)
		}
		delete(a.forwarders, name)
	}
	return stopping
}

// swapPolling has the loop poll eff's chatbots at eff's pace. The clients of added and
// changed accounts come before the chatbots that use them; a removed account's client
// goes only once its chatbots are removed.
func (a *app) swapPolling(eff *config.Config, diff config.Diff) {
	if diff.Pace {
		a.loop.SetPace(eff.Poll.Interval, eff.Poll.Lookback)
	}
	clients := a.reloadClients(eff, diff)
	withRemoved := maps.Clone(clients)
	for name, c := range a.clients {
		if _, ok := withRemoved[name]; !ok {
			withRemoved[name] = c
		}
	}
	a.loop.SetClients(withRemoved)
	if err := a.loop.SetChatbots(eff.Chatbots()); err != nil {
		a.logger.Error("reload: changing the chatbots failed", "err", err)
	}
	a.loop.SetClients(clients)
	a.clients = clients
}

// rejected logs a rejected reload's problems and returns them as the error to answer.
func (a *app) rejected(probs []string) error {
	a.logger.Error("config reload rejected: the running config stays", "file", a.cfg.Source, "problems", len(probs))
	for _, p := range probs {
		a.logger.Error("config reload problem", "problem", p)
	}
	if a.reloaded != nil {
		a.reloaded(a.cfg, false)
	}
	return &ops.ConfigRejectedError{Problems: probs}
}

// problemsOf lists a config load error's problems, one line each.
func problemsOf(err error) []string {
	var verr *config.ValidationError
	if !errors.As(err, &verr) {
		return []string{err.Error()}
	}
	out := make([]string, len(verr.Problems))
	for i, p := range verr.Problems {
		out[i] = p.String()
	}
	return out
}

// reloadClients are the LeadList clients of eff's accounts: an unchanged account keeps
// its own; a changed one gets a new one that keeps its request budget (at the new
// max_rps), so that the polls queued in it before the reload and those after share one
// rate, and a 429's hold on it carries on; an added one gets a new one with a budget of
// its own.
func (a *app) reloadClients(eff *config.Config, d config.Diff) map[string]*poller.Client {
	clients := map[string]*poller.Client{}
	for _, acc := range eff.AllAccounts() {
		old, ok := a.clients[acc.Name]
		switch {
		case ok && !slices.Contains(d.AccountsChanged, acc.Name):
			clients[acc.Name] = old
		case ok && old.Budget != nil:
			c := newClient(eff, acc)
			c.Budget = old.Budget
			c.Budget.SetRate(acc.MaxRPS)
			clients[acc.Name] = c
		default:
			clients[acc.Name] = newClient(eff, acc)
		}
	}
	return clients
}

// retire closes f once done is closed (its last attempts are over); Close waits for it.
func (a *app) retire(f forwarders.Forwarder, done <-chan struct{}) {
	if f == nil {
		return
	}
	a.retiring.Go(func() {
		<-done
		closeForwarder(f)
	})
}

// closeForwarder closes f if it holds connections.
func closeForwarder(f forwarders.Forwarder) {
	if c, ok := f.(forwarders.Closer); ok {
		_ = c.Close()
	}
}

// strandedWait bounds how long a reload's answer waits for removed forwarders' attempts
// in flight before it counts their pending deliveries.
const strandedWait = 5 * time.Second

// waitAll waits until every channel of chans is closed, or at most d.
func waitAll(chans []<-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for _, c := range chans {
		select {
		case <-c:
		case <-t.C:
			return
		}
	}
}

// stranded counts the pending deliveries of the named forwarders that have any.
func (a *app) stranded(ctx context.Context, names []string) map[string]int {
	depth, err := a.store.Depth(ctx)
	if err != nil {
		return nil
	}
	out := map[string]int{}
	for _, name := range names {
		if depth[name] > 0 {
			out[name] = depth[name]
		}
	}
	return out
}

// reportOf is the report of diff.
func reportOf(d config.Diff) ops.ReloadReport {
	return ops.ReloadReport{
		ChatbotsAdded: d.ChatbotsAdded, ChatbotsRemoved: d.ChatbotsRemoved, ChatbotsChanged: d.ChatbotsChanged,
		ForwardersAdded: d.ForwardersAdded, ForwardersRemoved: d.ForwardersRemoved, ForwardersChanged: d.ForwardersChanged,
		AccountsAdded: d.AccountsAdded, AccountsRemoved: d.AccountsRemoved, AccountsChanged: d.AccountsChanged,
		PollPace: d.Pace, Kept: d.Kept,
	}
}

// reloadOn reloads the config on every signal from sig until ctx is done. Its outcome is
// logged by reload.
func (a *app) reloadOn(ctx context.Context, sig <-chan os.Signal) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sig:
			a.logger.Info("SIGHUP: reloading the config")
			_, _ = a.reload(ctx)
		}
	}
}
