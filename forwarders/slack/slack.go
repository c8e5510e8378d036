// Package slack forwards events to a Slack channel for sales teams, through an incoming
// webhook or a bot token with chat.postMessage, as Block Kit messages that look different
// for a lead and for an appointment. Text that came from the public chat is escaped so
// that nobody can inject mentions such as <!channel> or disguised links.
package slack

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
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
	// DefaultDigestThreshold is the digest threshold config files get when they leave it
	// out (package config applies it; a Config built in Go without it has digests off).
	DefaultDigestThreshold = 5
	// DefaultDigestMaxItems is how many records a digest lists when Digest.MaxItems is 0.
	DefaultDigestMaxItems = 20
	// MaxDigestThreshold bounds Digest.Threshold: above it a burst is over a minute and a
	// half of single messages at Slack's one a second, and the Dispatcher may not even
	// hold that many due deliveries at once, so that the digest would never come.
	MaxDigestThreshold = 100
	// MaxDigestItems bounds Digest.MaxItems: a message holds at most 50 blocks, and a
	// digest takes one per record plus a header, a closing line and a line of ids.
	MaxDigestItems = 45
)

// knownErrors is Slack's documented error vocabulary: the error strings of
// chat.postMessage (its own and the ones every Web API method shares) and those of incoming
// webhooks. Only these are quoted in an error; anything else a target answers (a
// compatible server's words, a proxy's page, text echoing the message) is reported as an
// unknown error, since it may hold the lead's personal data or a secret.
var knownErrors = map[string]bool{}

func init() {
	for _, code := range strings.Fields(`
		access_denied accesslimited account_inactive as_user_not_supported
		cannot_reply_to_message channel_not_found deprecated_endpoint
		duplicate_channel_not_found duplicate_message_not_found ekm_access_denied
		enterprise_is_restricted fatal_error internal_error invalid_arg_name
		invalid_arguments invalid_array_arg invalid_auth invalid_blocks
		invalid_blocks_format invalid_charset invalid_form_data invalid_metadata_format
		invalid_metadata_schema invalid_post_type is_archived markdown_text_conflict
		message_limit_exceeded messages_tab_disabled metadata_must_be_sent_from_app
		metadata_too_large method_deprecated missing_post_type missing_scope
		msg_blocks_too_long msg_too_long no_permission no_text not_allowed_token_type
		not_authed not_in_channel org_login_required rate_limited ratelimited
		request_timeout restricted_action restricted_action_non_threadable_channel
		restricted_action_read_only_channel restricted_action_thread_only_channel
		service_unavailable slack_connect_file_link_sharing_blocked team_access_not_granted
		team_added_to_org token_expired token_revoked too_many_attachments
		too_many_contact_cards two_factor_setup_required

		action_prohibited channel_is_archived invalid_payload invalid_token
		missing_text_or_fallback_or_attachments no_active_hooks no_service no_team
		posting_to_general_channel_denied rollup_error team_disabled user_not_found`) {
		knownErrors[code] = true
	}
}

// unknownError stands for an error string outside knownErrors.
const unknownError = "unknown Slack error"

// knownCode is the forwarders.CodeFunc of Slack's webhook answers: the body's error code
// when it is in Slack's vocabulary.
func knownCode(body []byte) string {
	if c := forwarders.BodyCode(body); knownErrors[c] {
		return c
	}
	return ""
}

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
	"rollup_error":        true, // an incoming webhook's 500
}

// metadataErrors are Slack's refusals of a message's metadata alone (a user token may
// not send any; a format or size Slack will not take): the message goes again without
// it, its ids still in its context line.
var metadataErrors = map[string]bool{
	"invalid_metadata_format":        true,
	"invalid_metadata_schema":        true,
	"metadata_too_large":             true,
	"metadata_must_be_sent_from_app": true,
}

// metadataRefused marks an error whose Slack error string is in metadataErrors.
type metadataRefused struct{ error }

// Unwrap returns the refusal, classified like any other.
func (m metadataRefused) Unwrap() error { return m.error }

// refusal is e, marked as metadataRefused when code is in metadataErrors.
func refusal(code string, e error) error {
	if metadataErrors[code] {
		return metadataRefused{e}
	}
	return e
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
	Chatbot: "serial", ChatbotName: "Chatbot", Account: "account", Kind: event.KindLead, Name: "Name",
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
	// Digest sums up a burst in one message; the zero value turns digests off.
	Digest Digest
}

