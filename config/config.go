// Package config loads leadbridge's YAML configuration: environment variables are
// expanded over the raw bytes, the YAML is decoded strictly (every unknown key is an
// error naming its key path and line), and the result is validated as a whole, listing
// every problem at once. Secret values never appear in an error.
//
// Expansion rules:
//   - ${VAR} is replaced by the value of VAR, or "" when it is unset.
//   - ${VAR:-default} is replaced by VAR's value, or by default when VAR is unset or empty.
//   - $$ is a literal $.
//   - A bare $word (no braces) is left as it is, so a password such as "pa$word" survives.
//   - A malformed reference ("${", "${}", "${1X}") is an error.
//
// Messages show any word holding a value taken from the environment (6 characters or
// longer), or 8 characters or more of one, as [redacted], wherever it ended up, on top of
// never quoting the secret keys.
//
// Expansion happens before YAML parsing, so a value that may contain YAML syntax
// (": ", " #", quotes) should be quoted in the file: api_key: "${NEOAGENT_API_KEY}".
// Expansion also applies inside comments.
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"time"
	_ "time/tzdata" // slack.timezone must load even in a minimal image without zoneinfo

	"github.com/leadbridge/leadbridge/event"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	slackfwd "github.com/leadbridge/leadbridge/forwarders/slack"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
)

// Forwarder types accepted in forwarders[].type.
const (
	TypeWebhook = "webhook"
	TypeNATS    = "nats"
	TypeSlack   = "slack"
)

// Config is the whole leadbridge configuration.
type Config struct {
	NeoAgent   NeoAgent          `yaml:"neoagent"`
	Poll       Poll              `yaml:"poll"`
	Store      Store             `yaml:"store"`
	Dedupe     Dedupe            `yaml:"dedupe"`
	Shutdown   Shutdown          `yaml:"shutdown"`
	Forwarders []ForwarderConfig `yaml:"forwarders"`
	HTTP       HTTP              `yaml:"http"`
	Log        Log               `yaml:"log"`

	// Source names where the config came from (a file path), for messages.
	Source string `yaml:"-"`

	// doc remembers what the YAML document held (key lines, keys present but empty,
	// decode problems); nil for a Config built in Go.
	doc *docInfo
}

// NeoAgent is how to reach the LeadList API and which chatbots to poll.
type NeoAgent struct {
	BaseURL      string        `yaml:"base_url"`
	APIKey       string        `yaml:"api_key"`
	Timeout      time.Duration `yaml:"timeout"`
	MaxBodyBytes int64         `yaml:"max_body_bytes"`
	Chatbots     []Chatbot     `yaml:"chatbots"`
}

// Chatbot is one chatbot to poll; Name defaults to Serial.
type Chatbot struct {
	Serial string `yaml:"serial"`
	Name   string `yaml:"name"`
}

// Poll sets the polling loop's pace.
type Poll struct {
	Interval time.Duration `yaml:"interval"`
	Lookback time.Duration `yaml:"lookback"`
	// Initial is "skip" (mark records already in the API as seen) or "emit".
	Initial string `yaml:"initial"`
	// Jitter is the fraction (0..1) by which each interval is randomly varied.
	Jitter     float64       `yaml:"jitter"`
	MaxBackoff time.Duration `yaml:"max_backoff"`
}

// Store backends accepted in store.backend.
const (
	BackendBbolt = "bbolt"
	BackendNATS  = "nats"
)

// Store is where leadbridge keeps its state, and how long seen keys are kept: a bbolt
// file (Path) or NATS JetStream (NATS), as Backend says.
type Store struct {
	Backend   string        `yaml:"backend"`
	Path      string        `yaml:"path"`
	Retention time.Duration `yaml:"retention"`
	NATS      StoreNATS     `yaml:"nats"`
}

