package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	"github.com/leadbridge/leadbridge/natsstore"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/leadbridge/leadbridge/poller"
)

// stateStore is a store of either backend (store.backend) as the daemon and the
// commands use it: every interface the other packages define where they use the store,
// and what cmd calls itself.
type stateStore interface {
	poller.Store
	forwarders.Outbox
	ops.LocalStore
	ops.PauseStore
	console.ActivityLog
	Backfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error)
	Prune(ctx context.Context, now time.Time) (int, error)
	Close() error
}

var (
	_ stateStore        = (*dedupe.Store)(nil)
	_ stateStore        = (*natsstore.Store)(nil)
	_ forwarders.Outbox = (*natsstore.Shared)(nil)
)

// openedStore is the store cfg selects with what it holds open: for backend nats, the
// connection and the outbox shared with the other replicas through durable consumers.
type openedStore struct {
	stateStore
	conn   *natsgo.Conn      // nil for bbolt
	nats   *natsstore.Store  // nil for bbolt
	shared *natsstore.Shared // nil for bbolt
	drain  *natsstore.Shared // nil for bbolt
}

// watchResumes makes a running daemon resume a forwarder whenever its pause leaves the
// shared store (an operator command or another replica resumed it). Nothing to do with
// bbolt: the daemon serving the command is the only one.
func (o *openedStore) watchResumes(ctx context.Context, resume func(name string) bool) error {
	if o.nats == nil {
		return nil
	}
	return o.nats.WatchResumes(ctx, func(name string) { resume(name) })
}

// leaser is what shares the chatbots with the other replicas (backend nats): the store's
// lease buckets, this process named by natsstore.NewOwner, which owner returns. nil and
// "" for bbolt, whose store one process holds.
func (o *openedStore) leaser(ctx context.Context, replicas int) (leaser poller.Leaser, owner string, err error) {
	if o.nats == nil {
		return nil, "", nil
	}
	leases, err := o.nats.Leases(ctx, replicas)
	if err != nil {
		return nil, "", fmt.Errorf("store.nats: %w", err)
	}
	r := leases.Replica(natsstore.NewOwner())
	return r, r.Owner(), nil
}

// attach creates the shared durable consumer of each forwarder and attaches this
// daemon to it (backend nats; nothing for bbolt), so that a start that cannot make one
// fails at once, as one that cannot make a bucket does.
func (o *openedStore) attach(ctx context.Context, cfg *config.Config) error {
	if o.shared == nil {
		return nil
	}
	names := make([]string, len(cfg.Forwarders))
	for i, fc := range cfg.Forwarders {
		names[i] = fc.Name
	}
	if err := o.shared.Attach(ctx, names...); err != nil {
		return fmt.Errorf("store.nats: %w", err)
	}
	return nil
}

// Holders names the replica polling each chatbot, by serial, for `status`: none with
// bbolt (the one daemon polls every chatbot).
func (o *openedStore) Holders(ctx context.Context) (map[string]string, error) {
	if o.nats == nil {
		return nil, nil
	}
	return o.nats.Holders(ctx)
}

// deliveryOutbox is the outbox a running daemon's Dispatcher reads: the store itself
// for bbolt, the consumers shared with the other replicas for nats.
func (o *openedStore) deliveryOutbox() forwarders.Outbox {
	if o.shared != nil {
		return o.shared
	}
	return o.stateStore
}

// drainOutbox is the outbox Dispatcher.Drain reads (`once`, `backfill`): the store
// itself for bbolt, the shared consumers in drain mode for nats, so that a drain beside
// running replicas attempts no entry one of them holds.
func (o *openedStore) drainOutbox() forwarders.Outbox {
	if o.drain != nil {
		return o.drain
	}
	return o.stateStore
}

// Close hands back what the shared outboxes hold, then closes the store and its
// connection. Call it after the Dispatcher stopped.
func (o *openedStore) Close() error {
	var errs []error
	for _, sh := range []*natsstore.Shared{o.shared, o.drain} {
		if sh != nil {
			errs = append(errs, sh.Close())
		}
	}
	errs = append(errs, o.stateStore.Close())
	if o.conn != nil {
		o.conn.Close()
	}
	return errors.Join(errs...)
}

// router names the forwarders that want an event: a config.Router, or the config itself.
type router interface {
	Route(event.Event) []string
	HasFilters() bool
}

