package main

import (
	"context"
	"io"

	"github.com/leadbridge/leadbridge/ops"
)

// statusCmd prints the accounts, chatbots, outbox depth, dead letters and pauses, for
// people or as JSON; --account, --failing and --all pick the chatbots shown.
func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	var view ops.StatusView
	fs.StringVar(&view.Account, "account", "", "show only this account's chatbots")
	fs.BoolVar(&view.Failing, "failing", false, "show only the failing chatbots")
	fs.BoolVar(&view.All, "all", false, "list every chatbot, not only the failing ones, however many there are")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	b, release, err := backend(ctx, cfg, true)
	if err != nil {
		return err
	}
	defer release()
	s, err := b.Status(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		filtered, err := view.Filter(s)
		if err != nil {
			return usageError{err}
		}
		return writeJSON(stdout, filtered)
	}
	if _, err := view.Filter(s); err != nil {
		return usageError{err}
	}
	return ops.WriteStatus(stdout, s, view)
}
