package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	slackfwd "github.com/leadbridge/leadbridge/forwarders/slack"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// Limits.
const (
	maxConcurrency  = 256
	minPollInterval = time.Second
	minLookback     = 24 * time.Hour
	maxRPS          = 1000 // a budget above this is a typo, not a politeness
	emptyValue      = "empty (is the environment variable set?)"
)

// RetentionMargin is how much store.retention must exceed poll.lookback: it covers time
// zone offsets and the API's day rounding, so a pruned seen key is never read again.
const RetentionMargin = 48 * time.Hour

// Problem is one thing wrong with a config, located by its key path (such as
// "forwarders[2].url", lists counted from 0) and, when known, its line in the file.
type Problem struct {
	Path string
	Msg  string
	Line int
}

// String formats the problem as "path: msg (line N)".
func (p Problem) String() string {
	s := p.Msg
	if p.Path != "" {
		s = p.Path + ": " + s
	}
	if p.Line > 0 {
		s += fmt.Sprintf(" (line %d)", p.Line)
	}
	return s
}

// ValidationError lists every problem found in a config, one per line in Error.
type ValidationError struct {
	// Source names the config (a file path), as given to Parse.
	Source   string
	Problems []Problem
}

// Error lists the problems, one per line.
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

var (
	forwarderName = regexp.MustCompile(`^[a-z0-9_-]+$`)
	serialPattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)
	accountName   = serialPattern
)

// Validate checks the whole config. It returns a *ValidationError listing every problem
// (decoding problems included, for a config from Parse), or nil. A config from Parse
// was decoded over DefaultConfig, so a key left out holds its default and an explicit
// zero (jitter: 0) is kept. A Config built in Go has its zero fields set from
// DefaultConfig first: there a zero counts as left out.
func (c *Config) Validate() error {
	v := &validator{c: c}
	if c.doc == nil {
		c.fillDefaults()
	} else {
		v.probs = slices.Clone(c.doc.problems)
		for _, p := range c.doc.empty {
			if p != "http.listen" {
				v.add(p, emptyValue)
			}
		}
		v.empty = make(map[string]bool, len(c.doc.empty))
		for _, p := range c.doc.empty {
			v.empty[p] = true
		}
	}
	v.neoAgent()
	v.poll()
	v.store()
	v.positive("shutdown.grace", c.Shutdown.Grace)
	if len(c.Forwarders) == 0 {
		v.add("forwarders", "at least one forwarder is required")
	}
	names := map[string]string{} // forwarder name → key path of the forwarder that has it
	for i := range c.Forwarders {
		v.forwarder(i, &c.Forwarders[i], names)
	}
	if l := c.HTTP.Listen; l != "" {
		if _, port, err := net.SplitHostPort(l); err != nil || !validPort(port) {
			v.add("http.listen", "must be host:port (or \"\" to disable), got %s", quote(l))
		}
	}
	v.natsServer()
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "text", "json")
	if len(v.probs) == 0 {
		return nil
	}
	slices.SortStableFunc(v.probs, func(a, b Problem) int {
		switch {
		case a.Line == b.Line:
			return 0
		case a.Line == 0:
			return 1
		case b.Line == 0:
			return -1
		}
		return a.Line - b.Line
	})
	return &ValidationError{Source: c.Source, Problems: v.probs}
}

// validator collects problems while Validate walks the config.
type validator struct {
	c     *Config
	probs []Problem
	empty map[string]bool // paths reported empty: nothing more is said about them
}

// add records a problem at path unless decoding already reported one there or above,
// or the key is there but empty (reported as such).
func (v *validator) add(path, format string, args ...any) {
	if v.empty[path] {
		return
	}
	line := 0
	if doc := v.c.doc; doc != nil {
		for p := path; p != ""; p = parentPath(p) {
			if doc.bad[p] {
				return
			}
			if line == 0 {
				line = doc.lines[p]
			}
		}
	}
	msg := fmt.Sprintf(format, args...)
	if v.c.doc != nil {
		path, msg = v.c.doc.scrub(path), v.c.doc.scrub(msg)
	}
	v.probs = append(v.probs, Problem{Path: path, Msg: msg, Line: line})
}

// parentPath strips the last element of a key path: a.b[2].c → a.b[2] → a.b → a → "".
func parentPath(p string) string {
	return p[:max(strings.LastIndexAny(p, ".["), 0)]
}

func (v *validator) positive(path string, d time.Duration) {
	if d <= 0 {
		v.add(path, "must be positive, got %s", d)
	}
}

// required reports a missing value (add skips one reported empty from the document).
func (v *validator) required(path, s string) {
	if s == "" {
		v.add(path, "required")
	}
}

