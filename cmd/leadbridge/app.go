package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	slackfwd "github.com/leadbridge/leadbridge/forwarders/slack"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/natsserver"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/leadbridge/leadbridge/poller"
)

// app is leadbridge wired from a config: store, forwarders, dispatcher and poll loop.
// A reload (reload.go) changes cfg, forwarders, the router and what the dispatcher and
// loop run, one reload at a time under reloadMu.
type app struct {
	cfg        *config.Config
	logger     *slog.Logger
	store      *openedStore
	forwarders map[string]forwarders.Forwarder // by name
	dispatcher *forwarders.Dispatcher
	loop       *poller.Loop
	// router routes new records by the config in force (cfg after a reload).
	router *config.Router
	// clients are the loop's LeadList clients by account, as the last reload left them.
	clients map[string]*poller.Client
	// nats is the embedded NATS server (nats_server), nil when none; it stops last.
	nats *natsserver.Server
	// onFiltered, when set before the loop runs, counts records a filter kept out.
	onFiltered config.Filtered

	reloadMu sync.Mutex
	closing  bool // Close has begun: no reload starts; reloadMu guards it
	// reloaded, when set, learns of every reload once it is applied or rejected (the
	// daemon's metrics, status and readiness).
	reloaded func(cfg *config.Config, applied bool)
	retiring sync.WaitGroup // removed or replaced forwarders closing once their attempts end
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
		lines := problemsOf(err)
		noun := "problems"
		if len(lines) == 1 {
			noun = "problem"
		}
		return nil, usageErrorf("config %s: %d %s:\n  %s", path, len(lines), noun, strings.Join(lines, "\n  "))
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
	a := &app{cfg: cfg, logger: logger, forwarders: map[string]forwarders.Forwarder{}}
	a.router = config.NewRouter(cfg, a.filtered)
	store, err := openStore(ctx, cfg, a.router, logger.With("component", "store"))
	if err != nil {
		return nil, err
	}
	a.store = store
	// The embedded NATS server takes clients before the forwarders connect.
	if a.nats, err = startEmbeddedNATS(cfg, logger); err != nil {
		a.Close()
		return nil, err
	}

	var routes []forwarders.Route
	for _, fc := range cfg.Forwarders {
		fc = resolveEmbedded(cfg, fc, a.nats)
		f, err := buildForwarder(fc, logger.With("component", "forwarder"))
		if err != nil {
			a.Close()
			return nil, usageError{err}
		}
		a.forwarders[fc.Name] = f
		routes = append(routes, routeFor(fc, f))
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
	a.clients = newClients(cfg)
	a.loop = &poller.Loop{
		Clients:  a.clients,
		Store:    store,
		Chatbots: cfg.Chatbots(),
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

// routeFor is the dispatcher's route for forwarder f built from fc.
func routeFor(fc config.ForwarderConfig, f forwarders.Forwarder) forwarders.Route {
	return forwarders.Route{
		Forwarder:   f,
		Concurrency: fc.Concurrency,
		ConfigHash:  fc.Fingerprint(),
		Retry: forwarders.RetryPolicy{
			InitialInterval: fc.Retry.InitialInterval,
			MaxInterval:     fc.Retry.MaxInterval,
			MaxElapsed:      fc.Retry.MaxElapsed,
		},
	}
}

// filtered is told of each record a forwarder's jq filter kept out of its outbox. A
// filter that failed is logged as a warning, with the record's ids and the reason but
// none of its data; onFiltered counts both kinds.
func (a *app) filtered(forwarder string, ev event.Event, err error) {
	if err != nil {
		a.logger.Warn("a forwarder's filter failed on a record; it is not queued for that forwarder",
			append(ev.LogAttrs(), "forwarder", forwarder, "reason", err.Error())...)
	} else {
		a.logger.Debug("a forwarder's filter kept a record out", append(ev.LogAttrs(), "forwarder", forwarder)...)
	}
	if a.onFiltered != nil {
		a.onFiltered(forwarder, ev, err)
	}
}

// newClients makes the LeadList client of every account, by name: its host, key and
// timeout, and a Budget of its max_rps that all of its chatbots share.
func newClients(cfg *config.Config) map[string]*poller.Client {
	clients := map[string]*poller.Client{}
	for _, acc := range cfg.AllAccounts() {
		clients[acc.Name] = newClient(cfg, acc)
	}
	return clients
}

// newClient makes account acc's LeadList client, with a Budget of its own.
func newClient(cfg *config.Config, acc config.Account) *poller.Client {
	c := poller.NewClient(acc.BaseURL, acc.APIKey, acc.Timeout)
	c.MaxBodyBytes = cfg.NeoAgent.MaxBodyBytes
	c.Budget = poller.NewBudget(acc.MaxRPS)
	return c
}

// paced are cfg's chatbots with the interval they are really polled at, for readiness
// (ops.Paced under each account's max_rps).
func paced(cfg *config.Config) []event.Chatbot {
	rates := map[string]float64{}
	for _, acc := range cfg.AllAccounts() {
		rates[acc.Name] = acc.MaxRPS
	}
	return ops.Paced(cfg.Chatbots(), cfg.Poll.Interval, rates)
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

// Close closes the forwarders (NATS drains), once a reload under way is over and those a
// reload removed or replaced have finished their attempts, then the store, and stops the embedded NATS server
// last, so that the forwarders' drains reach it.
func (a *app) Close() error {
	// A reload under way (an admin request the HTTP server let in during shutdown)
	// finishes first; none starts after.
	a.reloadMu.Lock()
	a.closing = true
	a.reloadMu.Unlock()
	a.retiring.Wait()
	var errs []error
	for _, f := range a.forwarders {
		if c, ok := f.(forwarders.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	if a.nats != nil {
		a.nats.Shutdown()
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
