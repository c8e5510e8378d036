// Package webhook forwards events to any HTTP endpoint, such as a CRM, as a POST carrying
// the CloudEvent, the bare lead, or what a jq transform makes of the CloudEvent (JSON or
// a form), optionally signed the Standard Webhooks way (https://www.standardwebhooks.com):
// webhook-id, webhook-timestamp and webhook-signature.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/httpx"
	"github.com/leadbridge/leadbridge/internal/jqprog"
)

// Body modes: what a delivery carries.
const (
	// BodyCloudEvent sends the whole event in CloudEvents JSON structured mode.
	BodyCloudEvent = "cloudevent"
	// BodyLead sends only the lead as JSON, with the event's metadata in ce-* headers
	// (CloudEvents binary mode).
	BodyLead = "lead"
)

// Encodings of a transform's output.
const (
	// EncodingJSON sends the output as JSON (the default).
	EncodingJSON = "json"
	// EncodingForm sends the output, an object of scalars, as
	// application/x-www-form-urlencoded.
	EncodingForm = "form"
)

// DefaultTimeout bounds one delivery attempt when Config.Timeout is zero.
const DefaultTimeout = 10 * time.Second

// MaxTransformBytes bounds the body a transform makes; a larger one dead-letters its
// event.
const MaxTransformBytes = 1 << 20

// Content types of the bodies.
const (
	contentTypeCloudEvent = "application/cloudevents+json"
	contentTypeJSON       = "application/json"
	contentTypeForm       = "application/x-www-form-urlencoded"
)

// secretPrefix marks a Standard Webhooks secret: the base64 of the key follows it.
const secretPrefix = "whsec_"

// Config configures one webhook target.
type Config struct {
	// Name is the forwarder's name; every error it returns names it.
	Name string
	// URL is the http or https endpoint events are POSTed to. It may carry a token in its
	// path or query, so it is never logged or put in an error whole.
	URL string
	// Headers are extra request headers (e.g. Authorization). They may not set
	// Content-Type, webhook-* or ce-* headers, which the forwarder owns.
	Headers map[string]string
	// Timeout bounds one attempt, from dialling to reading the response; default 10s.
	Timeout time.Duration
	// Body is BodyCloudEvent (the default) or BodyLead.
	Body string
	// Transform, when set, is a jq program run over the CloudEvent JSON (the body of
	// BodyCloudEvent); its one output is the body sent instead. It cannot be combined
	// with BodyLead. A run that fails, yields no value or several, or a value Encoding
	// cannot carry, dead-letters that event.
	Transform string
	// Encoding is how the transform's output is sent: EncodingJSON (the default) or
	// EncodingForm. It applies only with Transform.
	Encoding string
	// Secret, when set, signs every request (Standard Webhooks, HMAC-SHA256). A secret of
	// the form "whsec_<base64>" is the base64-decoded key; any other string is the key's
	// raw bytes.
	Secret string
	// InsecureSkipVerify turns off TLS certificate verification (self-signed test
	// endpoints only); New logs a warning when it is set.
	InsecureSkipVerify bool
	// Concurrency is how many deliveries the dispatcher keeps in flight to this target;
	// the forwarder keeps as many connections to it open between requests.
	Concurrency int
}

// Forwarder POSTs events to one webhook endpoint. It is safe for concurrent use.
type Forwarder struct {
	name      string
	url       string
	lead      bool
	transform *jqprog.Program // nil: no transform
	form      bool            // the transform's output is sent as a form
	headers   http.Header
	key       []byte // HMAC key; nil when requests are not signed
	signers   sync.Pool
	secrets   []string // the secret and every header value, kept out of errors
	timeout   time.Duration
	userAgent string
	transport *http.Transport
	logger    *slog.Logger
}

var (
	_ forwarders.Forwarder = (*Forwarder)(nil)
	_ forwarders.Closer    = (*Forwarder)(nil)
)

