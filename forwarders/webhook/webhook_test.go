package webhook_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/forwarderstest"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// A 32-byte key in the Standard Webhooks serialisation, and a plain-string secret.
const (
	whsecSecret = "whsec_c2VjcmV0LWtleS1mb3ItbGVhZGJyaWRnZS10ZXN0cyE="
	rawSecret   = "plain-shared-secret-SECRETRAW"
)

// request is what a test target saw of one delivery.
type request struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// target is an httptest webhook endpoint that records every request and answers each
// with the next scripted response (the last one repeats).
type target struct {
	*httptest.Server
	mu        sync.Mutex
	requests  []request
	responses []func(http.ResponseWriter)
}

func newTarget(t *testing.T, responses ...func(http.ResponseWriter)) *target {
	t.Helper()
	tg := &target{responses: responses}
	tg.Server = httptest.NewServer(http.HandlerFunc(tg.serve))
	t.Cleanup(tg.Close)
	return tg
}

func (tg *target) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	tg.mu.Lock()
	n := len(tg.requests)
	tg.requests = append(tg.requests, request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body})
	respond := tg.responses[min(n, len(tg.responses)-1)]
	tg.mu.Unlock()
	respond(w)
}

func (tg *target) seen() []request {
	tg.mu.Lock()
	defer tg.mu.Unlock()
	return append([]request(nil), tg.requests...)
}

// status answers with code, optional headers as name/value pairs, and a short body.
func status(code int, headerPairs ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(headerPairs); i += 2 {
			w.Header().Set(headerPairs[i], headerPairs[i+1])
		}
		w.WriteHeader(code)
		if code >= 300 {
			_, _ = fmt.Fprintf(w, `{"error":%q}`, http.StatusText(code))
		}
	}
}

func newForwarder(t testing.TB, cfg webhook.Config) *webhook.Forwarder {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "crm"
	}
	f, err := webhook.New(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func deliver(t *testing.T, f *webhook.Forwarder, ev event.Event) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.Deliver(ctx, ev)
}