// openExistingStore opens the JetStream store cfg.Store names to look at it, creating
// and changing nothing on the server: an error wrapping *natsstore.MissingError when
// some of its buckets or streams do not exist (no daemon started on it yet, or a
// mistyped store.nats.prefix).
func openExistingStore(ctx context.Context, cfg *config.Config) (*openedStore, error) {
	nc, err := dialStore(ctx, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	opts := natsOptions(cfg, nc, cfg.Route)
	opts.Existing = true
	st, err := natsstore.Open(ctx, opts)
	if err != nil {
		nc.Close()
		if missing := (*natsstore.MissingError)(nil); errors.As(err, &missing) {
			return nil, fmt.Errorf("store.nats: %w; a daemon's start creates them (is store.nats.prefix %q right?)", err, cfg.Store.NATS.Prefix)
		}
		return nil, fmt.Errorf("store.nats: %w", err)
	}
	return &openedStore{stateStore: st, conn: nc, nats: st}, nil
}

// openStore opens the store cfg.Store selects, for writing; r names the forwarders that
// want an event.
func openStore(ctx context.Context, cfg *config.Config, r router, logger *slog.Logger) (*openedStore, error) {
	if cfg.Store.Backend != config.BackendNATS {
		st, err := dedupe.Open(dedupe.Options{
			Path:        cfg.Store.Path,
			Retention:   cfg.Store.Retention,
			Initial:     cfg.Poll.Initial,
			EmitUpdates: cfg.Dedupe.EmitUpdates,
			Route:       r.Route,
			CheapRoute:  func() bool { return !r.HasFilters() },
			Logger:      logger,
		})
		if err != nil {
			return nil, err
		}
		return &openedStore{stateStore: st}, nil
	}
	nc, err := dialStore(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	opts := natsOptions(cfg, nc, r.Route)
	opts.Logger = logger
	st, err := natsstore.Open(ctx, opts)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("store.nats: %w", err)
	}
	return &openedStore{stateStore: st, conn: nc, nats: st, shared: st.Shared(natsstore.SharedOptions{}),
		drain: st.Shared(natsstore.SharedOptions{Drain: true})}, nil
}

// natsOptions are the JetStream store's options cfg sets, over the connection nc, with
// route naming the forwarders that want an event.
func natsOptions(cfg *config.Config, nc *natsgo.Conn, route func(event.Event) []string) natsstore.Options {
	return natsstore.Options{
		Conn:         nc,
		Prefix:       cfg.Store.NATS.Prefix,
		Replicas:     cfg.Store.NATS.Replicas,
		Timeout:      cfg.Store.NATS.Timeout,
		PollInterval: cfg.Poll.Interval,
		Retention:    cfg.Store.Retention,
		Initial:      cfg.Poll.Initial,
		EmitUpdates:  cfg.Dedupe.EmitUpdates,
		Route:        route,
	}
}

// dialStore connects to store.nats and waits, up to its timeout, until a server answers.
func dialStore(ctx context.Context, cfg *config.Config, logger *slog.Logger) (*natsgo.Conn, error) {
	nc, err := natsfwd.Dial(cfg.Store.NATSConfig(), logger)
	if err != nil {
		return nil, fmt.Errorf("store.nats: %w", err)
	}
	wait, cancel := context.WithTimeout(ctx, cfg.Store.NATS.Timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !nc.IsConnected() {
		select {
		case <-wait.Done():
			nc.Close()
			return nil, fmt.Errorf("store.nats.url: no NATS server answered within %s (store.nats.timeout)", cfg.Store.NATS.Timeout)
		case <-tick.C:
		}
	}
	return nc, nil
}

// storeLabel names the store for a log line: the bbolt file, or the JetStream prefix.
func storeLabel(cfg *config.Config) string {
	if cfg.Store.Backend == config.BackendNATS {
		return "nats:" + cfg.Store.NATS.Prefix
	}
	return cfg.Store.Path
}

// settle waits, with backend nats, until the configured forwarders' entries (or only's)
// left after a drain are delivered by the running replicas that hold them, or ctx is
// done: what a drain did not take, another replica may be delivering. With bbolt it
// returns at once (the drain saw the whole outbox).
func (a *app) settle(ctx context.Context, only string) {
	if a.store.shared == nil {
		return
	}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if n, err := a.pending(ctx, only); err != nil || n == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