// StoreNATS is the JetStream store's connection and naming (store.backend: nats); its
// auth and TLS keys are a nats forwarder's.
type StoreNATS struct {
	// URL is one server URL or a comma-separated list, as a nats forwarder's.
	URL string `yaml:"url"`
	// Prefix names the KV buckets and streams the store creates.
	Prefix string `yaml:"prefix"`
	// Replicas is the JetStream replication of those buckets and streams, 1..5.
	Replicas  int           `yaml:"replicas"`
	CredsFile string        `yaml:"creds_file"`
	NKeyFile  string        `yaml:"nkey_file"`
	User      string        `yaml:"user"`
	Password  string        `yaml:"password"`
	Token     string        `yaml:"token"`
	TLS       NATSTLS       `yaml:"tls"`
	Timeout   time.Duration `yaml:"timeout"`
}

// NATSConfig is the store's connection settings in the shape of a nats forwarder's, so
// that both are checked and dialled alike.
func (s Store) NATSConfig() natsfwd.Config {
	n := s.NATS
	return natsfwd.Config{
		Name: "store", URL: n.URL, Subject: natsfwd.DefaultSubject,
		CredsFile: n.CredsFile, NKeyFile: n.NKeyFile, User: n.User, Password: n.Password, Token: n.Token,
		TLS: natsfwd.TLS(n.TLS), Timeout: n.Timeout,
	}
}

// Dedupe tunes which events are emitted for records seen before.
type Dedupe struct {
	EmitUpdates bool `yaml:"emit_updates"`
}

// Shutdown bounds how long in-flight deliveries may finish after a signal.
type Shutdown struct {
	Grace time.Duration `yaml:"grace"`
}

// HTTP is the metrics and health listener.
type HTTP struct {
	// Listen is host:port; an explicit "" in the file disables the listener. A key absent
	// from the file (or "" in a Config built in Go) gets the default.
	Listen string `yaml:"listen"`
	// AdminToken, when set, is required (as a bearer token) by the admin API, so that
	// other users of the machine cannot list or replay dead letters. A secret.
	AdminToken string `yaml:"admin_token"`
}

