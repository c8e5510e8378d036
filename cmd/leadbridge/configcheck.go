package main

import (
	"context"
	"fmt"
	"io"
)

func configCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
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
	fmt.Fprintf(stdout, "%s: ok (%d chatbots, %d forwarders)\n", *cfgPath, len(cfg.NeoAgent.Chatbots), len(cfg.Forwarders))
	return nil
}
