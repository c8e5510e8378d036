// Package slack forwards events to a Slack channel for sales teams, through an incoming
// webhook or a bot token with chat.postMessage, as Block Kit messages that look different
// for a lead and for an appointment. Text that came from the public chat is escaped so
// that nobody can inject mentions such as <!channel> or disguised links.
package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"text/template"
	"time"
	"unicode"

	slackapi "github.com/slack-go/slack"
	"golang.org/x/time/rate"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// Defaults applied by New to zero Config fields.
const (
	// DefaultTimeout bounds one delivery attempt.
	DefaultTimeout = 10 * time.Second
	// DefaultRateLimit is the gap between messages: Slack allows about one message per
	// second per webhook or channel.
	DefaultRateLimit = time.Second
)

// transientAPIErrors are the chat.postMessage error strings worth retrying. Every other
// error string names a problem with the token, the channel or the message, which
// retrying cannot fix.
var transientAPIErrors = map[string]bool{
	"internal_error":      true,
	"fatal_error":         true,
	"ratelimited":         true,
	"rate_limited":        true,
	"request_timeout":     true,
	"service_unavailable": true,
	"team_added_to_org":   true,
}

// goneAPIErrors say the channel is archived, like a webhook's HTTP 410: no message can
// reach it until someone acts.
var goneAPIErrors = map[string]bool{
	"is_archived":         true,
	"channel_is_archived": true,
}

// templateProbe is a record with every field set, which New runs a template on to catch
// mistakes such as a misspelt field before the first delivery.
var templateProbe = event.NewCreated(event.Lead{
	Chatbot: "serial", ChatbotName: "Chatbot", Kind: event.KindLead, Name: "Name",
	Email: "name@example.com", Phone: "+1 555 0100", Content: "Content", SessionID: 1,
	URI: "https://example.com/", Count: 1, CreatedAt: time.Unix(0, 0),
})

// Config configures one Slack target: WebhookURL, or Token with Channel.
type Config struct {
	// Name is the forwarder's name; every error it returns names it.
	Name string
	// WebhookURL is an incoming webhook (https://hooks.slack.com/services/...). It is a
	// secret: it is never logged or put in an error.
	WebhookURL string
	// Token is a bot token (xoxb-...) used with Channel through chat.postMessage.
	Token string
	// Channel is the channel id or name the bot posts to; required with Token.
	Channel string
	// APIURL overrides Slack's Web API base URL (tests, proxies), e.g.
	// http://127.0.0.1:1234/api/. Only used with Token.
	APIURL string
	// Timezone is the IANA zone times are shown in; default UTC.
	Timezone string
	// Template, when set, is a Go text/template over TemplateData producing mrkdwn; its
	// output replaces the message body between the header and the context line.
	Template string
	// Timeout bounds one attempt; default 10s.
	Timeout time.Duration
	// InsecureSkipVerify turns off TLS certificate verification (test endpoints only);
	// New logs a warning when it is set.
	InsecureSkipVerify bool
	// RateLimit is the minimum gap between two messages; default 1s.
	RateLimit time.Duration
}

// Forwarder posts events to one Slack channel. It is safe for concurrent use; messages
// are spaced by the rate limit whichever goroutine sends them.
type Forwarder struct {
	name       string
	loc        *time.Location
	tmpl       *template.Template
	limiter    *rate.Limiter
	client     *http.Client // webhook mode; in token mode, the one slack-go uses
	transport  *http.Transport
	webhookURL string           // webhook mode when set
	api        *slackapi.Client // token mode otherwise
	apiURL     string
	channel    string
	logger     *slog.Logger
}

var (
	_ forwarders.Forwarder = (*Forwarder)(nil)
	_ forwarders.Closer    = (*Forwarder)(nil)
)

