package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/natsserver"
)

// startEmbeddedNATS starts the embedded NATS server nats_server describes, or returns
// nil when the config has none. It returns once the server accepts connections.
func startEmbeddedNATS(cfg *config.Config, logger *slog.Logger) (*natsserver.Server, error) {
	s := cfg.NATSServer
	if s == nil {
		return nil, nil
	}
	srv, err := natsserver.Start(natsserver.Config{
		Listen: s.Listen, StoreDir: s.StoreDir, User: s.User, Password: s.Password, Token: s.Token,
	}, logger.With("component", "nats-server"))
	if err != nil {
		return nil, fmt.Errorf("nats_server: %w", err)
	}
	return srv, nil
}

// resolveEmbedded returns fc with url: embedded replaced by the embedded server's client
// URL and nats_server's credentials; any other entry is returned as it is. srv is the
// server when this process runs it, nil when another one does (send-test beside the
// daemon): then the URL is derived from nats_server.listen.
func resolveEmbedded(cfg *config.Config, fc config.ForwarderConfig, srv *natsserver.Server) config.ForwarderConfig {
	if fc.Type != config.TypeNATS || fc.NATS == nil || fc.NATS.URL != config.EmbeddedNATS || cfg.NATSServer == nil {
		return fc
	}
	n := *fc.NATS
	s := cfg.NATSServer
	n.URL = natsserver.DialURL(s.Listen)
	if srv != nil {
		n.URL = srv.ClientURL()
	}
	n.User, n.Password, n.Token = s.User, s.Password, s.Token
	fc.NATS = &n
	return fc
}

// embeddedSummary is what `config check` says of the embedded NATS server: where it
// listens, where JetStream keeps its files, how clients authenticate (never with what),
// and which forwarders publish to it; "" when the config has none.
func embeddedSummary(cfg *config.Config) string {
	s := cfg.NATSServer
	if s == nil {
		return ""
	}
	auth := "no auth"
	switch {
	case s.User != "":
		auth = fmt.Sprintf("user %q with a password", s.User)
	case s.Token != "":
		auth = "a token"
	}
	var users []string
	for _, fc := range cfg.Forwarders {
		if fc.Type == config.TypeNATS && fc.NATS != nil && fc.NATS.URL == config.EmbeddedNATS {
			users = append(users, fc.Name)
		}
	}
	used := "no forwarder uses it (url: embedded)"
	if len(users) > 0 {
		used = "forwarders using it: " + strings.Join(users, ", ")
	}
	return fmt.Sprintf("embedded NATS server: listen %s (clients dial %s, %s), JetStream in %s; %s",
		s.Listen, natsserver.DialURL(s.Listen), auth, s.StoreDir, used)
}
