package main

import (
	"context"
	"io"
	"sync"
	"time"
)

// pruneInterval is how often the daemon removes seen keys past store.retention.
const pruneInterval = time.Hour

func runCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	logger := newLogger(cfg.Log, stderr)
	a, err := openApp(cfg, logger)
	if err != nil {
		return err
	}
	defer a.Close()
	logger.Info("leadbridge started", "version", Version, "chatbots", len(cfg.NeoAgent.Chatbots),
		"forwarders", len(cfg.Forwarders), "store", cfg.Store.Path, "interval", cfg.Poll.Interval)

	var wg sync.WaitGroup
	wg.Go(func() { _ = a.loop.Run(ctx) })
	wg.Go(func() { _ = a.dispatcher.Run(ctx) })
	wg.Go(func() { a.pruneEvery(ctx, pruneInterval) })
	<-ctx.Done()
	logger.Info("stopping: polling stopped, letting in-flight deliveries finish", "grace", cfg.Shutdown.Grace)
	wg.Wait()
	logger.Info("stopped; pending deliveries stay in the outbox for the next start")
	return nil
}
