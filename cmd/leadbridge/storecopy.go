package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"

	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/dedupe"
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
	t, err := copyStore(ctx, src, dst, filepath.Base(*from))
	fmt.Fprintf(stdout, "store copy: %d seen keys (%d already there), %d chatbots, %d pending deliveries, %d dead letters, %d pauses\n",
		t.seen+t.already, t.already, t.chatbots, t.pending, t.dead, t.pauses)
	return err
}

// copyTally is what a copy took.
type copyTally struct{ seen, already, chatbots, pending, dead, pauses int }

// copyStore copies src into dst's JetStream store: seen keys first, then chatbot state,
// pending deliveries (with their retry state), dead letters and pauses. name names the
// source in message ids, so that a copy run again soon after adds no entry twice.
func copyStore(ctx context.Context, src *dedupe.Store, dst *openedStore, name string) (copyTally, error) {
	var t copyTally
	ns := dst.nats
	err := src.EachSeen(ctx, func(k dedupe.SeenKey) error {
		added, err := ns.ImportSeen(ctx, k.Key, k.Created, k.LastSeen, k.Hash)
		if added {
			t.seen++
		} else {
			t.already++
		}
		return err
	})
	if err != nil {
		return t, err
	}
	bots, err := src.Chatbots(ctx)
	if err != nil {
		return t, err
	}
	for serial, st := range bots {
		if err := ns.ImportChatbot(ctx, serial, st); err != nil {
			return t, err
		}
		t.chatbots++
	}
	depth, err := src.Depth(ctx)
	if err != nil {
		return t, err
	}
	for _, fwd := range slices.Sorted(maps.Keys(depth)) {
		ds, err := src.Pending(ctx, fwd, 0, 0)
		if err != nil {
			return t, err
		}
		for _, d := range ds {
			if err := ns.ImportDelivery(ctx, name, d); err != nil {
				return t, err
			}
			t.pending++
		}
	}
	dead, err := src.DeadLetters(ctx, "")
	if err != nil {
		return t, err
	}
	for i, dl := range dead {
		if err := ns.ImportDeadLetter(ctx, name, i, dl); err != nil {
			return t, err
		}
		t.dead++
	}
	paused, err := src.Paused(ctx)
	if err != nil {
		return t, err
	}
	for fwd, p := range paused {
		if err := ns.ImportPause(ctx, fwd, p); err != nil {
			return t, err
		}
		t.pauses++
	}
	return t, nil
}