// Digest sums up a burst of records in one message instead of one message each. When
// more than Threshold deliveries are due at once, the Dispatcher hands the forwarder
// several at a time (see BatchSize) and it posts one message listing them (who, kind,
// chatbot, time) with a count of the rest, which follow in the next digests. Each record
// is acknowledged only once Slack took the message that names it.
type Digest struct {
	// Threshold: more deliveries due at once than this make a digest; 0 turns it off.
	Threshold int
	// MaxItems is the most records one digest lists, at most MaxDigestItems; 0 means
	// DefaultDigestMaxItems.
	MaxItems int
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
	digest     Digest // MaxItems set
	logger     *slog.Logger
	noMetadata atomic.Bool // Slack refused the metadata once: messages go without it
}

var (
	_ forwarders.Forwarder      = (*Forwarder)(nil)
	_ forwarders.BatchDeliverer = (*Forwarder)(nil)
	_ forwarders.Closer         = (*Forwarder)(nil)
)

// New validates cfg, applies defaults and builds the forwarder. Errors name the offending
// field but never repeat the token or the webhook URL.
func New(cfg Config, logger *slog.Logger) (*Forwarder, error) {
	logger, _, err := forwarders.Begin("slack", cfg.Name, logger, Check(cfg))
	if err != nil {
		return nil, err
	}
	apiURL := cfg.APIURL
	if cfg.Token != "" {
		if apiURL == "" {
			apiURL = slackapi.APIURL
		}
		if !strings.HasSuffix(apiURL, "/") {
			apiURL += "/" // slack-go appends the method name
		}
	}
	loc, tmpl, _ := parseLook(cfg)
	timeout := cmp.Or(cfg.Timeout, DefaultTimeout)
	gap := cmp.Or(cfg.RateLimit, DefaultRateLimit)

	client, transport := httpx.NewClient(timeout, cfg.InsecureSkipVerify, 0)
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
		digest:     Digest{Threshold: cfg.Digest.Threshold, MaxItems: cmp.Or(cfg.Digest.MaxItems, DefaultDigestMaxItems)},
		logger:     logger,
	}
	target := httpx.RedactURL(cfg.WebhookURL)
	if cfg.Token != "" {
		// slack-go puts the token in the chat.postMessage form body; Slack prefers the
		// Authorization header, so send it there too (the same token: Slack accepts both).
		client.Transport = bearer{token: cfg.Token, next: client.Transport}
		f.api = slackapi.New(cfg.Token, slackapi.OptionAPIURL(apiURL), slackapi.OptionHTTPClient(client))
		target = httpx.RedactURL(apiURL)
	}
	if cfg.InsecureSkipVerify {
		logger.Warn("TLS certificate verification is disabled for this Slack target", "target", target)
	}
	return f, nil
}

