package nats

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	natsgo "github.com/nats-io/nats.go"

	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// Dial connects to the servers of cfg with its auth and TLS, as a forwarder does (the
// subject and JetStream settings aside), for another user of NATS: the JetStream store
// (store.nats). The connection reconnects forever; it logs its changes with secrets
// redacted, and neither its errors nor its logs quote a secret. The caller closes it.
func Dial(cfg Config, logger *slog.Logger) (*natsgo.Conn, error) {
	logger, fail, err := forwarders.Begin("nats", cfg.Name, logger, Check(cfg))
	if err != nil {
		return nil, err
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	servers, urlSecrets, _ := parseURLs(cfg.URL)
	secrets := httpx.NewRedactor(append(urlSecrets, cfg.Password, cfg.Token)...)
	auth, err := authOptions(cfg)
	if err != nil {
		return nil, fail("%s", secrets.Redact(err.Error()))
	}
	tlsOpts, err := tlsOptions(cfg.TLS)
	if err != nil {
		return nil, fail("%s", secrets.Redact(err.Error()))
	}
	handlers := []natsgo.Option{
		natsgo.ConnectHandler(func(nc *natsgo.Conn) {
			logger.Info("nats: connected", "server", httpx.RedactURL(nc.ConnectedUrl()))
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			logger.Info("nats: reconnected", "server", httpx.RedactURL(nc.ConnectedUrl()))
		}),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil {
				logger.Warn("nats: disconnected, reconnecting", "error", secrets.Redact(err.Error()))
			}
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			logger.Warn("nats: server reported an error", "error", secrets.Redact(err.Error()))
		}),
	}
	nc, err := natsgo.Connect(strings.Join(servers, ","), slices.Concat(connOptions(cfg), handlers, auth, tlsOpts)...)
	if err != nil {
		return nil, fail("%s", secrets.Redact(fmt.Sprintf("connect: %v", err)))
	}
	if cfg.TLS.InsecureSkipVerify {
		logger.Warn("nats: TLS server verification is off (tls.insecure_skip_verify); use only for tests")
	}
	return nc, nil
}
