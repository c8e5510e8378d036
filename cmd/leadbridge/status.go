package main

import (
	"context"
	"io"

	"github.com/leadbridge/leadbridge/ops"
)

// statusCmd prints the chatbots, outbox depth, dead letters and pauses, for people or as JSON.
func statusCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("status", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	asJSON := fs.Bool("json", false, "print JSON for scripts")
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
		return writeJSON(stdout, s)
	}
	return ops.WriteStatus(stdout, s)
}
