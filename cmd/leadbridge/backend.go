package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/ops"
)

func (a *app) forwarderInfo() []ops.ForwarderInfo { return forwarderInfo(a.cfg) }

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
// look, so a wrong store.path never creates a file, nor a wrong store.nats.prefix
// buckets). The returned func releases it.
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
	if cfg.Store.Backend == config.BackendNATS {
		// The JetStream store is shared: no daemon need stop for a command to use it. One
		// that only looks creates nothing: a mistyped prefix would look like an empty store.
		var st *openedStore
		var err error
		if readOnly {
			st, err = openExistingStore(ctx, cfg)
		} else {
			st, err = openStore(ctx, cfg, cfg, slog.New(slog.DiscardHandler))
		}
		if err != nil {
			return nil, nil, err
		}
		local := &ops.Local{Store: st, Chatbots: cfg.Chatbots(), Forwarders: forwarderInfo(cfg), Version: Version}
		return local, func() { _ = st.Close() }, nil
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
	local := &ops.Local{Store: st, Chatbots: cfg.Chatbots(), Forwarders: forwarderInfo(cfg), Version: Version}
	return local, func() { _ = st.Close() }, nil
}

// daemonHolds adds advice to an error that says another process holds the store.
func daemonHolds(err error, advice string) error {
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%w\n%s", err, advice)
	}
	return err
}

// pickedUp says who delivers what an operator command put back.
func pickedUp(b ops.Backend) string {
	if _, ok := b.(*ops.Client); ok {
		return "; the running daemon delivers them now"
	}
	return "; no daemon is running: they go out on its next start (or `leadbridge once`)"
}
