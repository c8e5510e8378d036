package main

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

func onceCmd(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := newFlags("once", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	maxWait := fs.Duration("max-wait", time.Minute, "longest time to keep retrying deliveries before leaving them for the next run")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	a, err := openApp(cfg, stderr)
	if err != nil {
		return daemonHolds(err, "once polls and delivers like the daemon; let the daemon do it, or stop it first")
	}
	defer a.Close()
	logger := a.logger

	var dead atomic.Int64
	a.dispatcher.OnResult = func(_ event.Delivery, res forwarders.Result, _ time.Duration, _ error) {
		if res == forwarders.ResultDead {
			dead.Add(1)
		}
	}
	pollErr := a.loop.PollAll(ctx)
	drainCtx, cancel := context.WithTimeout(ctx, *maxWait)
	defer cancel()
	if err := a.dispatcher.Drain(drainCtx); err != nil {
		return err
	}
	pending, err := a.pending("")
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
		problems = append(problems, fmt.Sprintf("%d deliveries still pending; they stay in the outbox for the next run", pending))
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
func (a *app) pending(only string) (int, error) {
	depth, err := a.store.Depth()
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