// Check reports every problem New would find in cfg's settings (the name aside), each
// under its config key: webhook_url (an http or https URL), or token with channel (and
// optionally api_url), not both; a known timezone; a template that runs on a sample
// record; no negative timeout or rate_limit; a digest threshold within 0 (off) to
// MaxDigestThreshold and max_items within 0 (the default) to MaxDigestItems. No message quotes the token or the
// URL.
func Check(cfg Config) []forwarders.SettingError {
	var probs []forwarders.SettingError
	add := func(key, format string, args ...any) {
		probs = append(probs, forwarders.SettingError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	hasURL, hasToken, hasChannel := cfg.WebhookURL != "", cfg.Token != "", strings.TrimSpace(cfg.Channel) != ""
	switch {
	case hasURL && hasToken:
		add("token", "cannot be combined with webhook_url: set webhook_url, or token and channel")
	case hasURL && hasChannel:
		add("channel", "cannot be combined with webhook_url: the incoming webhook picks the channel")
	case hasURL && cfg.APIURL != "":
		add("api_url", "only used with token: the incoming webhook is the whole target")
	case hasToken && !hasChannel:
		add("channel", "required with token")
	case hasChannel && !hasToken:
		add("token", "required with channel")
	case !hasURL && !hasToken:
		add("webhook_url", "required (or token and channel)")
	}
	if hasURL && httpx.CheckURL(cfg.WebhookURL) != nil {
		add("webhook_url", "must be an http or https URL")
	}
	if strings.ContainsFunc(cfg.Token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
		add("token", "must not contain spaces or control characters")
	}
	if cfg.APIURL != "" && httpx.CheckURL(cfg.APIURL) != nil {
		add("api_url", "must be an http or https URL, got %s", httpx.RedactURL(cfg.APIURL))
	}
	_, _, look := parseLook(cfg)
	probs = append(probs, look...)
	if cfg.Timeout < 0 {
		add("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	if cfg.RateLimit < 0 {
		add("rate_limit", "must not be negative, got %s", cfg.RateLimit)
	}
	if cfg.Digest.Threshold < 0 || cfg.Digest.Threshold > MaxDigestThreshold {
		add("digest.threshold", "must be between 0 (digests off) and %d, got %d", MaxDigestThreshold, cfg.Digest.Threshold)
	}
	if cfg.Digest.MaxItems < 0 || cfg.Digest.MaxItems > MaxDigestItems {
		add("digest.max_items", "must be between 1 and %d (a Slack message holds 50 blocks), got %d",
			MaxDigestItems, cfg.Digest.MaxItems)
	}
	return probs
}

// parseLook loads the time zone (UTC when unset) and parses the template (nil when
// unset), running it once on a sample record: field names are only checked when a
// template runs.
func parseLook(cfg Config) (*time.Location, *template.Template, []forwarders.SettingError) {
	var probs []forwarders.SettingError
	loc := time.UTC
	if cfg.Timezone != "" {
		if l, err := time.LoadLocation(cfg.Timezone); err == nil {
			loc = l
		} else {
			probs = append(probs, forwarders.SettingError{Key: "timezone",
				Msg: fmt.Sprintf("unknown time zone %q (want an IANA name such as Europe/Berlin)", cfg.Timezone)})
		}
	}
	if cfg.Template == "" {
		return loc, nil, probs
	}
	tmpl, err := template.New("slack").Parse(cfg.Template)
	if err == nil {
		err = tmpl.Execute(io.Discard, templateData(templateProbe, loc))
	}
	if err != nil {
		probs = append(probs, forwarders.SettingError{Key: "template", Msg: "invalid template: " + err.Error()})
	}
	return loc, tmpl, probs
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
	if err := f.post(ctx, msg); err != nil {
		f.debug(ctx, ev, "slack refused the event", "error", err)
		return err
	}
	f.debug(ctx, ev, "slack took the event")
	return nil
}

// BatchSize is the Dispatcher's question of how many of due deliveries (those in flight
// included) go in one attempt: 1 (a message each, as Deliver posts) while digests are off
// or due is at most the threshold; otherwise the burst shared evenly among the fewest
// digests of at most MaxItems (45 due with 20 a digest: three of 15). Since the burst is
// counted with its digests in flight, its last digest does not fall under the threshold
// into single messages.
func (f *Forwarder) BatchSize(due int) int {
	if f.digest.Threshold <= 0 || due <= f.digest.Threshold {
		return 1
	}
	digests := (due + f.digest.MaxItems - 1) / f.digest.MaxItems
	return (due + digests - 1) / digests
}

// DeliverBatch posts one digest naming every event of evs (see BuildDigest), with rest
// as the count of those still to follow, and classifies Slack's answer as Deliver does.
// The answer is every event's: all are taken together, or all retry (or are
// dead-lettered) together.
func (f *Forwarder) DeliverBatch(ctx context.Context, evs []event.Event, rest forwarders.Rest) []error {
	err := f.post(ctx, BuildDigest(evs, rest, f.loc))
	if f.logger.Enabled(ctx, slog.LevelDebug) {
		if err != nil {
			f.logger.DebugContext(ctx, "slack refused a digest", "events", len(evs), "error", err)
		} else {
			f.logger.DebugContext(ctx, "slack took a digest", "events", len(evs))
		}
	}
	if err == nil {
		return nil
	}
	errs := make([]error, len(evs))
	for i := range errs {
		errs[i] = err
	}
	return errs
}

// post waits for the rate limit and posts msg once, through the Web API or the incoming
// webhook. When Slack refuses the message's metadata alone (see metadataErrors), it
// posts it again without, and leaves the metadata out of this forwarder's messages from
// then on: the ids stay in the context lines.
func (f *Forwarder) post(ctx context.Context, msg Message) error {
	if f.noMetadata.Load() {
		msg.Metadata = nil
	}
	err := f.send(ctx, msg)
	var refused metadataRefused
	if msg.Metadata == nil || !errors.As(err, &refused) {
		return err
	}
	if f.noMetadata.CompareAndSwap(false, true) {
		f.logger.Warn("Slack refused the message metadata; messages go without it, their event ids in the context line only",
			"error", err)
	}
	msg.Metadata = nil
	return f.send(ctx, msg)
}

// send waits for the rate limit and posts msg once.
func (f *Forwarder) send(ctx context.Context, msg Message) error {
	if err := f.limiter.Wait(ctx); err != nil {
		return forwarders.Errorf(f.name, "waiting for the rate limit: %w", err)
	}
	if f.api != nil {
		return f.postMessage(ctx, msg)
	}
	return f.postWebhook(ctx, msg)
}

// postWebhook POSTs msg to the incoming webhook. slack-go's PostWebhook reports a
// refusal as "slack server error: 404 Not Found", dropping the body where Slack names the
// problem (no_service, invalid_token, channel_is_archived...), and takes any 200 as
// success, so the request is made here, with slack-go's WebhookMessage as the payload.
// A status other than 2xx is classified like every other HTTP target's; a 2xx must say it
// took the message (see webhookAnswer).
func (f *Forwarder) postWebhook(ctx context.Context, msg Message) error {
	off := false
	body, err := json.Marshal(&webhookPayload{
		WebhookMessage: slackapi.WebhookMessage{
			Text:        msg.Text,
			Blocks:      &msg.Blocks,
			UnfurlLinks: &off,
			UnfurlMedia: &off,
		},
		Metadata: msg.Metadata,
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
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var code string
		err := forwarders.CheckResponse(resp, func(body []byte) string { code = knownCode(body); return code })
		return refusal(code, forwarders.Errorf(f.name, "webhook: %w", err))
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	_ = resp.Body.Close()
	if err != nil {
		return forwarders.Errorf(f.name, "webhook: reading the answer: %w", httpx.TransportError(f.webhookURL, err))
	}
	if err := webhookAnswer(resp.StatusCode, answer); err != nil {
		return refusal(knownCode(answer), forwarders.Errorf(f.name, "webhook: %w", err))
	}
	return nil
}

// webhookPayload is what an incoming webhook is sent: slack-go's WebhookMessage, which
// lacks the message metadata, and the metadata.
type webhookPayload struct {
	slackapi.WebhookMessage
	Metadata *slackapi.SlackMetadata `json:"metadata,omitempty"`
}

// maxAnswer bounds how much of a webhook's 2xx answer is read.
const maxAnswer = 4 << 10

// webhookAnswer judges a 2xx answer of an incoming webhook. Slack answers "ok"; the
// answers taken as success are that text, a JSON object with "ok": true (or, lacking
// "ok", "success": true, as Rocket.Chat answers), and a 204 No Content. Any other answer,
// an empty 200 included, did not confirm the message: a proxy's page, or a compatible
// target saying "ok": false. It is classified by its Slack error string like a Web API
// refusal (transient errors retry, an archived channel is Gone); without a known one it
// is permanent, so the event waits in the dead letters instead of being posted again and
// again to a target that may have shown it.
func webhookAnswer(status int, body []byte) error {
	body = bytes.TrimSpace(body)
	if status == http.StatusNoContent || string(body) == "ok" {
		return nil
	}
	var answer struct {
		OK      *bool `json:"ok"`
		Success *bool `json:"success"`
	}
	if json.Unmarshal(body, &answer) == nil {
		if (answer.OK != nil && *answer.OK) || (answer.OK == nil && answer.Success != nil && *answer.Success) {
			return nil
		}
	}
	code := knownCode(body)
	e := forwarders.StatusText(status, code)
	if code == "" {
		e = fmt.Errorf("%w: the answer does not confirm the message (Slack answers \"ok\")", e)
	}
	return classify(code, e)
}

// classify marks e, a refusal carrying Slack's error string code (or ""), as retryable,
// Gone or permanent.
func classify(code string, e error) error {
	switch {
	case transientAPIErrors[code]:
		return e
	case goneAPIErrors[code]:
		return forwarders.Gone(e)
	}
	return forwarders.Permanent(e)
}

// postMessage posts msg with chat.postMessage and classifies slack-go's error.
func (f *Forwarder) postMessage(ctx context.Context, msg Message) error {
	opts := []slackapi.MsgOption{
		slackapi.MsgOptionText(msg.Text, false), // already escaped
		slackapi.MsgOptionBlocks(msg.Blocks.BlockSet...),
		slackapi.MsgOptionDisableLinkUnfurl(),
		slackapi.MsgOptionDisableMediaUnfurl(),
	}
	if msg.Metadata != nil {
		opts = append(opts, slackapi.MsgOptionMetadata(*msg.Metadata))
	}
	_, ts, err := f.api.PostMessageContext(ctx, f.channel, opts...)
	if err == nil {
		if ts == "" {
			// slack-go reports no error for "ok": false without an error string, nor for an
			// answer without "ok"; Slack confirms a message with its timestamp.
			return forwarders.Permanent(forwarders.Errorf(f.name,
				"chat.postMessage: the answer does not confirm the message (no ok and ts)"))
		}
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
		// Only the error string, and only a documented one: response_metadata.messages
		// quote the message back, the lead's name and email included.
		code := refused.Err
		if !knownErrors[code] {
			code = unknownError
		}
		return refusal(refused.Err, classify(refused.Err, forwarders.Errorf(f.name, "chat.postMessage: %s", code)))
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
	// An answer that is not Slack's JSON (a proxy's page, a cut connection, a Retry-After
	// that is no number): try again. The decoder's words may quote the answer: not kept.
	return forwarders.Errorf(f.name, "chat.postMessage: unreadable answer (%T)", err)
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
