package main

import (
	"context"
	"fmt"
	"io"

	"github.com/leadbridge/leadbridge/ops"
)

// dlqCmd lists, replays or drops dead letters, through the running daemon or on the store.
func dlqCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const usage = "usage: leadbridge dlq list|replay|drop --config FILE [--forwarder F] [--id ID | --all] [--json]"
	if len(args) == 0 {
		return usageErrorf(usage)
	}
	sub := args[0]
	if sub != "list" && sub != "replay" && sub != "drop" {
		return usageErrorf("unknown dlq command %q\n%s", sub, usage)
	}
	fs := newFlags("dlq "+sub, stderr)
	of := struct{ cfgPath, forwarder *string }{
		fs.String("config", "config.yaml", "config file"),
		fs.String("forwarder", "", "only this forwarder (default all)"),
	}
	asJSON := fs.Bool("json", false, "(list) print JSON")
	id := fs.String("id", "", "(replay, drop) the event id of the dead letters to act on")
	all := fs.Bool("all", false, "(replay, drop) act on every dead letter (of --forwarder, if given)")
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	switch {
	case sub == "list" && (*id != "" || *all):
		return usageErrorf("dlq list takes no --id or --all; it lists every dead letter (of --forwarder, if given)")
	case sub != "list" && (*id == "") == !*all:
		return usageErrorf("dlq %s needs exactly one of --id ID or --all", sub)
	}
	cfg, err := loadConfig(*of.cfgPath)
	if err != nil {
		return err
	}
	b, release, err := backend(ctx, cfg, sub == "list")
	if err != nil {
		return err
	}
	defer release()

	switch sub {
	case "list":
		dead, err := b.DeadLetters(ctx, *of.forwarder)
		if err != nil {
			return err
		}
		if *asJSON {
			return writeJSON(stdout, dead)
		}
		return ops.WriteDeadLetters(stdout, dead)
	case "replay":
		n, err := b.Replay(ctx, *of.forwarder, *id)
		if err := acted(n, err, *id, *of.forwarder); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "replayed %d dead letters: back in the outbox%s\n", n, pickedUp(b))
	case "drop":
		n, err := b.Drop(ctx, *of.forwarder, *id)
		if err := acted(n, err, *id, *of.forwarder); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "dropped %d dead letters\n", n)
	}
	return nil
}

// acted checks what a replay or drop of n dead letters returned: err, or an error when
// the event id it was given matched none (of forwarder, if given).
func acted(n int, err error, id, forwarder string) error {
	if err != nil {
		return err
	}
	if n == 0 && id != "" {
		return fmt.Errorf("no dead letter with event id %q%s", id, ofForwarder(forwarder))
	}
	return nil
}

// ofForwarder names the --forwarder a dlq command was limited to, for its messages.
func ofForwarder(name string) string {
	if name == "" {
		return ""
	}
	return fmt.Sprintf(" for forwarder %q", name)
}
