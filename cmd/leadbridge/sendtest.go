package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

func sendTestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("send-test", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	kind := fs.String("kind", "appointment", "kind of sample record: lead or appointment")
	timeout := fs.Duration("timeout", 30*time.Second, "how long to wait for the target")
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprintln(stderr, "usage: leadbridge send-test FORWARDER --config FILE [--kind lead|appointment] [--timeout 30s]")
		fs.PrintDefaults()
		return nil
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return usageErrorf("usage: leadbridge send-test FORWARDER --config FILE [--kind lead|appointment]")
	}
	name := args[0]
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	k, err := event.ParseKind(*kind)
	if err != nil {
		return usageErrorf("--kind: %v", err)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	fc, ok := cfg.Forwarder(name)
	if !ok {
		return usageErrorf("forwarder %q is not in %s", name, *cfgPath)
	}
	logger := newLogger(cfg.Log, stderr)
	f, err := buildForwarder(fc, logger)
	if err != nil {
		return usageError{err}
	}
	if c, ok := f.(forwarders.Closer); ok {
		defer c.Close()
	}

	bot := event.Chatbot{Serial: "leadbridge-send-test", Name: "leadbridge send-test", Account: event.DefaultAccount}
	if bots := cfg.Chatbots(); len(bots) > 0 {
		bot = bots[0]
	}
	ev := event.NewCreated(event.Lead{
		Chatbot: bot.Serial, ChatbotName: bot.Name, Account: bot.Account, Kind: k,
		Name: "Test Person (leadbridge send-test)", Email: "test@example.com", Phone: "+1 555 0100",
		Content: "This is a test event sent by `leadbridge send-test`. No one booked anything.",
		// A fresh time gives a fresh event id, so JetStream does not drop a second test.
		SessionID: 0, URI: "https://example.com/leadbridge-test", Count: 1, CreatedAt: time.Now().UTC(),
	})
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	start := time.Now()
	err = f.Deliver(ctx, ev)
	took := time.Since(start).Round(time.Millisecond)
	if err == nil {
		fmt.Fprintf(stdout, "ok: forwarder %q (%s) took the test %s event %s in %s\n", name, fc.Type, k, ev.ID, took)
		return nil
	}
	verdict := "retryable: the dispatcher would retry this"
	switch {
	case forwarders.IsGone(err):
		verdict = "gone: the dispatcher would pause this forwarder"
	case forwarders.IsPermanent(err):
		verdict = "permanent: the dispatcher would dead-letter this"
	}
	return fmt.Errorf("send-test failed after %s (%s): %w", took, verdict, err)
}