// New validates cfg, applies defaults and builds the forwarder. Errors name the offending
// field but never repeat the token or the webhook URL.
func New(cfg Config, logger *slog.Logger) (*Forwarder, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if strings.TrimSpace(cfg.Name) == "" {
		return nil, errors.New("slack: name: must not be empty")
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("slack %q: "+format, append([]any{cfg.Name}, args...)...)
	}
	apiURL := cfg.APIURL
	switch {
	case cfg.WebhookURL != "" && cfg.Token != "":
		return nil, fail("webhook_url and token: set one, not both")
	case cfg.WebhookURL != "":
		if err := httpx.CheckURL(cfg.WebhookURL); err != nil {
			return nil, fail("webhook_url: %w", err)
		}
		if cfg.Channel != "" || cfg.APIURL != "" {
			return nil, fail("channel and api_url: only used with token; a webhook posts to its own channel")
		}
	case cfg.Token != "":
		if strings.IndexFunc(cfg.Token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
			return nil, fail("token: must not contain spaces or control characters")
		}
		if strings.TrimSpace(cfg.Channel) == "" {
			return nil, fail("channel: required with token")
		}
		if apiURL == "" {
			apiURL = slackapi.APIURL
		}
		if err := httpx.CheckURL(apiURL); err != nil {
			return nil, fail("api_url: %w", err)
		}
		if !strings.HasSuffix(apiURL, "/") {
			apiURL += "/" // slack-go appends the method name
		}
	default:
		return nil, fail("webhook_url or token: one is required")
	}
	loc := time.UTC
	if cfg.Timezone != "" {
		var err error
		if loc, err = time.LoadLocation(cfg.Timezone); err != nil {
			return nil, fail("timezone: %w", err)
		}
	}
	var tmpl *template.Template
	if cfg.Template != "" {
		var err error
		if tmpl, err = template.New("slack").Parse(cfg.Template); err != nil {
			return nil, fail("template: %w", err)
		}
		// Field names are only checked when the template runs: run it once now.
		if err := tmpl.Execute(io.Discard, templateData(templateProbe, loc)); err != nil {
			return nil, fail("template: %w", err)
		}
	}
	if cfg.Timeout < 0 {
		return nil, fail("timeout: must not be negative, got %s", cfg.Timeout)
	}
	timeout := cfg.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if cfg.RateLimit < 0 {
		return nil, fail("rate_limit: must not be negative, got %s", cfg.RateLimit)
	}
	gap := cfg.RateLimit
	if gap == 0 {
		gap = DefaultRateLimit
	}

	client, transport := httpx.NewClient(timeout, cfg.InsecureSkipVerify)
	logger = logger.With("forwarder", cfg.Name)
	f := &Forwarder{
		name:       cfg.Name,
		loc:        loc,
		tmpl:       tmpl,
		limiter:    rate.NewLimiter(rate.Every(gap), 1),
		client:     client,
		transport:  transport,
		webhookURL: cfg.WebhookURL,
		apiURL:     apiURL,
		channel:    cfg.Channel,
		logger:     logger,
	}
	target := httpx.RedactURL(cfg.WebhookURL)
	if cfg.Token != "" {
		// slack-go puts the token in the chat.postMessage form body; Slack prefers the
		// Authorization header, so send it there too (the same token: Slack accepts both).
		client.Transport = bearer{token: cfg.Token, next: transport}
		f.api = slackapi.New(cfg.Token, slackapi.OptionAPIURL(apiURL), slackapi.OptionHTTPClient(client))
		target = httpx.RedactURL(apiURL)
	}
	if cfg.InsecureSkipVerify {
		logger.Warn("TLS certificate verification is disabled for this Slack target", "target", target)
	}
	return f, nil
}

// bearer adds the bot token as an Authorization header to every request.
type bearer struct {
	token string
	next  http.RoundTripper
}

// RoundTrip sends a copy of req carrying the token.
func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

// Name returns the forwarder's configured name.
func (f *Forwarder) Name() string { return f.name }

// Deliver renders ev (see BuildMessage), waits for the rate limit, and posts the message
// once. A 429 is retryable after Slack's Retry-After; network errors, 5xx and Slack's
// transient errors (internal_error, fatal_error, ratelimited...) are retryable; an
// archived channel (webhook 410, is_archived) is Gone; every other refusal
// (invalid_auth, channel_not_found, invalid_blocks, webhook 400/403/404...) is
// permanent, and its error carries Slack's error string.
func (f *Forwarder) Deliver(ctx context.Context, ev event.Event) error {
	msg, err := BuildMessage(ev, f.loc, f.tmpl)
	if err != nil {
		return forwarders.Permanent(forwarders.Errorf(f.name, "render event %s: %w", ev.ID, err))
	}
	if err := f.limiter.Wait(ctx); err != nil {
		return forwarders.Errorf(f.name, "waiting for the rate limit: %w", err)
	}
	if f.api != nil {
		err = f.postMessage(ctx, msg)
	} else {
		err = f.postWebhook(ctx, msg)
	}
	if err != nil {
		f.debug(ctx, ev, "slack refused the event", "error", err)
		return err
	}
	f.debug(ctx, ev, "slack took the event")
	return nil
}