// Log picks the log level and handler.
type Log struct {
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// ForwarderConfig is one target. Exactly one of Webhook, NATS and Slack is set, matching
// Type; in YAML their keys sit beside the common ones.
type ForwarderConfig struct {
	Name string `yaml:"name"`
	Type string `yaml:"type"`
	// Types limits the forwarder to these kinds; empty means all.
	Types []event.Kind `yaml:"types"`
	// Chatbots limits the forwarder to these serials; empty means all.
	Chatbots    []string `yaml:"chatbots"`
	Concurrency int      `yaml:"concurrency"`
	Retry       Retry    `yaml:"retry"`

	Webhook *Webhook `yaml:"-"`
	NATS    *NATS    `yaml:"-"`
	Slack   *Slack   `yaml:"-"`
}

// Retry is a forwarder's exponential backoff policy.
type Retry struct {
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	MaxElapsed      time.Duration `yaml:"max_elapsed"`
}

// Webhook holds the keys of a webhook forwarder.
type Webhook struct {
	URL     string            `yaml:"url"`
	Headers map[string]string `yaml:"headers"`
	Timeout time.Duration     `yaml:"timeout"`
	// Body is "cloudevent" or "lead".
	Body string `yaml:"body"`
	// Secret signs requests per Standard Webhooks; empty means unsigned.
	Secret             string `yaml:"secret"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// NATS holds the keys of a nats forwarder.
type NATS struct {
	// URL is one server URL or a comma-separated list (nats://, tls://, ws://, wss://;
	// a bare host:port means nats://).
	URL string `yaml:"url"`
	// Subject is a text/template over the event; it may call token (see forwarders/nats).
	Subject   string        `yaml:"subject"`
	JetStream bool          `yaml:"jetstream"`
	Stream    string        `yaml:"stream"`
	CredsFile string        `yaml:"creds_file"`
	NKeyFile  string        `yaml:"nkey_file"`
	User      string        `yaml:"user"`
	Password  string        `yaml:"password"`
	Token     string        `yaml:"token"`
	TLS       NATSTLS       `yaml:"tls"`
	Timeout   time.Duration `yaml:"timeout"`
}

// NATSTLS is the TLS setup of a nats forwarder.
type NATSTLS struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Slack holds the keys of a slack forwarder: WebhookURL, or Token with Channel.
type Slack struct {
	WebhookURL string `yaml:"webhook_url"`
	Token      string `yaml:"token"`
	Channel    string `yaml:"channel"`
	// APIURL overrides the Slack Web API base URL.
	APIURL string `yaml:"api_url"`
	// Timezone is the IANA zone times are shown in.
	Timezone string `yaml:"timezone"`
	// Template, when set, is a text/template for the message text.
	Template           string        `yaml:"template"`
	Timeout            time.Duration `yaml:"timeout"`
	InsecureSkipVerify bool          `yaml:"insecure_skip_verify"`
}

// DefaultConfig is the one owner of the defaults: a Config holding the value of every key
// a file may leave out. Parse decodes over it; Validate fills a Go-built Config's zero
// fields from it. Forwarder entries get theirs from DefaultForwarder.
func DefaultConfig() *Config {
	return &Config{
		NeoAgent: NeoAgent{BaseURL: "https://app.neoagent.co", Timeout: 30 * time.Second, MaxBodyBytes: 64 << 20},
		Poll: Poll{Interval: time.Minute, Lookback: 48 * time.Hour, Initial: "skip", Jitter: 0.1,
			MaxBackoff: 10 * time.Minute},
		Store: Store{Backend: BackendBbolt, Path: "./leadbridge.db", Retention: 90 * 24 * time.Hour,
			NATS: StoreNATS{Prefix: "leadbridge", Replicas: 1, Timeout: natsfwd.DefaultTimeout}},
		Shutdown: Shutdown{Grace: 30 * time.Second},
		HTTP:     HTTP{Listen: "127.0.0.1:9108"},
		Log:      Log{Level: "info", Format: "text"},
	}
}

// defaultConcurrency is how many deliveries a forwarder of each type keeps in flight
// unless its config says: a JetStream publish waits for its ack, so a wide window keeps
// the server busy; a webhook target takes a handful of parallel requests; Slack takes one
// message a second whatever we do.
var defaultConcurrency = map[string]int{TypeWebhook: 16, TypeNATS: 256, TypeSlack: 4}

// DefaultForwarder is a forwarder entry of type typ holding the defaults of every key it
// may leave out; the timeouts and the like are the forwarder packages' own defaults.
// An unknown type gets only the common keys' defaults.
func DefaultForwarder(typ string) ForwarderConfig {
	f := ForwarderConfig{
		Type:        typ,
		Concurrency: max(defaultConcurrency[typ], 1),
		Retry:       Retry{InitialInterval: time.Second, MaxInterval: 5 * time.Minute, MaxElapsed: 24 * time.Hour},
	}
	switch typ {
	case TypeWebhook:
		f.Webhook = &Webhook{Timeout: webhook.DefaultTimeout, Body: webhook.BodyCloudEvent}
	case TypeNATS:
		f.NATS = &NATS{Subject: natsfwd.DefaultSubject, Timeout: natsfwd.DefaultTimeout}
	case TypeSlack:
		f.Slack = &Slack{Timezone: "UTC", Timeout: slackfwd.DefaultTimeout}
	}
	return f
}

// fillDefaults sets every zero field of a Go-built config from DefaultConfig and each
// forwarder's from DefaultForwarder.
func (c *Config) fillDefaults() {
	fillZero(reflect.ValueOf(c).Elem(), reflect.ValueOf(DefaultConfig()).Elem())
	for i := range c.Forwarders {
		f := &c.Forwarders[i]
		fillZero(reflect.ValueOf(f).Elem(), reflect.ValueOf(DefaultForwarder(f.Type)))
	}
}

// fillZero sets each zero field of the struct dst to the same field of def, going into
// nested structs and pointers to them.
func fillZero(dst, def reflect.Value) {
	for i := range dst.NumField() {
		d, f := dst.Field(i), def.Field(i)
		switch {
		case !d.CanSet():
		case d.Kind() == reflect.Struct:
			fillZero(d, f)
		case d.Kind() == reflect.Pointer && !d.IsNil() && !f.IsNil():
			fillZero(d.Elem(), f.Elem())
		case d.IsZero():
			d.Set(f)
		}
	}
}

// WebhookConfig is this webhook entry's settings as package webhook takes them.
func (f ForwarderConfig) WebhookConfig() webhook.Config {
	w := deref(f.Webhook)
	return webhook.Config{
		Name: f.Name, URL: w.URL, Headers: w.Headers, Timeout: w.Timeout, Body: w.Body,
		Secret: w.Secret, InsecureSkipVerify: w.InsecureSkipVerify, Concurrency: f.Concurrency,
	}
}

// NATSConfig is this nats entry's settings as package forwarders/nats takes them.
func (f ForwarderConfig) NATSConfig() natsfwd.Config {
	n := deref(f.NATS)
	return natsfwd.Config{
		Name: f.Name, URL: n.URL, Subject: n.Subject, JetStream: n.JetStream, Stream: n.Stream,
		CredsFile: n.CredsFile, NKeyFile: n.NKeyFile, User: n.User, Password: n.Password, Token: n.Token,
		TLS:     natsfwd.TLS(n.TLS),
		Timeout: n.Timeout,
	}
}

// SlackConfig is this slack entry's settings as package forwarders/slack takes them.
func (f ForwarderConfig) SlackConfig() slackfwd.Config {
	s := deref(f.Slack)
	return slackfwd.Config{
		Name: f.Name, WebhookURL: s.WebhookURL, Token: s.Token, Channel: s.Channel, APIURL: s.APIURL,
		Timezone: s.Timezone, Template: s.Template, Timeout: s.Timeout, InsecureSkipVerify: s.InsecureSkipVerify,
	}
}

// deref is *p, or the zero value for nil (a forwarder entry of another type).
func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}

// Load reads, expands, decodes and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse expands environment variables in data, decodes it strictly and validates it.
// source names the input in Config.Source. Any problem, of syntax, decoding or
// validation, is returned as a *ValidationError listing all of them.
func Parse(data []byte, source string) (*Config, error) {
	expanded, envValues, probs := expandEnv(data, os.Getenv)
	if len(probs) > 0 {
		return nil, &ValidationError{Source: source, Problems: probs}
	}
	c := DefaultConfig()
	c.Source = source
	if msg := decodeYAML(expanded, envValues, c); msg != "" {
		return nil, &ValidationError{Source: source, Problems: []Problem{{Msg: msg}}}
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Chatbot returns the configured chatbot with this serial.
func (c *Config) Chatbot(serial string) (Chatbot, bool) {
	for _, cb := range c.NeoAgent.Chatbots {
		if cb.Serial == serial {
			return cb, true
		}
	}
	return Chatbot{}, false
}

// Forwarder returns the configured forwarder with this name.
func (c *Config) Forwarder(name string) (ForwarderConfig, bool) {
	for _, f := range c.Forwarders {
		if f.Name == name {
			return f, true
		}
	}
	return ForwarderConfig{}, false
}

// Route names the forwarders whose filters accept ev, in config order. It fits
// dedupe.Options.Route.
func (c *Config) Route(ev event.Event) []string {
	var names []string
	for _, f := range c.Forwarders {
		if f.Accepts(ev.Chatbot(), ev.Kind()) {
			names = append(names, f.Name)
		}
	}
	return names
}

// Accepts reports whether the forwarder's types and chatbots filters let through a
// record of this kind from this chatbot.
func (f ForwarderConfig) Accepts(chatbot string, kind event.Kind) bool {
	return (len(f.Types) == 0 || slices.Contains(f.Types, kind)) &&
		(len(f.Chatbots) == 0 || slices.Contains(f.Chatbots, chatbot))
}

// Fingerprint is the hex SHA-256 of the forwarder's settings (secrets included, so a
// rotated secret counts as a change). Equal settings give equal fingerprints.
func (f ForwarderConfig) Fingerprint() string {
	// json.Marshal cannot fail on these plain types and sorts map keys.
	b, _ := json.Marshal(f)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// SlogLevel maps Level to a slog.Level (info when unset).
func (l Log) SlogLevel() slog.Level {
	switch l.Level {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}
