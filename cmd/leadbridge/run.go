package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/ops"
)

// pruneInterval is how often the daemon removes seen keys past store.retention.
const pruneInterval = time.Hour

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

	// Metrics, health and the admin API, wired to the poller and the dispatcher.
	m := ops.NewMetrics(Version, a.store)
	h := ops.NewHealth(a.store, a.loop.Chatbots, a.forwarderInfo(), cfg.Poll.Interval, nil)
	a.loop.OnPoll = m.ObservePoll
	a.loop.OnSkip = m.ObserveSkip
	a.dispatcher.OnResult = m.ObserveDelivery
	backend := &ops.Local{Store: a.store, Resumer: a.dispatcher.Resume, Chatbots: a.loop.Chatbots,
		Forwarders: a.forwarderInfo(), Version: Version}
	var srv *http.Server
	if cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", cfg.HTTP.Listen)
		if err != nil {
			return fmt.Errorf("http.listen %s: %w", cfg.HTTP.Listen, err)
		}
		srv = &http.Server{
			Handler:           ops.NewServer(m, h, backend, cfg.HTTP.AdminToken, logger.With("component", "http")),
			ReadHeaderTimeout: 5 * time.Second,
		}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				logger.Error("http server failed", "err", err)
			}
		}()
		logger.Info("serving /metrics, /healthz, /readyz and the admin API", "addr", ln.Addr().String())
	}

	logger.Info("leadbridge started", "version", Version, "chatbots", len(cfg.NeoAgent.Chatbots),
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
