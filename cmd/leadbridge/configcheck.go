package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/forwarders"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
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
	if problems := checkForwarders(cfg); len(problems) > 0 {
		return usageErrorf("config %s: %d problems the forwarders found:\n  %s", *cfgPath, len(problems), strings.Join(problems, "\n  "))
	}
	fmt.Fprintf(stdout, "%s: ok (%d chatbots, %d forwarders)\n", *cfgPath, len(cfg.NeoAgent.Chatbots), len(cfg.Forwarders))
	return nil
}

// checkForwarders runs each forwarder's own checks without touching the network:
// webhook and slack forwarders are built (that connects nowhere), a nats forwarder's
// subject is tried on a sample event and its key files must be readable.
func checkForwarders(cfg *config.Config) []string {
	var problems []string
	for i, fc := range cfg.Forwarders {
		path := fmt.Sprintf("forwarders[%d]", i)
		if fc.NATS == nil {
			f, err := buildForwarder(fc, slog.New(slog.DiscardHandler))
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			if c, ok := f.(forwarders.Closer); ok {
				_ = c.Close()
			}
			continue
		}
		if err := natsfwd.CheckSubject(fc.NATS.Subject); err != nil {
			problems = append(problems, fmt.Sprintf("%s.subject: %v", path, err))
		}
		for key, file := range map[string]string{
			"creds_file": fc.NATS.CredsFile, "nkey_file": fc.NATS.NKeyFile, "tls.ca_file": fc.NATS.TLS.CAFile,
			"tls.cert_file": fc.NATS.TLS.CertFile, "tls.key_file": fc.NATS.TLS.KeyFile,
		} {
			if file == "" {
				continue
			}
			if f, err := os.Open(file); err != nil {
				problems = append(problems, fmt.Sprintf("%s.%s: %v", path, key, err))
			} else {
				_ = f.Close()
			}
		}
	}
	return problems
}