// New validates cfg, applies defaults and builds the forwarder. Errors name the offending
// field but never repeat a secret or the full URL.
func New(cfg Config, logger *slog.Logger) (*Forwarder, error) {
	logger, _, err := forwarders.Begin("webhook", cfg.Name, logger, Check(cfg))
	if err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	key, _ := signingKey(cfg.Secret) // Check accepted it
	var transform *jqprog.Program
	if cfg.Transform != "" {
		transform, _ = jqprog.Compile(cfg.Transform) // Check accepted it
	}

	// Requests go straight to the transport, as an http.Client configured by NewClient
	// would send them (it follows no redirect, and Deliver sets User-Agent), without
	// the copies of the headers and URL a Client makes of every request. Deliver bounds
	// each attempt with its own context: no timer and goroutine per request, as
	// Client.Timeout starts, and an error that says what happened.
	_, transport := httpx.NewClient(0, cfg.InsecureSkipVerify, cfg.Concurrency)
	logger = logger.With("forwarder", cfg.Name)
	if cfg.InsecureSkipVerify {
		logger.Warn("TLS certificate verification is disabled for this webhook",
			"target", httpx.RedactURL(cfg.URL))
	}
	secrets := []string{cfg.Secret, strings.TrimPrefix(cfg.Secret, secretPrefix)}
	for _, v := range cfg.Headers {
		secrets = append(secrets, v)
	}
	headers := canonicalHeaders(cfg.Headers)
	if auth, user, password, ok := basicAuth(cfg.URL); ok && headers.Get("Authorization") == "" {
		// What an http.Client sends for credentials in the URL; the user name is kept
		// out of errors too (a token often goes there).
		headers.Set("Authorization", auth)
		secrets = append(secrets, auth, user, password)
	}
	f := &Forwarder{
		name:      cfg.Name,
		secrets:   secrets,
		url:       cfg.URL,
		lead:      cfg.Body == BodyLead,
		transform: transform,
		form:      cfg.Encoding == EncodingForm,
		headers:   headers,
		key:       key,
		timeout:   timeout,
		userAgent: httpx.UserAgent(),
		transport: transport,
		logger:    logger,
	}
	f.signers.New = func() any { return &signer{mac: hmac.New(sha256.New, key)} }
	return f, nil
}

