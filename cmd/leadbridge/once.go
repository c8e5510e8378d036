package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

func onceCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("once", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	maxWait := fs.Duration("max-wait", time.Minute, "longest time to keep retrying deliveries before leaving them for the next run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	_, a, err := openAppFile(ctx, *cfgPath, stderr)
	if err != nil {
		return daemonHolds(err, "once polls and delivers like the daemon; let the daemon do it, or stop it first")
	}
	defer a.Close()
	logger := a.logger

	delivered, dead := a.countResults()
	// Delivery starts with the first part a poll takes; --max-wait counts from the end
	// of polling, as before.
	a.loop.DropEvents = true
	drainCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	polled := make(chan struct{})
	started := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- a.dispatcher.DrainAfter(drainCtx, polled) }()
	pollErr := a.loop.PollAll(ctx)
	close(polled)
	stopAt := time.AfterFunc(*maxWait, cancel)
	defer stopAt.Stop()
	if err := <-drained; err != nil {
		return err
	}
	a.settle(drainCtx, "")
	took := time.Since(started)
	pending, err := a.pending(context.WithoutCancel(ctx), "") // counted even when interrupted
	if err != nil {
		return err
	}
	var problems []string
	if pollErr != nil {
		problems = append(problems, fmt.Sprintf("poll failed: %v", pollErr))
	}
	if n := dead.Load(); n > 0 {
		problems = append(problems, fmt.Sprintf("%d deliveries dead-lettered (see `leadbridge dlq list`)", n))
	}
	if pending > 0 {
		n := delivered.Load()
		problems = append(problems, fmt.Sprintf("%d deliveries still pending after --max-wait %s; they stay in the outbox for the next run "+
			"(%d delivered in %s, %.1f/s)", pending, *maxWait, n, took.Round(time.Millisecond), float64(n)/max(took.Seconds(), 0.001)))
	}
	if len(problems) == 0 {
		logger.Info("once: everything delivered")
		return nil
	}
	for _, p := range problems {
		logger.Error("once: " + p)
	}
	return errSilent
}

// pending counts outbox entries owed to the configured forwarders, or to only one.
func (a *app) pending(ctx context.Context, only string) (int, error) {
	depth, err := a.store.Depth(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, fc := range a.cfg.Forwarders {
		if only == "" || fc.Name == only {
			n += depth[fc.Name]
		}
	}
	return n, nil
}
