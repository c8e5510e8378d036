package main

import (
	"context"
	"fmt"
	"io"

	"github.com/leadbridge/leadbridge/config"
)

// outboxCmd moves or drops the deliveries stranded with a forwarder that was renamed or
// removed from the config, through the running daemon or on the store.
func outboxCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: leadbridge outbox move --from OLD --to NEW --config FILE\n" +
		"       leadbridge outbox drop --forwarder OLD --config FILE"
	if len(args) == 0 || (args[0] != "move" && args[0] != "drop") {
		if len(args) == 1 && isHelp(args[0]) {
			fmt.Fprintln(stderr, usage)
			return nil
		}
		return usageErrorf("%s", usage)
	}
	sub := args[0]
	fs := newFlags("outbox "+sub, stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	var from, to, forwarder *string
	if sub == "move" {
		from = fs.String("from", "", "the forwarder no longer in the config whose deliveries wait (required)")
		to = fs.String("to", "", "the configured forwarder that delivers them now (required)")
	} else {
		forwarder = fs.String("forwarder", "", "the forwarder no longer in the config whose deliveries to delete (required)")
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if sub == "move" {
		err = checkMove(cfg, *cfgPath, *from, *to)
	} else {
		err = checkStranded(cfg, *cfgPath, "drop", "forwarder", *forwarder)
	}
	if err != nil {
		return err
	}
	b, release, err := backend(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer release()
	if sub == "drop" {
		n, err := b.DropPending(ctx, *forwarder)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dropped %d pending deliveries of forwarder %q\n", n, *forwarder)
		return nil
	}
	m, err := b.MovePending(ctx, *from, *to)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "moved %d pending deliveries from %q to %q (same event ids, fresh retry budget)", m.Moved, *from, *to)
	if m.Already > 0 {
		fmt.Fprintf(stdout, "; %d more %q already owed were not copied twice", m.Already, *to)
	}
	if m.Moved > 0 {
		fmt.Fprint(stdout, pickedUp(b))
	}
	fmt.Fprintln(stdout)
	return nil
}

// checkMove makes sure outbox move takes deliveries from a forwarder not in cfg (read
// from cfgPath) to one in it, so that they are not stranded again.
func checkMove(cfg *config.Config, cfgPath, from, to string) error {
	if err := checkStranded(cfg, cfgPath, "move", "from", from); err != nil {
		return err
	}
	if to == "" {
		return usageErrorf("outbox move needs --to")
	}
	if _, ok := cfg.Forwarder(to); !ok {
		return usageErrorf("--to %q is not a forwarder in %s; moving deliveries there would strand them again", to, cfgPath)
	}
	return nil
}

// checkStranded makes sure the forwarder name, given to outbox sub as --flag, is set and
// not in cfg (read from cfgPath): only the deliveries of a forwarder the config lost are
// stranded. The config the command reads decides; the daemon checks against its own as
// well.
func checkStranded(cfg *config.Config, cfgPath, sub, flag, name string) error {
	switch _, ok := cfg.Forwarder(name); {
	case name == "":
		return usageErrorf("outbox %s needs --%s", sub, flag)
	case ok:
		return usageErrorf("--%s %q is a forwarder in %s: its deliveries are not stranded "+
			"(remove it from the config and restart the daemon first)", flag, name, cfgPath)
	}
	return nil
}
