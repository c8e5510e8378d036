package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/storecopy"
)

// storeCmd copies a bbolt store into the JetStream store the config names, so that an
// operator moving to several replicas keeps the history and sends nothing twice.
func storeCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: leadbridge store copy --from PATH --config FILE  (the config's store.backend is nats)"
	if len(args) == 0 || args[0] != "copy" {
		if len(args) == 1 && isHelp(args[0]) {
			fmt.Fprintln(stderr, usage)
			return nil
		}
		return usageErrorf("%s", usage)
	}
	fs := newFlags("store copy", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file (store.backend: nats: the destination)")
	from := fs.String("from", "", "the bbolt store file to copy (required; stop the daemon that uses it first)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *from == "" {
		return usageErrorf("store copy: --from is required\n%s", usage)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if cfg.Store.Backend != config.BackendNATS {
		return usageErrorf("store copy: the config's store.backend is %s; the destination must be nats", cfg.Store.Backend)
	}
	src, err := dedupe.Open(dedupe.Options{Path: *from, ReadOnly: true})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return fmt.Errorf("%w\nstop the daemon that uses %s first (a copy must see a store nobody changes)", err, *from)
	}
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := openStore(ctx, cfg, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	defer dst.Close()
	t, err := storecopy.Copy(ctx, src, dst.nats, filepath.Base(*from))
	fmt.Fprintf(stdout, "store copy: %d seen keys (%d already there), %d chatbots, %d pending deliveries, %d dead letters, %d pauses\n",
		t.Seen+t.Already, t.Already, t.Chatbots, t.Pending, t.Dead, t.Pauses)
	return err
}