// postWebhook POSTs msg to the incoming webhook. slack-go's PostWebhook reports a
// refusal as "slack server error: 404 Not Found", dropping the body where Slack names the
// problem (no_service, invalid_token, channel_is_archived...), so the request is made
// here, with slack-go's WebhookMessage as the payload and forwarders.CheckResponse
// classifying the answer like every other HTTP target.
func (f *Forwarder) postWebhook(ctx context.Context, msg Message) error {
	off := false
	body, err := json.Marshal(&slackapi.WebhookMessage{
		Text:        msg.Text,
		Blocks:      &msg.Blocks,
		UnfurlLinks: &off,
		UnfurlMedia: &off,
	})
	if err != nil {
		return forwarders.Permanent(forwarders.Errorf(f.name, "encode message: %w", err))
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, f.webhookURL, bytes.NewReader(body))
	if err != nil {
		return forwarders.Errorf(f.name, "webhook: %w", httpx.TransportError(f.webhookURL, err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := f.client.Do(req)
	if err != nil {
		return forwarders.Errorf(f.name, "webhook: %w", httpx.TransportError(f.webhookURL, err))
	}
	if err := forwarders.CheckResponse(resp); err != nil {
		return forwarders.Errorf(f.name, "webhook: %w", err)
	}
	return nil
}

// postMessage posts msg with chat.postMessage and classifies slack-go's error.
func (f *Forwarder) postMessage(ctx context.Context, msg Message) error {
	_, _, err := f.api.PostMessageContext(ctx, f.channel,
		slackapi.MsgOptionText(msg.Text, false), // already escaped
		slackapi.MsgOptionBlocks(msg.Blocks.BlockSet...),
		slackapi.MsgOptionDisableLinkUnfurl(),
		slackapi.MsgOptionDisableMediaUnfurl(),
	)
	if err == nil {
		return nil
	}
	var (
		limited  *slackapi.RateLimitedError
		refused  slackapi.SlackErrorResponse
		status   slackapi.StatusCodeError
		transfer *url.Error
	)
	switch {
	case errors.As(err, &limited):
		return forwarders.RetryAfter(forwarders.Errorf(f.name,
			"chat.postMessage: rate limited, retry after %s", limited.RetryAfter), limited.RetryAfter)
	case errors.As(err, &refused):
		e := forwarders.Errorf(f.name, "chat.postMessage: %s", describe(refused))
		switch {
		case transientAPIErrors[refused.Err]:
			return e
		case goneAPIErrors[refused.Err]:
			return forwarders.Gone(e)
		}
		return forwarders.Permanent(e)
	case errors.As(err, &status):
		e := forwarders.Errorf(f.name, "chat.postMessage: HTTP %d", status.Code)
		switch {
		case status.Code == http.StatusRequestTimeout, status.Code == http.StatusTooManyRequests, status.Code >= 500:
			return e
		case status.Code == http.StatusGone:
			return forwarders.Gone(e)
		}
		return forwarders.Permanent(e)
	case errors.As(err, &transfer):
		return forwarders.Errorf(f.name, "chat.postMessage: %w", httpx.TransportError(f.apiURL, err))
	}
	// An answer that is not Slack's JSON (a proxy's page, a cut connection): try again.
	return forwarders.Errorf(f.name, "chat.postMessage: %w", err)
}

// maxDetail bounds the diagnostics of a Slack refusal quoted in an error.
const maxDetail = 512

// describe is Slack's error string, followed by its diagnostics when it sent any (for
// invalid_blocks, which block and why).
func describe(r slackapi.SlackErrorResponse) string {
	details := r.ResponseMetadata.Messages
	if len(details) == 0 {
		return r.Err
	}
	d := strings.Join(details, "; ")
	if len(d) > maxDetail {
		d = strings.ToValidUTF8(d[:maxDetail], "") + "…"
	}
	return r.Err + " (" + d + ")"
}

// debug logs one attempt's outcome, naming the record but none of its personal fields.
func (f *Forwarder) debug(ctx context.Context, ev event.Event, msg string, args ...any) {
	if !f.logger.Enabled(ctx, slog.LevelDebug) {
		return
	}
	f.logger.DebugContext(ctx, msg, append(ev.LogAttrs(), args...)...)
}

// Close releases the forwarder's idle connections.
func (f *Forwarder) Close() error {
	f.transport.CloseIdleConnections()
	return nil
}
