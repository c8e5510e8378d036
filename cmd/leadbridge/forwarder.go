package main

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// forwarderCmd resumes a forwarder paused because its target said it was gone.
func forwarderCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 2 && args[0] == "resume" && isHelp(args[1]) || len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stderr, "usage: leadbridge forwarder resume NAME --config FILE")
		return nil
	}
	if len(args) < 2 || args[0] != "resume" || strings.HasPrefix(args[1], "-") {
		return usageErrorf("usage: leadbridge forwarder resume NAME --config FILE")
	}
	name := args[1]
	fs := newFlags("forwarder resume", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	if err := parseFlags(fs, args[2:]); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if _, ok := cfg.Forwarder(name); !ok {
		return usageErrorf("forwarder %q is not in %s", name, *cfgPath)
	}
	b, release, err := backend(ctx, cfg, false)
	if err != nil {
		return err
	}
	defer release()
	resumed, err := b.Resume(ctx, name)
	if err != nil {
		return err
	}
	if !resumed {
		fmt.Fprintf(stdout, "forwarder %q was not paused\n", name)
		return nil
	}
	fmt.Fprintf(stdout, "forwarder %q resumed%s\n", name, pickedUp(b))
	return nil
}
