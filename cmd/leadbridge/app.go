package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	slackfwd "github.com/leadbridge/leadbridge/forwarders/slack"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/leadbridge/leadbridge/poller"
)

// app is leadbridge wired from a config: store, forwarders, dispatcher and poll loop.
type app struct {
	cfg        *config.Config
	logger     *slog.Logger
	store      *openedStore
	forwarders []forwarders.Forwarder
	dispatcher *forwarders.Dispatcher
	loop       *poller.Loop
}

// loadConfig reads and validates a config file; any problem is a usage error (exit 2).
func loadConfig(path string) (*config.Config, error) {
	if path == "" {
		return nil, usageErrorf("--config is required")
	}
	cfg, err := config.Load(path)
	var verr *config.ValidationError
	switch {
	case errors.As(err, &verr):
		lines := make([]string, len(verr.Problems))
		for i, p := range verr.Problems {
			lines[i] = "  " + p.String()
		}
		noun := "problems"
		if len(lines) == 1 {
			noun = "problem"
		}
		return nil, usageErrorf("config %s: %d %s:\n%s", path, len(lines), noun, strings.Join(lines, "\n"))
	case err != nil:
		return nil, usageError{err}
	}
	return cfg, nil
}

// newLogger builds the slog logger the config asks for, writing to w.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.SlogLevel()}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// openAppFile loads the config file at path and opens the app on it.
func openAppFile(ctx context.Context, path string, stderr io.Writer) (*config.Config, *app, error) {
	cfg, err := loadConfig(path)
	if err != nil {
		return nil, nil, err
	}
	a, err := openApp(ctx, cfg, stderr)
	return cfg, a, err
}

// openApp sets up logging to logOut, opens the store and builds every forwarder; Close
// releases them.
func openApp(ctx context.Context, cfg *config.Config, logOut io.Writer) (*app, error) {
	logger := newLogger(cfg.Log, logOut)
	a := &app{cfg: cfg, logger: logger}
	store, err := openStore(ctx, cfg, logger.With("component", "store"))
	if err != nil {
		return nil, err
	}
	a.store = store

	var routes []forwarders.Route
	for _, fc := range cfg.Forwarders {
		f, err := buildForwarder(fc, logger.With("component", "forwarder"))
		if err != nil {
			a.Close()
			return nil, usageError{err}
		}
		a.forwarders = append(a.forwarders, f)
		route := forwarders.Route{
			Forwarder:   f,
			Concurrency: fc.Concurrency,
			ConfigHash:  fc.Fingerprint(),
			Retry: forwarders.RetryPolicy{
				InitialInterval: fc.Retry.InitialInterval,
				MaxInterval:     fc.Retry.MaxInterval,
				MaxElapsed:      fc.Retry.MaxElapsed,
			},
		}
		routes = append(routes, route)
	}
	if err := ops.RestorePauses(ctx, store, routes, logger); err != nil {
		a.Close()
		return nil, err
	}
	a.warnOrphans(ctx)

	a.dispatcher = &forwarders.Dispatcher{
		Outbox: store.drainOutbox(), // run swaps in deliveryOutbox
		Routes: routes,
		Logger: logger.With("component", "dispatcher"),
		Grace:  cfg.Shutdown.Grace,
	}
	client := poller.NewClient(cfg.NeoAgent.BaseURL, cfg.NeoAgent.APIKey, cfg.NeoAgent.Timeout)
	client.MaxBodyBytes = cfg.NeoAgent.MaxBodyBytes
	a.loop = &poller.Loop{
		Client:   client,
		Store:    store,
		Chatbots: chatbots(cfg),
		Interval: cfg.Poll.Interval,
		Lookback: cfg.Poll.Lookback,
		// A catch-up window re-reads records; the store must still hold their seen keys,
		// with the margin the config keeps between lookback and retention.
		MaxLookback: cfg.Store.Retention - config.RetentionMargin,
		// The logged recovery command must be run with the daemon stopped (one process per store).
		BackfillFlags: "--config " + cfg.Source + "  # stop the daemon first",
		Jitter:        cfg.Poll.Jitter,
		MaxBackoff:    cfg.Poll.MaxBackoff,
		Logger:        logger.With("component", "poller"),
	}
	return a, nil
}

// chatbots are the configured chatbots, as the poller, status and readiness take them.
func chatbots(cfg *config.Config) []event.Chatbot {
	out := make([]event.Chatbot, 0, len(cfg.NeoAgent.Chatbots))
	for _, cb := range cfg.NeoAgent.Chatbots {
		out = append(out, event.Chatbot{Serial: cb.Serial, Name: cb.Name})
	}
	return out
}

// warnOrphans logs deliveries owed to forwarders no longer in the config: they stay in
// the store until the forwarder comes back (or `dlq`-style tools remove them).
func (a *app) warnOrphans(ctx context.Context) {
	depth, err := a.store.Depth(ctx)
	if err != nil {
		return
	}
	for name, n := range depth {
		if _, ok := a.cfg.Forwarder(name); !ok && n > 0 {
			a.logger.Warn("the outbox holds deliveries for a forwarder that is not configured; they wait until it is",
				"forwarder", name, "pending", n)
		}
	}
}

// buildForwarder makes the forwarder a config entry describes.
func buildForwarder(fc config.ForwarderConfig, logger *slog.Logger) (forwarders.Forwarder, error) {
	switch fc.Type {
	case config.TypeWebhook:
		return webhook.New(fc.WebhookConfig(), logger)
	case config.TypeNATS:
		return natsfwd.New(fc.NATSConfig(), logger)
	case config.TypeSlack:
		return slackfwd.New(fc.SlackConfig(), logger)
	}
	return nil, fmt.Errorf("forwarder %q: unknown type %q", fc.Name, fc.Type)
}

// Close closes the forwarders (NATS drains) and then the store.
func (a *app) Close() error {
	var errs []error
	for _, f := range a.forwarders {
		if c, ok := f.(forwarders.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}

// pruneEvery prunes seen keys past retention on the given period until ctx is done.
func (a *app) pruneEvery(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		n, err := a.store.Prune(ctx, time.Now())
		switch {
		case ctx.Err() != nil:
			return // shutting down: what is left is pruned after the next start
		case err != nil:
			a.logger.Error("pruning seen keys failed", "err", err)
		case n > 0:
			a.logger.Info("pruned seen keys past retention", "removed", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
