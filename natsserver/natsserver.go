// Package natsserver runs a NATS server with JetStream inside leadbridge, for one-box
// installs: the daemon's nats forwarders publish to it, and downstream services connect
// to its listen address as to any NATS server. JetStream is always on, its files kept in
// a store directory, so streams outlive a restart of leadbridge.
//
// The server's own log lines go to the logger given (notices at debug level, they are
// many), with the client password and token hidden.
package natsserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/leadbridge/leadbridge/internal/httpx"
)

// ReadyTimeout bounds how long Start waits for the server to accept connections.
const ReadyTimeout = 10 * time.Second

// Config is the embedded server's settings.
type Config struct {
	// Listen is host:port for clients; port 0 picks a free port (see Server.ClientURL),
	// an empty host listens on every interface.
	Listen string
	// StoreDir holds JetStream's files.
	StoreDir string
	// User and Password, or Token, are what clients must present; none means no auth.
	User, Password string
	Token          string
}

// Server is a running embedded NATS server.
type Server struct {
	ns     *server.Server
	logger *slog.Logger
	listen string
	once   sync.Once
}

// Start starts the server and waits until it accepts connections with JetStream on,
// at most ReadyTimeout. The error says why it could not (the address in use, the store
// directory not writable, ...) and never holds the password or token. logger may be nil.
func Start(cfg Config, logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	host, portText, err := net.SplitHostPort(cfg.Listen)
	port, perr := strconv.Atoi(portText)
	if err != nil || perr != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("embedded NATS server: listen must be host:port, got %q", cfg.Listen)
	}
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS server: a store directory for JetStream is required")
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	if host == "" {
		host = "0.0.0.0" // what an empty host means to net.Listen
	}
	opts := &server.Options{
		ServerName: "leadbridge",
		Host:       host, Port: port,
		JetStream: true, StoreDir: cfg.StoreDir,
		Username: cfg.User, Password: cfg.Password, Authorization: cfg.Token,
		NoSigs: true,
	}
	secrets := httpx.NewRedactor(cfg.Password, cfg.Token)
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS server: %s", secrets.Redact(err.Error()))
	}
	log := &serverLog{logger: logger, secrets: secrets, fatal: make(chan string, 1)}
	ns.SetLoggerV2(log, false, false, false)
	ns.Start()
	s := &Server{ns: ns, logger: logger, listen: cfg.Listen}
	if err := s.waitReady(log.fatal); err != nil {
		s.Shutdown()
		return nil, err
	}
	logger.Info("embedded NATS server started", "listen", cfg.Listen, "url", s.ClientURL(),
		"store_dir", cfg.StoreDir, "auth", authKind(cfg))
	if authKind(cfg) == "none" && !isLoopback(host) {
		logger.Warn("embedded NATS server: clients from other machines need no credentials; "+
			"set nats_server user and password (or token), or listen on loopback", "listen", cfg.Listen)
	}
	return s, nil
}

// waitReady waits until the server accepts connections, or reports the fatal error it
// logged, or gives up after ReadyTimeout.
func (s *Server) waitReady(fatal <-chan string) error {
	deadline := time.Now().Add(ReadyTimeout)
	for {
		select {
		case msg := <-fatal:
			return fmt.Errorf("embedded NATS server (listen %s): %s", s.listen, msg)
		default:
		}
		if s.ns.ReadyForConnections(50 * time.Millisecond) {
			return s.Ready()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("embedded NATS server (listen %s): not ready for connections within %s", s.listen, ReadyTimeout)
		}
	}
}

// isLoopback reports whether host (a listen address's) takes connections from this
// machine only.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// authKind names how clients authenticate, for logs: never the secret itself.
func authKind(cfg Config) string {
	switch {
	case cfg.User != "":
		return "user/password"
	case cfg.Token != "":
		return "token"
	}
	return "none"
}

// ClientURL is a URL a client on this machine can dial (see DialURL), with the port
// actually bound. It holds no credentials.
func (s *Server) ClientURL() string {
	addr, ok := s.ns.Addr().(*net.TCPAddr)
	if !ok {
		return s.ns.ClientURL()
	}
	host, _, _ := net.SplitHostPort(s.listen) // Start checked it
	return DialURL(net.JoinHostPort(host, strconv.Itoa(addr.Port)))
}

// DialURL is the nats:// URL a client on this machine dials to reach a server
// listening on listen (host:port): a loopback host when listen names every interface.
func DialURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "nats://" + listen
	}
	switch ip := net.ParseIP(host); {
	case host == "" || ip != nil && ip.Equal(net.IPv4zero):
		host = "127.0.0.1"
	case ip != nil && ip.IsUnspecified():
		host = "::1"
	}
	u := url.URL{Scheme: "nats", Host: net.JoinHostPort(host, port)}
	return u.String()
}

// Ready reports whether the server accepts connections with JetStream on: nil, or why not.
func (s *Server) Ready() error {
	h := s.ns.Healthz(&server.HealthzOptions{JSEnabledOnly: true})
	if h.Error != "" || len(h.Errors) > 0 || h.Status != "ok" {
		msg := h.Error
		if msg == "" {
			msg = h.Status
		}
		return fmt.Errorf("embedded NATS server: %s", msg)
	}
	return nil
}

// Shutdown stops the server, closing its client connections, and waits until it is
// gone; later calls do nothing.
func (s *Server) Shutdown() {
	s.once.Do(func() {
		s.ns.Shutdown()
		s.ns.WaitForShutdown()
		s.logger.Info("embedded NATS server stopped", "listen", s.listen)
	})
}

// serverLog passes nats-server's log lines to slog, hiding the client secrets, and
// hands the first fatal one to Start (nats-server leaves exiting to its logger).
type serverLog struct {
	logger  *slog.Logger
	secrets *httpx.Redactor
	fatal   chan string
}

func (l *serverLog) log(level slog.Level, format string, v []any) {
	l.logger.Log(context.Background(), level, "nats-server: "+l.secrets.Redact(fmt.Sprintf(format, v...)))
}

func (l *serverLog) Noticef(format string, v ...any) { l.log(slog.LevelDebug, format, v) }

// Warnf logs at warn level, except the advice against plaintext passwords: the
// password is leadbridge's own setting, which its forwarders must present in clear.
func (l *serverLog) Warnf(format string, v ...any) {
	level := slog.LevelWarn
	if strings.HasPrefix(format, "Plaintext passwords detected") {
		level = slog.LevelDebug
	}
	l.log(level, format, v)
}

func (l *serverLog) Errorf(format string, v ...any) { l.log(slog.LevelError, format, v) }
func (l *serverLog) Debugf(format string, v ...any) { l.log(slog.LevelDebug, format, v) }
func (l *serverLog) Tracef(format string, v ...any) { l.log(slog.LevelDebug, format, v) }

// Fatalf logs at error level and reports the failure to Start; the process goes on.
func (l *serverLog) Fatalf(format string, v ...any) {
	l.log(slog.LevelError, format, v)
	select {
	case l.fatal <- l.secrets.Redact(fmt.Sprintf(format, v...)):
	default:
	}
}
