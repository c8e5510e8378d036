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
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"sync/atomic"
	"time"
	_ "time/tzdata" // slack.timezone must load even in a minimal image without zoneinfo

	"github.com/leadbridge/leadbridge/event"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	slackfwd "github.com/leadbridge/leadbridge/forwarders/slack"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/internal/jqprog"
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
	// NATSServer, when set, runs an embedded NATS server (package natsserver) that nats
	// forwarders reach with url: embedded; nil runs none.
	NATSServer *NATSServer `yaml:"nats_server"`

	// Source names where the config came from (a file path), for messages.
	Source string `yaml:"-"`

	// doc remembers what the YAML document held (key lines, keys present but empty,
	// decode problems); nil for a Config built in Go.
	doc *docInfo
}

// NeoAgent is how to reach the LeadList API and which chatbots to poll. The top-level
// BaseURL, APIKey, Timeout and Chatbots are the account named event.DefaultAccount;
// Accounts lists others, each with its own key and host.
type NeoAgent struct {
	BaseURL      string        `yaml:"base_url"`
	APIKey       string        `yaml:"api_key"`
	Timeout      time.Duration `yaml:"timeout"`
	MaxBodyBytes int64         `yaml:"max_body_bytes"`
	// MaxRPS is the request budget (LeadList calls per second) of every account that
	// does not set its own.
	MaxRPS   float64   `yaml:"max_rps"`
	Chatbots []Chatbot `yaml:"chatbots"`
	Accounts []Account `yaml:"accounts"`
}

// Account is one NeoAgent account (or white-label host): its key, host, timeout and
// request budget, shared by its chatbots. Validate sets BaseURL, Timeout and MaxRPS
// from the neoagent keys when left out.
type Account struct {
	Name     string        `yaml:"name"`
	BaseURL  string        `yaml:"base_url"`
	APIKey   string        `yaml:"api_key"`
	Timeout  time.Duration `yaml:"timeout"`
	MaxRPS   float64       `yaml:"max_rps"`
	Chatbots []Chatbot     `yaml:"chatbots"`
}

// Chatbot is one chatbot to poll; Name defaults to Serial. Interval and Lookback, when
// set, override poll.interval and poll.lookback for this chatbot.
type Chatbot struct {
	Serial   string        `yaml:"serial"`
	Name     string        `yaml:"name"`
	Interval time.Duration `yaml:"interval"`
	Lookback time.Duration `yaml:"lookback"`
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

// NATSServer is the embedded NATS server: where it listens for clients, where JetStream
// (always on) keeps its files, and what clients must present.
type NATSServer struct {
	// Listen is host:port for clients (port 0 picks a free one, for tests).
	Listen   string `yaml:"listen"`
	StoreDir string `yaml:"store_dir"`
	// User and Password (a secret), or Token (a secret), are required of every client,
	// the daemon's forwarders included; none means no auth.
	User     string `yaml:"user"`
	Password string `yaml:"password"`
	Token    string `yaml:"token"`
}

// EmbeddedNATS is the nats forwarder url that means the embedded server (nats_server).
const EmbeddedNATS = "embedded"

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
	Chatbots []string `yaml:"chatbots"`
	// Filter, when set, is a jq program over the CloudEvent JSON that must yield true
	// for a record to be queued for this forwarder (see Route).
	Filter string `yaml:"filter"`
	// Accounts limits the forwarder to the chatbots of these accounts; empty means all.
	Accounts    []string `yaml:"accounts"`
	Concurrency int      `yaml:"concurrency"`
	Retry       Retry    `yaml:"retry"`

	Webhook *Webhook `yaml:"-"`
	NATS    *NATS    `yaml:"-"`
	Slack   *Slack   `yaml:"-"`

	filter *jqprog.Program // Filter compiled by Validate
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
	// Transform is a jq program whose output is the body (see package webhook).
	Transform string `yaml:"transform"`
	// Encoding is "json" (the default) or "form", how the transform's output is sent.
	Encoding string `yaml:"encoding"`
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
	// Digest sums up a burst in one message (see forwarders/slack).
	Digest SlackDigest `yaml:"digest"`
}