// Check reports every problem New would find in cfg's settings (the name aside), each
// under its config key: url an absolute http(s) URL, timeout not negative, body a known
// mode, transform a jq program that compiles (a syntax error gives its line and column)
// and not beside body: lead, encoding a known one and only with a transform, headers
// valid and not ones the forwarder sets itself (Content-Type, webhook-*, ce-*, in any
// case), secret a valid key. No message quotes a secret or a header value.
func Check(cfg Config) []forwarders.SettingError {
	var probs []forwarders.SettingError
	add := func(key, format string, args ...any) {
		probs = append(probs, forwarders.SettingError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	switch {
	case cfg.URL == "":
		add("url", "required")
	case httpx.CheckURL(cfg.URL) != nil:
		add("url", "must be an http or https URL, got %s", httpx.RedactURL(cfg.URL))
	}
	if cfg.Timeout < 0 {
		add("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	if cfg.Body != "" && cfg.Body != BodyCloudEvent && cfg.Body != BodyLead {
		add("body", "must be one of %s, %s, got %q", BodyCloudEvent, BodyLead, cfg.Body)
	}
	probs = append(probs, checkTransform(cfg)...)
	// In name order, to report the same problems in the same order on every run.
	for _, name := range slices.Sorted(maps.Keys(cfg.Headers)) {
		canon := http.CanonicalHeaderKey(name)
		switch {
		case !validHeaderName(name):
			add("headers", "invalid header name %q", name)
		case canon == "Content-Type" || strings.HasPrefix(canon, "Webhook-") || strings.HasPrefix(canon, "Ce-"):
			add("headers", "header %q is set by the forwarder and cannot be configured", name)
		case !validHeaderValue(cfg.Headers[name]):
			add("headers", "header %q: value contains control characters", name)
		}
	}
	if _, err := signingKey(cfg.Secret); err != nil {
		add("secret", "%v", err)
	}
	return probs
}

// checkTransform reports the problems of the transform and encoding keys.
func checkTransform(cfg Config) []forwarders.SettingError {
	var probs []forwarders.SettingError
	if cfg.Transform != "" {
		if _, err := jqprog.Compile(cfg.Transform); err != nil {
			probs = append(probs, forwarders.SettingError{Key: "transform", Msg: "jq " + err.Error()})
		}
		if cfg.Body == BodyLead {
			probs = append(probs, forwarders.SettingError{Key: "transform",
				Msg: "cannot be combined with body: lead (the transform runs over the CloudEvent and its output is the body); drop one of the two keys"})
		}
	}
	switch {
	case cfg.Encoding != "" && cfg.Encoding != EncodingJSON && cfg.Encoding != EncodingForm:
		probs = append(probs, forwarders.SettingError{Key: "encoding",
			Msg: fmt.Sprintf("must be one of %s, %s, got %q", EncodingJSON, EncodingForm, cfg.Encoding)})
	case cfg.Encoding != "" && cfg.Transform == "":
		probs = append(probs, forwarders.SettingError{Key: "encoding", Msg: "applies only with transform, which is not set"})
	}
	return probs
}

// canonicalHeaders turns headers Check accepted into an http.Header. Of names
// differing only in case, the last in byte order wins, the same on every run.
func canonicalHeaders(in map[string]string) http.Header {
	out := make(http.Header, len(in))
	for _, name := range slices.Sorted(maps.Keys(in)) {
		out.Set(name, in[name])
	}
	return out
}

// basicAuth is the Authorization header for the user name and password in rawURL, if
// it has any, as an http.Client would send it, with the user name and password.
func basicAuth(rawURL string) (auth, user, password string, ok bool) {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return "", "", "", false
	}
	user = u.User.Username()
	password, _ = u.User.Password()
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+password)), user, password, true
}

// validHeaderName reports whether s is an HTTP token (RFC 9110, section 5.6.2).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue reports whether s holds no control characters other than tab.
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// signingKey derives the HMAC key from a configured secret: nil for no secret, the
// base64-decoded part of "whsec_<base64>", or else the secret's bytes.
func signingKey(secret string) ([]byte, error) {
	if secret == "" {
		return nil, nil
	}
	encoded, ok := strings.CutPrefix(secret, secretPrefix)
	if !ok {
		return []byte(secret), nil
	}
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, errors.New(`the part after "whsec_" is not valid base64`)
	}
	if len(key) == 0 {
		return nil, errors.New(`the key after "whsec_" is empty`)
	}
	return key, nil
}

// Name is the forwarder's configured name.
func (f *Forwarder) Name() string { return f.name }