// verifySignature checks a Standard Webhooks delivery the way a receiver would, written
// from the specification alone: read the three headers, refuse a timestamp further than
// tolerance from now, derive the key (base64 after "whsec_", else the secret's bytes),
// HMAC-SHA256 "id.timestamp.body", and compare in constant time with every v1 entry of
// the space-separated signature list.
func verifySignature(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	secs, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds", ts)
	}
	if d := now.Sub(time.Unix(secs, 0)).Abs(); d > tolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now", d)
	}
	key := []byte(secret)
	if encoded, ok := strings.CutPrefix(secret, "whsec_"); ok {
		if key, err = base64.StdEncoding.DecodeString(encoded); err != nil {
			return errors.New("secret is not valid base64")
		}
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, entry := range strings.Fields(sigs) {
		version, encoded, ok := strings.Cut(entry, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(encoded)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// The verifier itself must agree with the specification's published test vector before
// it can vouch for the forwarder.
func TestVerifierAcceptsSpecTestVector(t *testing.T) {
	h := http.Header{}
	h.Set("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek")
	h.Set("webhook-timestamp", "1614265330")
	h.Set("webhook-signature", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	body := []byte(`{"test": 2432232314}`)
	signedAt := time.Unix(1614265330, 0)

	require.NoError(t, verifySignature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, body, signedAt, 5*time.Minute))
	assert.Error(t, verifySignature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, []byte(`{"test": 2432232315}`), signedAt, 5*time.Minute))
	assert.Error(t, verifySignature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", h, body, signedAt.Add(10*time.Minute), 5*time.Minute))
}

func TestSignature(t *testing.T) {
	for _, secret := range []string{whsecSecret, rawSecret} {
		t.Run(secret[:6], func(t *testing.T) {
			tg := newTarget(t, status(http.StatusNoContent))
			f := newForwarder(t, webhook.Config{URL: tg.URL + "/hooks", Secret: secret})
			ev := forwarderstest.SampleEvent()
			require.NoError(t, deliver(t, f, ev))

			req := tg.seen()[0]
			assert.Equal(t, ev.ID, req.Header.Get("webhook-id"))
			assert.True(t, strings.HasPrefix(req.Header.Get("webhook-signature"), "v1,"))
			require.NoError(t, verifySignature(secret, req.Header, req.Body, time.Now(), 5*time.Minute))

			tampered := bytes.Replace(req.Body, []byte("ada@example.com"), []byte("eve@example.com"), 1)
			require.NotEqual(t, req.Body, tampered)
			assert.Error(t, verifySignature(secret, req.Header, tampered, time.Now(), 5*time.Minute), "a tampered body must fail")
			assert.Error(t, verifySignature("whsec_b3RoZXIta2V5", req.Header, req.Body, time.Now(), 5*time.Minute), "a wrong secret must fail")
			assert.Error(t, verifySignature(secret, req.Header, req.Body, time.Now().Add(time.Hour), 5*time.Minute), "a stale timestamp must fail")
		})
	}
}

func TestUnsignedStillSendsWebhookID(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL})
	ev := forwarderstest.SampleEvent()
	require.NoError(t, deliver(t, f, ev))

	req := tg.seen()[0]
	assert.Equal(t, ev.ID, req.Header.Get("webhook-id"))
	assert.NotEmpty(t, req.Header.Get("webhook-timestamp"))
	assert.Empty(t, req.Header.Get("webhook-signature"))
}

// The dispatcher retries by calling Deliver again: the idempotency key must not change.
func TestRetriesKeepTheWebhookID(t *testing.T) {
	tg := newTarget(t, status(http.StatusServiceUnavailable), status(http.StatusServiceUnavailable), status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Secret: whsecSecret})
	ev := forwarderstest.SampleEvent()

	for attempt := 1; attempt <= 2; attempt++ {
		err := deliver(t, f, ev)
		require.Error(t, err, "attempt %d", attempt)
		assert.False(t, forwarders.IsPermanent(err))
		assert.Contains(t, err.Error(), `forwarder "crm": HTTP 503`)
	}
	require.NoError(t, deliver(t, f, ev))

	reqs := tg.seen()
	require.Len(t, reqs, 3)
	for i, req := range reqs {
		assert.Equal(t, http.MethodPost, req.Method)
		assert.Equal(t, ev.ID, req.Header.Get("webhook-id"), "attempt %d", i+1)
		ts, err := strconv.ParseInt(req.Header.Get("webhook-timestamp"), 10, 64)
		require.NoError(t, err, "attempt %d", i+1)
		assert.Positive(t, ts)
		require.NoError(t, verifySignature(whsecSecret, req.Header, req.Body, time.Now(), 5*time.Minute))
	}
}

func TestStatusClassification(t *testing.T) {
	cases := []struct {
		name       string
		respond    func(http.ResponseWriter)
		ok         bool
		permanent  bool
		gone       bool
		retryAfter time.Duration
		message    string
	}{
		{name: "200", respond: status(http.StatusOK), ok: true},
		{name: "204", respond: status(http.StatusNoContent), ok: true},
		{name: "400 permanent", respond: status(http.StatusBadRequest), permanent: true,
			message: `forwarder "crm": HTTP 400`},
		{name: "401 permanent", respond: status(http.StatusUnauthorized), permanent: true,
			message: `forwarder "crm": HTTP 401`},
		{name: "410 gone", respond: status(http.StatusGone), permanent: true, gone: true,
			message: `forwarder "crm": HTTP 410`},
		{name: "429 retry after", respond: status(http.StatusTooManyRequests, "Retry-After", "7"),
			retryAfter: 7 * time.Second, message: `forwarder "crm": HTTP 429`},
		{name: "408 retryable", respond: status(http.StatusRequestTimeout), message: `forwarder "crm": HTTP 408`},
		{name: "502 retryable", respond: status(http.StatusBadGateway), message: `forwarder "crm": HTTP 502`},
		{name: "redirect not followed", respond: status(http.StatusFound, "Location", "/elsewhere"), permanent: true,
			message: `forwarder "crm": HTTP 302`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, tc.respond)
			f := newForwarder(t, webhook.Config{URL: tg.URL + "/hooks"})
			err := deliver(t, f, forwarderstest.SampleEvent())
			if tc.ok {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.True(t, strings.HasPrefix(err.Error(), tc.message), "error %q", err)
			assert.Equal(t, tc.permanent, forwarders.IsPermanent(err), "permanent: %v", err)
			assert.Equal(t, tc.gone, forwarders.IsGone(err), "gone: %v", err)
			assert.Equal(t, tc.retryAfter, forwarders.RetryAfterOf(err))
			assert.Len(t, tg.seen(), 1, "exactly one attempt, no redirect followed")
		})
	}
}

