package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/natsstore"
)

func configCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" {
		return usageErrorf("usage: leadbridge config check --config FILE")
	}
	fs := newFlags("config check", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok (%d chatbots, %d forwarders)\n", *cfgPath, len(cfg.Chatbots()), len(cfg.Forwarders))
	if line := embeddedSummary(cfg); line != "" {
		fmt.Fprintln(stdout, line)
	}
	notes, warnings := strandedWarnings(ctx, cfg)
	for _, n := range notes {
		fmt.Fprintln(stdout, n)
	}
	for _, w := range warnings {
		fmt.Fprintf(stderr, "warning: %s\n", w)
	}
	return nil
}

// strandedWarnings reads the store the config names (through its daemon, or the file
// read-only, or the JetStream store without creating or changing anything; none yet is
// fine) and names each forwarder that holds deliveries or dead letters there but is not
// in this config: under this config nothing delivers them. notes say what a start will
// create.
func strandedWarnings(ctx context.Context, cfg *config.Config) (notes, out []string) {
	b, release, err := backend(ctx, cfg, true)
	if err != nil {
		if _, statErr := os.Stat(cfg.Store.Path); cfg.Store.Backend != config.BackendNATS && errors.Is(statErr, fs.ErrNotExist) {
			return nil, nil // a new install: no store, no daemon
		}
		if missing := (*natsstore.MissingError)(nil); errors.As(err, &missing) {
			return []string{fmt.Sprintf("store %s: %s do not exist yet: they will be created at start",
				storeLabel(cfg), strings.Join(missing.Names, ", "))}, nil
		}
		return nil, []string{fmt.Sprintf("could not read the store to look for stranded deliveries: %v", err)}
	}
	defer release()
	s, err := b.Status(ctx)
	if err != nil {
		return nil, []string{fmt.Sprintf("could not read the store to look for stranded deliveries: %v", err)}
	}
	for _, f := range s.Forwarders {
		if _, ok := cfg.Forwarder(f.Name); ok || f.Pending+f.Dead == 0 {
			continue
		}
		w := fmt.Sprintf("store %s: forwarder %q is not in this config but has %d pending deliveries and %d dead letters; "+
			"nothing delivers them under this config", storeLabel(cfg), f.Name, f.Pending, f.Dead)
		if f.Pending > 0 {
			w += fmt.Sprintf(". If it was renamed: `leadbridge outbox move --from %s --to NEW`; if removed: `leadbridge outbox drop --forwarder %s`", f.Name, f.Name)
		}
		if f.Dead > 0 {
			w += fmt.Sprintf(". Its dead letters: `leadbridge dlq drop --forwarder %s --all`", f.Name)
		}
		out = append(out, w)
	}
	return nil, out
}