// Deliver makes one POST of ev. The webhook-id header is ev.ID on every attempt, so the
// target can drop repeats; webhook-timestamp is the time of this attempt; the signature
// covers the exact bytes sent, a transform's output included. A transform that fails on
// ev, or whose output the encoding cannot carry, is a permanent error whose reason holds
// none of the event's values (the context ending during the run is not). A 2xx answer is
// success; 408, 429, 5xx and network errors are retryable (Retry-After honoured); 410 is
// Gone; anything else, redirects included, is permanent. The error quotes the target's
// error code only when it is a plain code that is none of the forwarder's secrets or
// header values and no part of the lead (see forwarders.SafeCode).
func (f *Forwarder) Deliver(ctx context.Context, ev event.Event) error {
	body, contentType, err := f.body(ctx, ev)
	if err != nil {
		return err
	}
	// The timeout covers the request and reading the answer's body (CheckResponse).
	attemptCtx, cancel := context.WithTimeoutCause(ctx, f.timeout, errAttemptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(attemptCtx, http.MethodPost, f.url, bytes.NewReader(body))
	if err != nil {
		return forwarders.Errorf(f.name, "%w", httpx.TransportError(f.url, err))
	}
	req.Header = f.header(ev, body, contentType, time.Now())

	resp, err := f.transport.RoundTrip(req)
	if err != nil {
		if context.Cause(attemptCtx) == errAttemptTimeout && ctx.Err() == nil {
			err = fmt.Errorf("request to %s: timed out after %s: %w", httpx.RedactURL(f.url), f.timeout, context.DeadlineExceeded)
		} else {
			err = httpx.TransportError(f.url, err)
		}
		err = forwarders.Errorf(f.name, "%w", err)
		f.debug(ctx, ev, "webhook request failed", "error", err)
		return err
	}
	status := resp.StatusCode
	code := func(body []byte) string {
		// Built only for a failed answer: a success reads no code.
		private := append(slices.Clone(f.secrets), forwarders.PersonalData(ev)...)
		return forwarders.SafeCode(private)(body)
	}
	if err := forwarders.CheckResponse(resp, code); err != nil {
		err = forwarders.Errorf(f.name, "%w", err)
		f.debug(ctx, ev, "webhook refused the event", "status", status)
		return err
	}
	f.debug(ctx, ev, "webhook took the event", "status", status)
	return nil
}

// errAttemptTimeout is the cause of an attempt's context ending at the timeout.
var errAttemptTimeout = errors.New("webhook attempt timed out")

// body encodes what one delivery of ev carries, and its content type.
func (f *Forwarder) body(ctx context.Context, ev event.Event) ([]byte, string, error) {
	if f.lead {
		body, err := encode(ev.Data.AppendJSON)
		if err != nil {
			return nil, "", forwarders.Permanent(forwarders.Errorf(f.name, "encode event %s: %w", ev.ID, err))
		}
		return body, contentTypeJSON, nil
	}
	body, err := encode(ev.AppendJSON)
	if err != nil {
		return nil, "", forwarders.Permanent(forwarders.Errorf(f.name, "encode event %s: %w", ev.ID, err))
	}
	if f.transform == nil {
		return body, contentTypeCloudEvent, nil
	}
	body, contentType, err := f.transformed(ctx, body)
	switch {
	case err != nil && ctx.Err() != nil:
		// Stopped from outside (shutdown): not the event's fault, so it is retried.
		return nil, "", forwarders.Errorf(f.name, "event %s: transform: %w", ev.ID, err)
	case err != nil:
		return nil, "", forwarders.Permanent(forwarders.Errorf(f.name, "event %s: transform: %w", ev.ID, err))
	}
	return body, contentType, nil
}

// maxKeptBuf is the largest encoding buffer kept for the next body; a larger one (an
// exceptionally long lead) is left to the garbage collector.
const maxKeptBuf = 64 << 10

// encodeBufs are room to encode bodies in, used again and again.
var encodeBufs = sync.Pool{New: func() any { return new([]byte) }}

// encode is what appendJSON writes, in a slice of its own of just that length: the
// encoding runs in a buffer kept for the next, so the body costs one allocation of its
// size rather than a guess (too large, or grown several times).
func encode(appendJSON func([]byte) ([]byte, error)) ([]byte, error) {
	buf := encodeBufs.Get().(*[]byte)
	defer encodeBufs.Put(buf)
	out, err := appendJSON((*buf)[:0])
	if err != nil {
		return nil, err
	}
	body := bytes.Clone(out)
	if cap(out) <= maxKeptBuf {
		*buf = out[:0]
	}
	return body, nil
}

// errTooLarge is a transform's output over MaxTransformBytes.
var errTooLarge = fmt.Errorf("the output is larger than %d bytes", MaxTransformBytes)

// transformed runs the transform over the CloudEvent JSON evJSON and encodes its output.
func (f *Forwarder) transformed(ctx context.Context, evJSON []byte) ([]byte, string, error) {
	in, err := jqprog.Input(evJSON)
	if err != nil {
		return nil, "", err
	}
	out, err := f.transform.Run(ctx, in)
	if err != nil {
		return nil, "", err
	}
	body, contentType := jqprog.JSON(out), contentTypeJSON
	if f.form {
		if body, err = jqprog.Form(out); err != nil {
			return nil, "", err
		}
		contentType = contentTypeForm
	}
	if len(body) > MaxTransformBytes {
		return nil, "", errTooLarge
	}
	return body, contentType, nil
}

// debug logs one attempt's outcome, naming the record but none of its personal fields.
func (f *Forwarder) debug(ctx context.Context, ev event.Event, msg string, args ...any) {
	if !f.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	f.logger.DebugContext(ctx, msg, append(ev.LogAttrs(), args...)...)
}

// header builds a request's headers: User-Agent, the configured extras, then the headers
// the forwarder owns (Content-Type, ce-* in lead mode, webhook-*). The names are written
// canonical, as Header.Set would make them, and the values of one request share one
// slice: a delivery makes a handful of allocations for them, not one per header.
func (f *Forwarder) header(ev event.Event, body []byte, contentType string, now time.Time) http.Header {
	own := 4 // User-Agent, Content-Type, Webhook-Id, Webhook-Timestamp
	if f.lead {
		own += 6 // Ce-*
	}
	if f.key != nil {
		own++ // Webhook-Signature
	}
	h := hdr{h: make(http.Header, len(f.headers)+own), vals: make([]string, 0, own)}
	h.set("User-Agent", f.userAgent)
	for name, values := range f.headers {
		h.h[name] = values
	}
	h.set("Content-Type", contentType)
	if f.lead {
		h.set("Ce-Id", ev.ID)
		h.set("Ce-Type", ev.Type)
		h.set("Ce-Source", ev.Source)
		h.set("Ce-Specversion", ev.SpecVersion)
		h.set("Ce-Time", ev.Time.UTC().Format(time.RFC3339Nano))
		h.set("Ce-Subject", ev.Subject)
	}
	timestamp := strconv.FormatInt(now.Unix(), 10)
	h.set("Webhook-Id", ev.ID)
	h.set("Webhook-Timestamp", timestamp)
	if f.key != nil {
		s := f.signers.Get().(*signer)
		h.set("Webhook-Signature", s.sign(ev.ID, timestamp, body))
		f.signers.Put(s)
	}
	return h.h
}

// hdr fills a header whose values share one slice.
type hdr struct {
	h    http.Header
	vals []string
}

// set sets the canonical header name to the one value v.
func (h *hdr) set(name, v string) {
	h.vals = append(h.vals, v)
	n := len(h.vals)
	h.h[name] = h.vals[n-1 : n : n]
}

// signer signs requests with one HMAC, reset for each: making the HMAC anew would hash
// the key again for every request.
type signer struct {
	mac hash.Hash
	buf []byte
}

// sign computes a Standard Webhooks v1 signature: the base64 HMAC-SHA256 of the message
// id, the timestamp and the body joined by full stops.
func (s *signer) sign(id, timestamp string, body []byte) string {
	s.mac.Reset()
	s.buf = append(append(append(append(s.buf[:0], id...), '.'), timestamp...), '.')
	s.mac.Write(s.buf)
	s.mac.Write(body)
	sum := s.mac.Sum(s.buf[:0])
	n := len(sum)
	s.buf = append(sum, "v1,"...)
	s.buf = base64.StdEncoding.AppendEncode(s.buf, s.buf[:n])
	return string(s.buf[n:])
}

// Close releases the forwarder's idle connections.
func (f *Forwarder) Close() error {
	f.transport.CloseIdleConnections()
	return nil
}
