package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/procs"
	"github.com/leadbridge/leadbridge/ops"
)

// pruneInterval is how often the daemon removes seen keys past store.retention.
const pruneInterval = time.Hour

// idleQuiet is how long the daemon goes without work before it runs on one processor
// (a variable for the tests).
var idleQuiet = procs.DefaultQuiet

func runCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, a, err := openAppFile(ctx, *cfgPath, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	logger := a.logger
	// With backend nats, each chatbot is polled by one replica at a time.
	leaser, replica, err := a.store.leaser(ctx, cfg.Store.NATS.Replicas)
	if err != nil {
		return err
	}
	a.loop.Leaser = leaser
	if err := a.store.attach(ctx, cfg); err != nil {
		return err
	}
	if replica != "" {
		logger = logger.With("replica", replica)
	}

	// Metrics, health and the admin API, wired to the poller and the dispatcher.
	m := ops.NewMetrics(Version, a.store)
	if replica != "" {
		m.ObserveReplica(replica, a.loop.Leases)
	}
	h := ops.NewHealth(a.store, paced(cfg), a.forwarderInfo(), cfg.Poll.Interval, nil)
	if a.nats != nil {
		h.AddComponent("nats_server", a.nats.Ready)
	}
	// An idle daemon runs on one processor; records taken and deliveries are work (see
	// package procs).
	scaler := procs.New(idleQuiet, logger.With("component", "procs"))
	a.loop.OnPoll = func(bot event.Chatbot, took time.Duration, res event.Ingested, err error) {
		if res.New+res.Updated+res.Baseline > 0 {
			scaler.Work()
		}
		m.ObservePoll(bot, took, res, err)
	}
	a.loop.OnSkip = m.ObserveSkip
	a.onFiltered = m.ObserveFiltered
	a.dispatcher.OnResult = func(d event.Delivery, res forwarders.Result, took time.Duration, err error) {
		scaler.Work()
		m.ObserveDelivery(d, res, took, err)
	}
	backend := &ops.Local{Store: a.store, Resumer: a.dispatcher.Resume, Chatbots: a.loop.Chatbots,
		Forwarders: a.forwarderInfo(), Version: Version, Reloader: a.reload}
	m.SetChatbots(serials(cfg))
	a.reloaded = func(c *config.Config, applied bool) {
		m.ObserveReload(applied)
		if applied {
			m.SetChatbots(serials(c))
			backend.SetConfigured(c.Chatbots(), forwarderInfo(c))
			h.SetConfigured(paced(c), forwarderInfo(c), c.Poll.Interval)
		}
	}
	// SIGHUP reloads the config file, like `leadbridge reload`; registered before the
	// admin API answers, so that a reload signal never finds the default action (exit).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var srv *http.Server
	if cfg.HTTP.Listen != "" {
		handler := ops.NewServer(m, h, backend, cfg.HTTP.AdminToken, logger.With("component", "http"))
		handler = ops.WithConsole(handler, console.New(console.Options{Operator: backend, Activity: a.store,
			Token: cfg.HTTP.AdminToken, PollInterval: cfg.Poll.Interval, Logger: logger}))
		if srv, err = serveHTTP(cfg.HTTP.Listen, handler, logger); err != nil {
			return err
		}
	}

	logger.Info("leadbridge started", "version", Version, "accounts", len(cfg.AllAccounts()), "chatbots", len(a.loop.Chatbots),
		"forwarders", len(cfg.Forwarders), "store", storeLabel(cfg), "interval", cfg.Poll.Interval)
	// With backend nats the replicas share the outbox through durable consumers, and
	// a resume anywhere reaches this daemon.
	a.dispatcher.Outbox = a.store.deliveryOutbox()
	if err := a.store.watchResumes(ctx, a.dispatcher.Resume); err != nil {
		return err
	}
	var wg sync.WaitGroup
	wg.Go(func() { _ = a.loop.Run(ctx) })
	wg.Go(func() { _ = a.dispatcher.Run(ctx) })
	wg.Go(func() { a.pruneEvery(ctx, pruneInterval) })
	wg.Go(func() { a.reloadOn(ctx, hup) })
	if a.nats == nil { // with the NATS server built in, its traffic for others is work this process does not see
		wg.Go(func() { scaler.Run(ctx) })
	}
	<-ctx.Done()
	logger.Info("stopping: polling stopped, letting in-flight deliveries finish", "grace", cfg.Shutdown.Grace)
	wg.Wait()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	logger.Info("stopped; pending deliveries stay in the outbox for the next start")
	return nil
}

// serveHTTP serves handler on addr (http.listen) until the returned server is shut down.
func serveHTTP(addr string, handler http.Handler, logger *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", addr, err)
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("http server failed", "err", err)
		}
	}()
	logger.Info("serving /metrics, /healthz, /readyz, the admin API and the web console (/ui/)", "addr", ln.Addr().String())
	return srv, nil
}

// serials are the serials of cfg's chatbots, of every account.
func serials(cfg *config.Config) []string {
	bots := cfg.Chatbots()
	out := make([]string, len(bots))
	for i, b := range bots {
		out[i] = b.Serial
	}
	return out
}