// oneOf checks s is one of allowed.
func (v *validator) oneOf(path, s string, allowed ...string) {
	if !slices.Contains(allowed, s) {
		v.add(path, "must be one of %s, got %s", strings.Join(allowed, ", "), quote(s))
	}
}

// httpURL checks s is an absolute http(s) URL, naming it only in redacted form.
func (v *validator) httpURL(path, s string) {
	if u, err := url.Parse(s); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		v.add(path, "must be an http or https URL, got %s", httpx.RedactURL(s))
	}
}

func (v *validator) neoAgent() {
	n := &v.c.NeoAgent
	v.httpURL("neoagent.base_url", n.BaseURL)
	// The top-level key is the default account's; with neoagent.accounts alone, unused.
	if len(n.Chatbots) > 0 || len(n.Accounts) == 0 {
		v.required("neoagent.api_key", n.APIKey)
	}
	v.positive("neoagent.timeout", n.Timeout)
	if n.MaxBodyBytes <= 0 {
		v.add("neoagent.max_body_bytes", "must be positive, got %d", n.MaxBodyBytes)
	}
	v.maxRPS("neoagent.max_rps", n.MaxRPS)
	if len(n.Chatbots) == 0 && len(n.Accounts) == 0 {
		v.add("neoagent.chatbots", "at least one chatbot is required")
	}
	serials := map[string]string{} // serial → key path of the chatbot that has it
	names := map[string]string{}   // account name → its key path
	if len(n.Chatbots) > 0 {
		names[event.DefaultAccount] = "neoagent (the top-level account, named " + event.DefaultAccount + ")"
	}
	v.chatbots("neoagent.chatbots", n.Chatbots, serials)
	for i := range n.Accounts {
		v.account(i, &n.Accounts[i], names, serials)
	}
}

// account checks neoagent.accounts[i] and fills the keys it leaves out from neoagent's.
func (v *validator) account(i int, a *Account, names, serials map[string]string) {
	n := &v.c.NeoAgent
	path := fmt.Sprintf("neoagent.accounts[%d]", i)
	v.required(path+".name", a.Name)
	v.uniqueName(path, "account", a.Name, accountName, "letters, digits, - and _", names)
	if a.BaseURL == "" && !v.given(path+".base_url") {
		a.BaseURL = n.BaseURL
	}
	if a.BaseURL != "" {
		v.httpURL(path+".base_url", a.BaseURL)
	}
	v.required(path+".api_key", a.APIKey)
	if a.Timeout == 0 && !v.given(path+".timeout") {
		a.Timeout = n.Timeout
	} else {
		v.positive(path+".timeout", a.Timeout)
	}
	if a.MaxRPS == 0 && !v.given(path+".max_rps") {
		a.MaxRPS = n.MaxRPS
	} else {
		v.maxRPS(path+".max_rps", a.MaxRPS)
	}
	if len(a.Chatbots) == 0 {
		v.add(path+".chatbots", "at least one chatbot is required")
	}
	v.chatbots(path+".chatbots", a.Chatbots, serials)
}

// chatbots checks a list of chatbots at path; serials maps each serial seen so far, in
// any account, to its chatbot's key path, as a serial may appear once in the whole config.
func (v *validator) chatbots(path string, bots []Chatbot, serials map[string]string) {
	for i := range bots {
		cb := &bots[i]
		p := fmt.Sprintf("%s[%d]", path, i)
		if cb.Interval != 0 || v.given(p+".interval") {
			v.interval(p+".interval", cb.Interval)
		}
		if cb.Lookback != 0 || v.given(p+".lookback") {
			v.lookback(p+".lookback", cb.Lookback)
		}
		v.required(p+".serial", cb.Serial)
		if cb.Serial == "" {
			continue
		}
		if !serialPattern.MatchString(cb.Serial) {
			v.add(p+".serial", "must be letters, digits, - and _, got %s", quote(cb.Serial))
		}
		if other, dup := serials[cb.Serial]; dup {
			why := ""
			if !strings.HasPrefix(other, path+"[") {
				why = ": a serial belongs to one account only"
			}
			v.add(p+".serial", "duplicate serial %s (also %s)%s", quote(cb.Serial), other, why)
		} else {
			serials[cb.Serial] = p
		}
		if cb.Name == "" {
			cb.Name = cb.Serial
		}
	}
}

// given reports whether the document holds the key at path (so a zero there is meant,
// not a key left out). A Config built in Go has no document: a zero is left out.
func (v *validator) given(path string) bool {
	return v.c.doc != nil && v.c.doc.lines[path] > 0
}

// maxRPS checks a request budget.
func (v *validator) maxRPS(path string, rps float64) {
	if !(rps > 0 && rps <= maxRPS) {
		v.add(path, "must be above 0 and at most %g requests per second, got %g", float64(maxRPS), rps)
	}
}

