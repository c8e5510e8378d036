package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
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
	// url: embedded reaches the daemon's embedded server on nats_server.listen.
	f, err := buildForwarder(resolveEmbedded(cfg, fc, nil), logger)
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
	ev := event.NewTest(bot, k, time.Now())
	if fc.Filter != "" {
		fmt.Fprintf(stdout, "note: send-test ignores filters: forwarder %q's filter was not applied (%s)\n", name, filterVerdict(fc, ev))
	}
	if fc.Webhook != nil && fc.Webhook.Transform != "" {
		encoding := fc.Webhook.Encoding
		if encoding == "" {
			encoding = webhook.EncodingJSON
		}
		fmt.Fprintf(stdout, "note: the body is the output of forwarder %q's transform (encoding %s)\n", name, encoding)
	}
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

// filterVerdict says what the forwarder's filter makes of the test event.
func filterVerdict(fc config.ForwarderConfig, ev event.Event) string {
	ok, err := fc.FilterAccepts(ev)
	switch {
	case err != nil:
		return "on this test event it fails: " + err.Error()
	case ok:
		return "it would let this test event through"
	}
	return "it would keep this test event out"
}
