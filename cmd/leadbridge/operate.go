package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/ops"
)

func (a *app) chatbotInfo() []ops.ChatbotInfo { return chatbotInfo(a.cfg) }

func (a *app) forwarderInfo() []ops.ForwarderInfo { return forwarderInfo(a.cfg) }

func chatbotInfo(cfg *config.Config) []ops.ChatbotInfo {
	out := make([]ops.ChatbotInfo, 0, len(cfg.NeoAgent.Chatbots))
	for _, cb := range cfg.NeoAgent.Chatbots {
		out = append(out, ops.ChatbotInfo{Serial: cb.Serial, Name: cb.Name})
	}
	return out
}

func forwarderInfo(cfg *config.Config) []ops.ForwarderInfo {
	out := make([]ops.ForwarderInfo, 0, len(cfg.Forwarders))
	for _, fc := range cfg.Forwarders {
		out = append(out, ops.ForwarderInfo{Name: fc.Name, Type: fc.Type})
	}
	return out
}

// backend reaches the store for operator commands: through the running daemon's admin
// API when one answers on http.listen (bbolt lets one process hold the file), or by
// opening the store file directly when no daemon runs (read-only for commands that only
// look, so a wrong store.path never creates a file). The returned func releases it.
func backend(ctx context.Context, cfg *config.Config, readOnly bool) (ops.Backend, func(), error) {
	if cfg.HTTP.Listen != "" {
		c, err := ops.Dial(ctx, cfg.HTTP.Listen, cfg.HTTP.AdminToken)
		switch {
		case err == nil:
			return c, func() {}, nil
		case errors.Is(err, ops.ErrUnproven):
			// Something answers on the daemon's address but is not this config's daemon.
			// Opening the store instead would hide that: if it is our daemon with another
			// admin_token, it holds the store anyway; if it is an impostor, the operator
			// must learn that a process squats on http.listen (the daemon cannot start).
			return nil, nil, fmt.Errorf("%w\nCheck what listens on http.listen %q (e.g. `ss -ltnp`) and that the daemon "+
				"runs with this config's http.admin_token; the store was not opened", err, cfg.HTTP.Listen)
		}
	}
	if _, err := os.Stat(cfg.Store.Path); errors.Is(err, fs.ErrNotExist) {
		// Never create a store here: a mistyped store.path would look like an empty one.
		return nil, nil, fmt.Errorf("store %s does not exist (is store.path right?) and no daemon answered on http.listen %q",
			cfg.Store.Path, cfg.HTTP.Listen)
	}
	st, err := dedupe.Open(dedupe.Options{Path: cfg.Store.Path, ReadOnly: readOnly,
		Route: cfg.Route, EmitUpdates: cfg.Dedupe.EmitUpdates, Initial: cfg.Poll.Initial})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, nil, fmt.Errorf("%w\nA daemon holds the store but its admin API does not answer on http.listen %q; "+
			"enable http.listen (loopback) in the config the daemon runs with, or stop the daemon", err, cfg.HTTP.Listen)
	}
	if err != nil {
		return nil, nil, err
	}
	local := &ops.Local{Store: st, Chatbots: chatbotInfo(cfg), Forwarders: forwarderInfo(cfg), Version: Version}
	return local, func() { _ = st.Close() }, nil
}

// daemonHolds adds advice to an error that says another process holds the store.
func daemonHolds(err error, advice string) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%w\n%s", err, advice)
	}
	return err
}

func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	b, release, err := backend(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer release()
	s, err := b.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(s)
	}
	return ops.WriteStatus(stdout, s)
}

func dlqCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: leadbridge dlq list|replay|drop --config FILE [--forwarder F] [--id ID | --all] [--json]"
	if len(args) == 0 {
		return usageErrorf(usage)
	}
	sub := args[0]
	if sub != "list" && sub != "replay" && sub != "drop" {
		return usageErrorf("unknown dlq command %q\n%s", sub, usage)
	}
	fs := newFlags("dlq "+sub, stderr)
	of := struct{ cfgPath, forwarder *string }{
		fs.String("config", "config.yaml", "config file"),
		fs.String("forwarder", "", "only this forwarder (default all)"),
	}
	asJSON := fs.Bool("json", false, "(list) print JSON")
	id := fs.String("id", "", "(replay, drop) the event id of the dead letters to act on")
	all := fs.Bool("all", false, "(replay, drop) act on every dead letter (of --forwarder, if given)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch {
	case sub == "list" && (*id != "" || *all):
		return usageErrorf("dlq list takes no --id or --all; it lists every dead letter (of --forwarder, if given)")
	case sub != "list" && (*id == "") == !*all:
		return usageErrorf("dlq %s needs exactly one of --id ID or --all", sub)
	}
	cfg, err := loadConfig(*of.cfgPath)
	if err != nil {
		return err
	}
	b, release, err := backend(ctx, cfg, sub == "list")
	if err != nil {
		return err
	}
	defer release()

	switch sub {
	case "list":
		dead, err := b.DeadLetters(ctx, *of.forwarder)
		if err != nil {
			return err
		}
		if *asJSON {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(dead)
		}
		return ops.WriteDeadLetters(stdout, dead)
	case "replay":
		n, err := b.Replay(ctx, *of.forwarder, *id)
		if err != nil {
			return err
		}
		if n == 0 && *id != "" {
			return fmt.Errorf("no dead letter with event id %q%s", *id, ofForwarder(*of.forwarder))
		}
		fmt.Fprintf(stdout, "replayed %d dead letters: back in the outbox%s\n", n, pickedUp(b))
	case "drop":
		n, err := b.Drop(ctx, *of.forwarder, *id)
		if err != nil {
			return err
		}
		if n == 0 && *id != "" {
			return fmt.Errorf("no dead letter with event id %q%s", *id, ofForwarder(*of.forwarder))
		}
		fmt.Fprintf(stdout, "dropped %d dead letters\n", n)
	}
	return nil
}

func forwarderCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 2 && args[0] == "resume" && isHelp(args[1]) || len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stderr, "usage: leadbridge forwarder resume NAME --config FILE")
		return nil
	}
	if len(args) < 2 || args[0] != "resume" || strings.HasPrefix(args[1], "-") {
		return usageErrorf("usage: leadbridge forwarder resume NAME --config FILE")
	}
	name := args[1]
	fs := newFlags("forwarder resume", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	if err := parseFlags(fs, args[2:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if _, ok := cfg.Forwarder(name); !ok {
		return usageErrorf("forwarder %q is not in %s", name, *cfgPath)
	}
	b, release, err := backend(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer release()
	resumed, err := b.Resume(ctx, name)
	if err != nil {
		return err
	}
	if !resumed {
		fmt.Fprintf(stdout, "forwarder %q was not paused\n", name)
		return nil
	}
	fmt.Fprintf(stdout, "forwarder %q resumed%s\n", name, pickedUp(b))
	return nil
}

func ofForwarder(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" for forwarder %q", name)
}

// pickedUp says who delivers what an operator command put back.
func pickedUp(b ops.Backend) string {
	if _, ok := b.(*ops.Client); ok {
		return "; the running daemon delivers them now"
	}
	return "; no daemon is running: they go out on its next start (or `leadbridge once`)"
}

func healthcheckCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("healthcheck", stderr)
	addr := fs.String("addr", "127.0.0.1:9108", "the daemon's http.listen address")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+*addr+"/healthz", nil)
	if err != nil {
		return usageErrorf("--addr: %v", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("healthcheck: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthcheck: /healthz answered HTTP %d", resp.StatusCode)
	}
	fmt.Fprintln(stdout, "ok")
	return nil
}