// interval checks a poll interval.
func (v *validator) interval(path string, d time.Duration) {
	if d < minPollInterval {
		v.add(path, "must be at least %s, got %s", minPollInterval, d)
	}
}

// lookback checks a poll lookback, alone and against store.retention: records are
// re-read for the lookback, and the margin covers time zone offsets and the API's day
// rounding; a seen key pruned sooner could be read again and look new.
func (v *validator) lookback(path string, d time.Duration) {
	if d < minLookback {
		v.add(path, "must be at least %s, got %s", minLookback, d)
		return
	}
	if path == "poll.lookback" {
		return // store() reports it under store.retention
	}
	if limit := v.c.Store.Retention - RetentionMargin; d >= limit {
		v.add(path, "must be below store.retention (%s) - %s = %s, got %s",
			v.c.Store.Retention, RetentionMargin, limit, d)
	}
}

func (v *validator) poll() {
	p := &v.c.Poll
	v.interval("poll.interval", p.Interval)
	v.lookback("poll.lookback", p.Lookback)
	v.oneOf("poll.initial", p.Initial, "skip", "emit")
	if !(p.Jitter >= 0 && p.Jitter <= 1) {
		v.add("poll.jitter", "must be between 0 and 1, got %g", p.Jitter)
	}
	v.positive("poll.max_backoff", p.MaxBackoff)
}

func (v *validator) store() {
	s := &v.c.Store
	// Records are re-read for poll.lookback; the margin covers time zone offsets and the
	// API's day rounding. A key pruned sooner could be read again and look new.
	if minimum := v.c.Poll.Lookback + RetentionMargin; s.Retention <= minimum {
		v.add("store.retention", "must exceed poll.lookback (%s) + %s = %s, got %s",
			v.c.Poll.Lookback, RetentionMargin, minimum, s.Retention)
	}
	v.oneOf("store.backend", s.Backend, BackendBbolt, BackendNATS)
	inFile := func(key string) bool { return v.c.doc != nil && v.c.doc.lines[key] != 0 }
	switch s.Backend {
	case BackendBbolt:
		if inFile("store.nats") {
			v.add("store.nats", "only with store.backend: nats (the backend is %s)", BackendBbolt)
		}
	case BackendNATS:
		if inFile("store.path") {
			v.add("store.path", "belongs to the bbolt backend; remove it with store.backend: nats")
		}
		v.required("store.nats.url", s.NATS.URL)
		if !serialPattern.MatchString(s.NATS.Prefix) {
			v.add("store.nats.prefix", "must be letters, digits, - and _, got %s", quote(s.NATS.Prefix))
		}
		if s.NATS.Replicas < 1 || s.NATS.Replicas > 5 {
			v.add("store.nats.replicas", "must be 1..5, got %d", s.NATS.Replicas)
		}
		v.positive("store.nats.timeout", s.NATS.Timeout)
		if s.NATS.URL != "" {
			v.owned("store.nats", natsfwd.Check(s.NATSConfig()))
		}
	}
}

// uniqueName checks the name of the account or forwarder at owner (its key path) against
// pattern, which rule describes, and against the names taken before it (name → key path
// of the owner that took it), and takes it.
func (v *validator) uniqueName(owner, what, name string, pattern *regexp.Regexp, rule string, taken map[string]string) {
	if name == "" {
		return
	}
	if !pattern.MatchString(name) {
		v.add(owner+".name", "must be %s, got %s", rule, quote(name))
	}
	if other, dup := taken[name]; dup {
		v.add(owner+".name", "duplicate %s name %s (also %s)", what, quote(name), other)
	} else {
		taken[name] = owner
	}
}