// SlackDigest is a slack forwarder's digest: more than Threshold deliveries due at once
// go out as messages listing up to MaxItems records each. threshold: 0 in a file turns it
// off; in a Config built in Go a zero gets the default, as every key does.
type SlackDigest struct {
	Threshold int `yaml:"threshold"`
	MaxItems  int `yaml:"max_items"`
}

// DefaultMaxRPS is an account's request budget unless neoagent.max_rps or the account's
// max_rps says otherwise: 5 calls a second is 300 chatbots polled every minute, yet a
// fraction of what one browser session of the NeoAgent dashboard makes, so a large
// agency stays a polite client, and a start with many chatbots is never a burst.
const DefaultMaxRPS = 5.0

// DefaultConfig is the one owner of the defaults: a Config holding the value of every key
// a file may leave out. Parse decodes over it; Validate fills a Go-built Config's zero
// fields from it. Forwarder entries get theirs from DefaultForwarder.
func DefaultConfig() *Config {
	return &Config{
		NeoAgent: NeoAgent{BaseURL: "https://app.neoagent.co", Timeout: 30 * time.Second, MaxBodyBytes: 64 << 20,
			MaxRPS: DefaultMaxRPS},
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
		f.Slack = &Slack{Timezone: "UTC", Timeout: slackfwd.DefaultTimeout, Digest: SlackDigest{
			Threshold: slackfwd.DefaultDigestThreshold, MaxItems: slackfwd.DefaultDigestMaxItems}}
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
		Transform: w.Transform, Encoding: w.Encoding,
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
		Digest: slackfwd.Digest(s.Digest),
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

// Chatbot returns the configured chatbot with this serial, in whichever account.
func (c *Config) Chatbot(serial string) (Chatbot, bool) {
	for _, a := range c.AllAccounts() {
		for _, cb := range a.Chatbots {
			if cb.Serial == serial {
				return cb, true
			}
		}
	}
	return Chatbot{}, false
}

// AllAccounts lists every account to poll: the one named event.DefaultAccount made of
// the top-level neoagent keys, when it has chatbots, then neoagent.accounts in order.
func (c *Config) AllAccounts() []Account {
	n := c.NeoAgent
	var all []Account
	if len(n.Chatbots) > 0 {
		all = append(all, Account{Name: event.DefaultAccount, BaseURL: n.BaseURL, APIKey: n.APIKey,
			Timeout: n.Timeout, MaxRPS: n.MaxRPS, Chatbots: n.Chatbots})
	}
	return append(all, n.Accounts...)
}

// Account returns the account with this name (event.DefaultAccount for the top-level one).
func (c *Config) Account(name string) (Account, bool) {
	for _, a := range c.AllAccounts() {
		if a.Name == name {
			return a, true
		}
	}
	return Account{}, false
}

// Chatbots lists every configured chatbot of every account, in config order, as the
// poller, status and readiness take them; Interval and Lookback are the chatbot's own
// (zero when it follows poll.*).
func (c *Config) Chatbots() []event.Chatbot {
	var out []event.Chatbot
	for _, a := range c.AllAccounts() {
		for _, cb := range a.Chatbots {
			out = append(out, event.Chatbot{Serial: cb.Serial, Name: cb.Name, Account: a.Name,
				Interval: cb.Interval, Lookback: cb.Lookback})
		}
	}
	return out
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
// dedupe.Options.Route. A jq filter that fails on ev (or yields no boolean) counts as
// not accepting it; a Router reports those.
func (c *Config) Route(ev event.Event) []string {
	return c.route(ev, nil)
}

// HasFilters reports whether a forwarder has a jq filter: without one, Route only reads
// the forwarders' lists, cheap and bounded (dedupe.Options.CheapRoute).
func (c *Config) HasFilters() bool {
	for _, f := range c.Forwarders {
		if f.Filter != "" {
			return true
		}
	}
	return false
}

// Filtered is told of each record a forwarder's jq filter kept out of its outbox: err
// is nil when the filter said false, else why it failed (a reason without the
// record's data, see package jqprog).
type Filtered func(forwarder string, ev event.Event, err error)

// Router routes events as Route does, by the config in force: Set swaps in the config a
// reload applied, and Route, which fits dedupe.Options.Route, reads whichever config is
// current. It also calls onFiltered (when not nil) for each record a forwarder's jq
// filter keeps out. It is safe for concurrent use.
type Router struct {
	cfg        atomic.Pointer[Config]
	onFiltered Filtered
}

// NewRouter is a Router over c that tells onFiltered (when not nil) of filtered records.
func NewRouter(c *Config, onFiltered Filtered) *Router {
	r := &Router{onFiltered: onFiltered}
	r.Set(c)
	return r
}

// Set makes c the config Route reads; records routed after it returns use c.
func (r *Router) Set(c *Config) { r.cfg.Store(c) }

// Route names the forwarders of the current config whose filters accept ev.
func (r *Router) Route(ev event.Event) []string { return r.cfg.Load().route(ev, r.onFiltered) }

// HasFilters reports whether a forwarder of the current config has a jq filter.
func (r *Router) HasFilters() bool { return r.cfg.Load().HasFilters() }

func (c *Config) route(ev event.Event, onFiltered Filtered) []string {
	var (
		names []string
		input any // the CloudEvent JSON as jq sees it, made once for every filter
	)
	for _, f := range c.Forwarders {
		if !f.Accepts(ev.Chatbot(), ev.Kind()) || !f.AcceptsAccount(ev.Account()) {
			continue
		}
		if f.Filter != "" {
			if input == nil {
				input = filterInput(ev)
			}
			if ok, err := f.match(input); !ok {
				if onFiltered != nil {
					onFiltered(f.Name, ev, err)
				}
				continue
			}
		}
		names = append(names, f.Name)
	}
	return names
}

// filterInput is the value a filter runs over: the CloudEvent JSON of ev (an error
// value, on which every filter fails, if it cannot be encoded).
func filterInput(ev event.Event) any {
	b, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	in, err := jqprog.Input(b)
	if err != nil {
		return err
	}
	return in
}

// FilterAccepts runs the forwarder's jq filter over ev: true when there is none or it
// says true; false with the reason when it fails.
func (f ForwarderConfig) FilterAccepts(ev event.Event) (bool, error) {
	if f.Filter == "" {
		return true, nil
	}
	return f.match(filterInput(ev))
}

// FilterMaxSteps bounds the jq steps of one run of a filter, a few hundredths of a
// second of busy loop. Filters run while the store takes a page (outside its write
// transaction), once per new record and filtered forwarder, so a filter that loops must
// not delay the page for long; a boolean test over one event takes a few dozen steps.
// A bound of steps, unlike one of time, gives the same verdict on a record however busy
// the machine is: a record a filter fails on is never queued for that forwarder.
const FilterMaxSteps = 1_000_000

// FilterTimeout bounds one run of a filter in time, for what steps do not count: a
// builtin that makes a huge value runs as one step. It is loose, so that a busy
// machine does not reach it on a filter within its steps.
const FilterTimeout = time.Second

// compileFilter compiles a filter program with its bounds.
func compileFilter(src string) (*jqprog.Program, error) {
	p, err := jqprog.Compile(src)
	if err != nil {
		return nil, err
	}
	return p.WithTimeout(FilterTimeout).WithMaxSteps(FilterMaxSteps), nil
}

// match runs the forwarder's filter over input (from filterInput). A config built in
// Go and not validated has its filter compiled here, on every call.
func (f ForwarderConfig) match(input any) (bool, error) {
	if err, ok := input.(error); ok {
		return false, err
	}
	prog := f.filter
	if prog == nil {
		var err error
		if prog, err = compileFilter(f.Filter); err != nil {
			return false, err
		}
	}
	// Route has no context: the filter's own time bound is the only one it needs.
	return prog.Match(context.Background(), input)
}

// Accepts reports whether the forwarder's types and chatbots filters let through a
// record of this kind from this chatbot.
func (f ForwarderConfig) Accepts(chatbot string, kind event.Kind) bool {
	return (len(f.Types) == 0 || slices.Contains(f.Types, kind)) &&
		(len(f.Chatbots) == 0 || slices.Contains(f.Chatbots, chatbot))
}

// AcceptsAccount reports whether the forwarder's accounts filter lets through a record
// of a chatbot of this account.
func (f ForwarderConfig) AcceptsAccount(account string) bool {
	return len(f.Accounts) == 0 || slices.Contains(f.Accounts, account)
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