func TestTimeoutIsRetryableAndPrompt(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: unblock the handler, then close

	f := newForwarder(t, webhook.Config{URL: srv.URL + "/hooks/SECRETTOKEN", Timeout: 200 * time.Millisecond})
	start := time.Now()
	err := deliver(t, f, forwarderstest.SampleEvent())
	elapsed := time.Since(start)

	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "a timeout is retryable: %v", err)
	assert.Contains(t, err.Error(), `forwarder "crm"`)
	assert.NotContains(t, err.Error(), "SECRETTOKEN")
	assert.Contains(t, err.Error(), "request to "+srv.URL+"/[redacted]: timed out after 200ms", "says what happened, naming the target")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, elapsed, 5*time.Second, "the 200ms timeout must cut the attempt short")
}

// The timeout bounds reading the answer too: a target that sends a failure's headers and
// then stalls its body holds the attempt no longer than the timeout.
func TestTimeoutCoversTheAnswersBody(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"error":`))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	f := newForwarder(t, webhook.Config{URL: srv.URL, Timeout: 200 * time.Millisecond})
	start := time.Now()
	err := deliver(t, f, forwarderstest.SampleEvent())
	elapsed := time.Since(start)

	require.Error(t, err)
	assert.Equal(t, `forwarder "crm": HTTP 503`, err.Error())
	assert.False(t, forwarders.IsPermanent(err), "a 503 is retryable: %v", err)
	assert.Less(t, elapsed, 5*time.Second, "the 200ms timeout must cut the body read short")
}

func TestCancelledContextIsRetryable(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.Deliver(ctx, forwarderstest.SampleEvent())
	require.Error(t, err)
	assert.ErrorIs(t, err, context.Canceled)
	assert.False(t, forwarders.IsPermanent(err))
	assert.Contains(t, err.Error(), `forwarder "crm"`)
}

func TestCloudEventBody(t *testing.T) {
	tg := newTarget(t, status(http.StatusAccepted))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Body: webhook.BodyCloudEvent})
	ev := forwarderstest.SampleEvent()
	require.NoError(t, deliver(t, f, ev))

	req := tg.seen()[0]
	assert.Equal(t, "application/cloudevents+json", req.Header.Get("Content-Type"))
	assert.Equal(t, httpx.UserAgent(), req.Header.Get("User-Agent"))
	assert.Regexp(t, `^leadbridge/\S+$`, req.Header.Get("User-Agent"))
	assert.Empty(t, req.Header.Get("ce-id"), "structured mode carries metadata in the body")
	var got event.Event
	require.NoError(t, json.Unmarshal(req.Body, &got))
	assert.Equal(t, ev, got)
}

func TestLeadBody(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Body: webhook.BodyLead})
	ev := forwarderstest.SampleEvent()
	require.NoError(t, deliver(t, f, ev))

	req := tg.seen()[0]
	assert.Equal(t, "application/json", req.Header.Get("Content-Type"))
	var got event.Lead
	require.NoError(t, json.Unmarshal(req.Body, &got))
	assert.Equal(t, ev.Data, got)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(req.Body, &fields))
	assert.NotContains(t, fields, "specversion", "the bare lead, not the envelope")

	assert.Equal(t, ev.ID, req.Header.Get("ce-id"))
	assert.Equal(t, "neoagent.appointment.created", req.Header.Get("ce-type"))
	assert.Equal(t, "neoagent/3254a9d0424c4806b9ea3d0763ccf000", req.Header.Get("ce-source"))
	assert.Equal(t, "1.0", req.Header.Get("ce-specversion"))
	assert.Equal(t, "31313", req.Header.Get("ce-subject"))
	ceTime, err := time.Parse(time.RFC3339Nano, req.Header.Get("ce-time"))
	require.NoError(t, err)
	assert.True(t, ev.Time.Equal(ceTime))
	assert.Equal(t, ev.ID, req.Header.Get("webhook-id"))
}

func TestCustomHeaders(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Headers: map[string]string{
		"Authorization": "Bearer SECRETBEARER",
		"x-tenant":      "acme",
	}})
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))

	req := tg.seen()[0]
	assert.Equal(t, "Bearer SECRETBEARER", req.Header.Get("Authorization"))
	assert.Equal(t, "acme", req.Header.Get("X-Tenant"))
	assert.Equal(t, "application/cloudevents+json", req.Header.Get("Content-Type"))
}

func TestCheckHeaders(t *testing.T) {
	good := webhook.Config{Name: "crm", URL: "https://crm.example.com/"}
	cases := []struct {
		name    string
		headers map[string]string
		ok      bool
	}{
		{"none", nil, true},
		{"custom", map[string]string{"Authorization": "Bearer SECRETBEARER", "x-tenant": "acme", "X-Tab": "a\tb"}, true},
		{"content type", map[string]string{"CONTENT-TYPE": "text/plain"}, false},
		{"webhook header", map[string]string{"webhook-id": "x"}, false},
		{"ce header", map[string]string{"Ce-Type": "x"}, false},
		{"space in name", map[string]string{"X Bad": "x"}, false},
		{"empty name", map[string]string{"": "x"}, false},
		{"control character", map[string]string{"Authorization": "Bearer SECRETBEARER\x00"}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := good
			cfg.Headers = tc.headers
			probs := webhook.Check(cfg)
			f, newErr := webhook.New(cfg, nil)
			if tc.ok {
				require.Empty(t, probs)
				require.NoError(t, newErr, "New accepts what Check accepts")
				assert.NoError(t, f.Close())
				return
			}
			require.Len(t, probs, 1)
			assert.Equal(t, "headers", probs[0].Key)
			assert.NotContains(t, probs[0].Msg, "SECRET")
			require.Error(t, newErr)
			assert.Contains(t, newErr.Error(), probs[0].Error(), "New reports what Check does")
		})
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	valid := func() webhook.Config {
		return webhook.Config{Name: "crm", URL: "https://crm.example.com/hooks/SECRETTOKEN?key=SECRETQ"}
	}
	cases := []struct {
		name   string
		modify func(*webhook.Config)
		field  string
	}{
		{"empty name", func(c *webhook.Config) { c.Name = " " }, "name"},
		{"empty url", func(c *webhook.Config) { c.URL = "" }, "url"},
		{"unparsable url", func(c *webhook.Config) { c.URL = "https://crm.example.com/%zzSECRETTOKEN" }, "url"},
		{"relative url", func(c *webhook.Config) { c.URL = "/hooks/SECRETTOKEN" }, "url"},
		{"ftp url", func(c *webhook.Config) { c.URL = "ftp://crm.example.com/SECRETTOKEN" }, "url"},
		{"url without host", func(c *webhook.Config) { c.URL = "https:///hooks/SECRETTOKEN" }, "url"},
		{"bad body mode", func(c *webhook.Config) { c.Body = "xml" }, "body"},
		{"negative timeout", func(c *webhook.Config) { c.Timeout = -time.Second }, "timeout"},
		{"bad whsec base64", func(c *webhook.Config) { c.Secret = "whsec_SECRET!!notbase64" }, "secret"},
		{"empty whsec key", func(c *webhook.Config) { c.Secret = "whsec_" }, "secret"},
		{"content-type header", func(c *webhook.Config) {
			c.Headers = map[string]string{"content-type": "text/plain"}
		}, "headers"},
		{"signature header", func(c *webhook.Config) {
			c.Headers = map[string]string{"Webhook-Signature": "v1,SECRETFORGED"}
		}, "headers"},
		{"ce header", func(c *webhook.Config) { c.Headers = map[string]string{"ce-id": "x"} }, "headers"},
		{"invalid header name", func(c *webhook.Config) { c.Headers = map[string]string{"X Bad": "x"} }, "headers"},
		{"header value with newline", func(c *webhook.Config) {
			c.Headers = map[string]string{"Authorization": "Bearer SECRETBEARER\r\nX-Evil: 1"}
		}, "headers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := valid()
			tc.modify(&cfg)
			f, err := webhook.New(cfg, nil)
			require.Error(t, err)
			assert.Nil(t, f)
			assert.Contains(t, err.Error(), tc.field+":", "the error names the field")
			for _, secret := range []string{"SECRET", cfg.Secret} {
				if secret != "" && secret != "whsec_" {
					assert.NotContains(t, err.Error(), secret, "a secret leaked into the error")
				}
			}
		})
	}

	f, err := webhook.New(valid(), nil)
	require.NoError(t, err, "the base config is valid")
	assert.Equal(t, "crm", f.Name())
}

func TestTLSVerification(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/hooks/SECRETTOKEN?key=SECRETQ"

	t.Run("verified by default", func(t *testing.T) {
		f := newForwarder(t, webhook.Config{URL: url})
		err := deliver(t, f, forwarderstest.SampleEvent())
		require.Error(t, err, "a self-signed certificate must be refused")
		assert.Contains(t, err.Error(), "certificate")
		assert.False(t, forwarders.IsPermanent(err))
		assert.NotContains(t, err.Error(), "SECRETTOKEN")
		assert.NotContains(t, err.Error(), "SECRETQ")
	})
	t.Run("skip verify warns", func(t *testing.T) {
		var logs bytes.Buffer
		f, err := webhook.New(webhook.Config{Name: "crm", URL: url, InsecureSkipVerify: true},
			slog.New(slog.NewTextHandler(&logs, nil)))
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))

		assert.Contains(t, logs.String(), "level=WARN")
		assert.Contains(t, logs.String(), "forwarder=crm")
		assert.NotContains(t, logs.String(), "SECRETTOKEN")
		assert.NotContains(t, logs.String(), "SECRETQ")
	})
}

func TestLogsNameTheRecordNotThePerson(t *testing.T) {
	tg := newTarget(t, status(http.StatusBadRequest))
	var logs bytes.Buffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f, err := webhook.New(webhook.Config{Name: "crm", URL: tg.URL + "/hooks/SECRETTOKEN", Secret: rawSecret}, logger)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	ev := forwarderstest.SampleEvent()
	require.Error(t, deliver(t, f, ev))

	out := logs.String()
	for _, want := range []string{"forwarder=crm", "event_id=" + ev.ID, "chatbot=" + ev.Chatbot(), "kind=appointment", "session_id=31313"} {
		assert.Contains(t, out, want)
	}
	for _, secret := range []string{ev.Data.Name, ev.Data.Email, ev.Data.Phone, ev.Data.Content, "SECRETTOKEN", rawSecret} {
		assert.NotContains(t, out, secret)
	}
}

func TestConformance(t *testing.T) {
	const secret = "whsec_U0VDUkVUS0VZLWZvci10aGUtc2hhcmVkLXN1aXRl"
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	unreachable := closed.Addr().String()
	require.NoError(t, closed.Close())

	forwarderstest.Run(t, forwarderstest.Harness{
		Name: "crm",
		New: func(t *testing.T, fault forwarderstest.Fault) forwarders.Forwarder {
			host := unreachable
			if fault != forwarderstest.Unreachable {
				srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					switch fault {
					case forwarderstest.Retryable:
						status(http.StatusServiceUnavailable)(w)
					case forwarderstest.RateLimited:
						status(http.StatusTooManyRequests, "Retry-After", "2")(w)
					case forwarderstest.Permanent:
						status(http.StatusBadRequest)(w)
					case forwarderstest.EchoSecret:
						w.WriteHeader(http.StatusUnauthorized)
						_, _ = io.WriteString(w, r.Header.Get("X-Api-Key"))
					case forwarderstest.EchoLead:
						var ev event.Event
						_ = json.NewDecoder(r.Body).Decode(&ev)
						w.WriteHeader(http.StatusUnprocessableEntity)
						_, _ = fmt.Fprintf(w, `{"error":%q,"name":%q,"email":%q,"phone":%q}`,
							strings.Fields(ev.Data.Name)[0], ev.Data.Name, ev.Data.Email, ev.Data.Phone)
					case forwarderstest.PhoneWord:
						w.WriteHeader(http.StatusUnprocessableEntity)
						_, _ = io.WriteString(w, forwarderstest.PhoneNumber)
					default:
						status(http.StatusNoContent)(w)
					}
				}))
				t.Cleanup(srv.Close)
				host = srv.Listener.Addr().String()
			}
			return newForwarder(t, webhook.Config{
				Name:               "crm",
				URL:                "https://" + host + "/hooks/SECRETTOKEN?key=SECRETQ",
				Secret:             secret,
				Headers:            map[string]string{"X-Api-Key": "hdr-SECRET-value"},
				Timeout:            2 * time.Second,
				InsecureSkipVerify: true,
			})
		},
		Faults: []forwarderstest.Fault{
			forwarderstest.OK, forwarderstest.Retryable, forwarderstest.RateLimited,
			forwarderstest.Permanent, forwarderstest.Unreachable,
			forwarderstest.EchoSecret, forwarderstest.EchoLead, forwarderstest.PhoneWord,
		},
		Secrets: []string{secret, strings.TrimPrefix(secret, "whsec_"), "SECRETTOKEN", "SECRETQ", "hdr-SECRET-value"},
	})
}

func BenchmarkDeliver(b *testing.B) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(srv.Close)
	f := newForwarder(b, webhook.Config{URL: srv.URL + "/hooks", Secret: whsecSecret})
	ev := forwarderstest.SampleEvent()
	ctx := context.Background()

	b.ReportAllocs()
	for b.Loop() {
		if err := f.Deliver(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}

// A forwarder with several deliveries in flight keeps as many connections open: rounds of
// concurrent deliveries reuse them instead of dialling for most requests (with Go's
// default of two idle connections per host, most of each round dialled anew).
func TestConcurrentDeliveriesReuseConnections(t *testing.T) {
	const inFlight, rounds = 12, 8
	var (
		mu    sync.Mutex
		dials int
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		time.Sleep(5 * time.Millisecond) // keep the round's requests in flight together
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			mu.Lock()
			dials++
			mu.Unlock()
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f := newForwarder(t, webhook.Config{URL: srv.URL, Concurrency: inFlight})
	ev := forwarderstest.SampleEvent()
	for range rounds {
		var wg sync.WaitGroup
		for range inFlight {
			wg.Go(func() { assert.NoError(t, deliver(t, f, ev)) })
		}
		wg.Wait()
	}
	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, dials, 2*inFlight, "%d connections for %d requests", dials, inFlight*rounds)
}

// Credentials in the URL reach the target as basic auth, as an http.Client sends them,
// unless an Authorization header is configured.
func TestURLCredentialsAreBasicAuth(t *testing.T) {
	tg := newTarget(t, status(http.StatusNoContent))
	u, err := url.Parse(tg.URL)
	require.NoError(t, err)
	u.User, u.Path = url.UserPassword("crm-user", "pa55word"), "/hooks"
	f := newForwarder(t, webhook.Config{URL: u.String()})
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
	g := newForwarder(t, webhook.Config{URL: u.String(), Headers: map[string]string{"Authorization": "Bearer T0KEN"}})
	require.NoError(t, deliver(t, g, forwarderstest.SampleEvent()))

	seen := tg.seen()
	require.Len(t, seen, 2)
	user, password, ok := (&http.Request{Header: seen[0].Header}).BasicAuth()
	assert.True(t, ok, "basic auth sent")
	assert.Equal(t, "crm-user", user)
	assert.Equal(t, "pa55word", password)
	assert.Equal(t, "Bearer T0KEN", seen[1].Header.Get("Authorization"), "a configured header wins")
}

// Close lets go of the connections kept open to the target.
func TestCloseClosesIdleConnections(t *testing.T) {
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	f, err := webhook.New(webhook.Config{Name: "crm", URL: srv.URL}, nil)
	require.NoError(t, err)
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))

	require.NoError(t, f.Close())
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle connection was not closed")
	}
}

// The user name in the URL is a credential too (a token often goes there): a target that
// echoes it back as its error code never gets it into the delivery's error.
func TestURLUserNameStaysOutOfErrors(t *testing.T) {
	const token = "sktok_4f9a2c"
	tg := newTarget(t, func(w http.ResponseWriter) {
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = fmt.Fprintf(w, `{"error":%q}`, token)
	})
	u, err := url.Parse(tg.URL)
	require.NoError(t, err)
	u.User, u.Path = url.UserPassword(token, "pa55word"), "/hooks"
	f := newForwarder(t, webhook.Config{URL: u.String()})
	err = deliver(t, f, forwarderstest.SampleEvent())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "HTTP 401")
	assert.NotContains(t, err.Error(), token)
}