func (v *validator) forwarder(i int, f *ForwarderConfig, names map[string]string) {
	path := fmt.Sprintf("forwarders[%d]", i)
	v.required(path+".name", f.Name)
	v.uniqueName(path, "forwarder", f.Name, forwarderName, "lower-case letters, digits, - and _", names)
	for j, k := range f.Types {
		if k != event.KindLead && k != event.KindAppointment {
			v.add(fmt.Sprintf("%s.types[%d]", path, j), "must be %s or %s, got %s",
				event.KindLead, event.KindAppointment, quote(string(k)))
		}
	}
	for j, serial := range f.Chatbots {
		if _, ok := v.c.Chatbot(serial); !ok {
			v.add(fmt.Sprintf("%s.chatbots[%d]", path, j), "unknown chatbot %s (not a serial in neoagent.chatbots or neoagent.accounts[].chatbots)", quote(serial))
		}
	}
	for j, name := range f.Accounts {
		if _, ok := v.c.Account(name); !ok {
			v.add(fmt.Sprintf("%s.accounts[%d]", path, j), "unknown account %s (not a name in neoagent.accounts, nor %s with top-level neoagent.chatbots)",
				quote(name), event.DefaultAccount)
		}
	}
	if f.Filter != "" {
		prog, err := compileFilter(f.Filter)
		if err != nil {
			v.add(path+".filter", "jq %v", err)
		}
		f.filter = prog
	}
	if f.Concurrency < 1 || f.Concurrency > maxConcurrency {
		v.add(path+".concurrency", "must be between 1 and %d, got %d", maxConcurrency, f.Concurrency)
	}
	r := &f.Retry
	v.positive(path+".retry.initial_interval", r.InitialInterval)
	v.positive(path+".retry.max_elapsed", r.MaxElapsed)
	if r.MaxInterval < r.InitialInterval {
		v.add(path+".retry.max_interval", "must be at least retry.initial_interval (%s), got %s", r.InitialInterval, r.MaxInterval)
	}

	switch f.Type {
	case TypeWebhook:
		v.positive(path+".timeout", f.WebhookConfig().Timeout)
		v.owned(path, webhook.Check(f.WebhookConfig()))
	case TypeNATS:
		v.positive(path+".timeout", f.NATSConfig().Timeout)
		v.embeddedNATS(path, f.NATSConfig())
		v.owned(path, natsfwd.Check(f.NATSConfig()))
	case TypeSlack:
		v.positive(path+".timeout", f.SlackConfig().Timeout)
		if d := f.SlackConfig().Digest; d.Threshold > 0 && d.MaxItems == 0 {
			v.add(path+".digest.max_items", "must be between 1 and %d, got 0", slackfwd.MaxDigestItems)
		}
		v.owned(path, slackfwd.Check(f.SlackConfig()))
	case "":
		v.required(path+".type", f.Type)
	default:
		v.add(path+".type", "must be one of %s, %s, %s, got %s", TypeWebhook, TypeNATS, TypeSlack, quote(f.Type))
	}
}

// owned records the problems a forwarder's own Check found, under the forwarder's path.
func (v *validator) owned(path string, probs []forwarders.SettingError) {
	for _, p := range probs {
		v.add(path+"."+p.Key, "%s", p.Msg)
	}
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// natsServer checks the embedded server's keys: listen host:port, store_dir for
// JetStream (always on), user with password, at most one of user and token.
func (v *validator) natsServer() {
	s := v.c.NATSServer
	if s == nil {
		return
	}
	v.required("nats_server.listen", s.Listen)
	if s.Listen != "" {
		if _, port, err := net.SplitHostPort(s.Listen); err != nil || !validPort(port) {
			v.add("nats_server.listen", "must be host:port, got %s", quote(s.Listen))
		} else if s.Listen == v.c.HTTP.Listen && port != "0" {
			v.add("nats_server.listen", "is also http.listen; give each its own port")
		}
	}
	v.required("nats_server.store_dir", s.StoreDir)
	switch {
	case s.User != "" && s.Password == "":
		v.add("nats_server.password", "required with user")
	case s.Password != "" && s.User == "":
		v.add("nats_server.user", "required with password")
	}
	if s.Token != "" && s.User != "" {
		v.add("nats_server.token", "cannot be combined with user: clients present either user and password or a token")
	}
}

// embeddedNATS checks a nats forwarder with url: embedded: there must be an embedded
// server, and the forwarder takes its credentials from nats_server, so it sets none of
// its own, nor TLS (the embedded server does not speak it).
func (v *validator) embeddedNATS(path string, n natsfwd.Config) {
	if n.URL != EmbeddedNATS {
		for _, u := range strings.Split(n.URL, ",") {
			if strings.TrimSpace(u) == EmbeddedNATS {
				v.add(path+".url", "%s stands alone: it cannot be one of a list of servers", EmbeddedNATS)
			}
		}
		return
	}
	if v.c.NATSServer == nil {
		v.add(path+".url", "%s needs nats_server (the embedded NATS server) to be configured", EmbeddedNATS)
	}
	for _, k := range []struct{ key, val string }{
		{"creds_file", n.CredsFile}, {"nkey_file", n.NKeyFile}, {"user", n.User}, {"password", n.Password},
		{"token", n.Token}, {"tls.ca_file", n.TLS.CAFile}, {"tls.cert_file", n.TLS.CertFile}, {"tls.key_file", n.TLS.KeyFile},
	} {
		if k.val != "" {
			v.add(path+"."+k.key, "not used with url: %s: the forwarder presents nats_server's credentials", EmbeddedNATS)
		}
	}
	if n.TLS.InsecureSkipVerify {
		v.add(path+".tls.insecure_skip_verify", "not used with url: %s: the embedded server does not speak TLS", EmbeddedNATS)
	}
}
