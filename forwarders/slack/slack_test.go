package slack

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/time/rate"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/forwarderstest"
)

const (
	testToken   = "xoxb-1111-2222-TESTSECRETTOKEN"
	testChannel = "C0123SALES"
	webhookPath = "/services/T000/B000/XXXXSECRET"
	apiPath     = "/api/chat.postMessage"
)

// reply is one staged answer of the fake Slack.
type reply struct {
	status     int
	retryAfter string
	body       string
}

// posted is one message the fake Slack received.
type posted struct {
	header http.Header
	form   url.Values // chat.postMessage only
	msg    decoded
}

// fakeSlack stands in for Slack: an incoming webhook at webhookPath and the Web API's
// chat.postMessage at apiPath, which wants the bot token as a Bearer header. Each request
// takes the next staged reply; with none staged, Slack's success answer.
type fakeSlack struct {
	srv     *httptest.Server
	mu      sync.Mutex
	replies []reply
	got     []posted
}

func newFakeSlack(t *testing.T, replies ...reply) *fakeSlack {
	fs := &fakeSlack{replies: replies}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.srv.Close)
	return fs
}

func (fs *fakeSlack) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method", http.StatusMethodNotAllowed)
		return
	}
	p := posted{header: r.Header.Clone()}
	var ok reply
	switch r.URL.Path {
	case webhookPath:
		var m struct {
			Text     string   `json:"text"`
			Blocks   []any    `json:"blocks"`
			Metadata metadata `json:"metadata"`
		}
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &m) != nil {
			http.Error(w, "invalid_payload", http.StatusBadRequest)
			return
		}
		p.msg = decoded{Text: m.Text, Blocks: m.Blocks, Metadata: m.Metadata}
		ok = reply{status: http.StatusOK, body: "ok"}
	case apiPath:
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		p.form = r.PostForm
		if r.Header.Get("Authorization") != "Bearer "+testToken ||
			(p.form.Has("token") && p.form.Get("token") != testToken) {
			writeJSON(w, http.StatusOK, `{"ok":false,"error":"invalid_auth"}`)
			return
		}
		p.msg.Text = p.form.Get("text")
		if err := json.Unmarshal([]byte(p.form.Get("blocks")), &p.msg.Blocks); err != nil {
			writeJSON(w, http.StatusOK, `{"ok":false,"error":"invalid_blocks"}`)
			return
		}
		if p.form.Has("metadata") && json.Unmarshal([]byte(p.form.Get("metadata")), &p.msg.Metadata) != nil {
			writeJSON(w, http.StatusOK, `{"ok":false,"error":"invalid_metadata_format"}`)
			return
		}
		ok = reply{status: http.StatusOK, body: `{"ok":true,"channel":"` + testChannel + `","ts":"1700000000.000100"}`}
	default:
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	fs.mu.Lock()
	fs.got = append(fs.got, p)
	if len(fs.replies) > 0 {
		ok, fs.replies = fs.replies[0], fs.replies[1:]
	}
	fs.mu.Unlock()
	if ok.retryAfter != "" {
		w.Header().Set("Retry-After", ok.retryAfter)
	}
	if strings.HasPrefix(ok.body, "{") {
		writeJSON(w, ok.status, ok.body)
		return
	}
	w.Header().Set("Content-Type", "text/html")
	w.WriteHeader(ok.status)
	_, _ = io.WriteString(w, ok.body)
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body)
}

// received returns the messages posted so far.
func (fs *fakeSlack) received() []posted {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]posted(nil), fs.got...)
}

// mode builds a forwarder of one kind against a fake Slack; change adjusts its Config.
type mode struct {
	name string
	new  func(t *testing.T, base string, change func(*Config)) *Forwarder
}

var modes = []mode{
	{"webhook", func(t *testing.T, base string, change func(*Config)) *Forwarder {
		return mustNew(t, Config{Name: "sales", WebhookURL: base + webhookPath, RateLimit: time.Millisecond}, change)
	}},
	{"token", func(t *testing.T, base string, change func(*Config)) *Forwarder {
		return mustNew(t, Config{Name: "sales", Token: testToken, Channel: testChannel, APIURL: base + "/api/",
			RateLimit: time.Millisecond}, change)
	}},
}

func mustNew(t *testing.T, cfg Config, change func(*Config)) *Forwarder {
	t.Helper()
	if change != nil {
		change(&cfg)
	}
	f, err := New(cfg, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	return f
}

func deliver(t *testing.T, f *Forwarder, ev event.Event) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return f.Deliver(ctx, ev)
}

func TestDeliverMessage(t *testing.T) {
	appointment := sampleLead()
	lead := sampleLead()
	lead.Kind = event.KindLead
	lead.Name = "Bob"
	lead.Email, lead.Phone, lead.ChatbotName, lead.URI = "", "", "", ""
	lead.Content = "Pricing?"
	anonymous := lead
	anonymous.Name, anonymous.Content = "", ""

	for _, tc := range []struct {
		name       string
		ev         event.Event
		timezone   string
		header     string
		text       string
		fields     []string
		sections   []string
		wantsLinks bool
	}{
		{
			name:   "appointment",
			ev:     event.NewCreated(appointment),
			header: "📅 New appointment booked: Ada Lovelace",
			text:   "New appointment from Ada Lovelace via Main site",
			fields: []string{
				"*Email*\n<mailto:ada@example.com|ada@example.com>",
				"*Phone*\n<tel:+15550100|+1 555 0100>",
				"*Chatbot*\nMain site",
				"*When*\nWed 22 Nov 2023 03:13 UTC",
				"*Page*\nwww.example.com",
			},
			sections:   []string{">Please call\n>tomorrow"},
			wantsLinks: true,
		},
		{
			name:     "lead without contact details, in New York",
			ev:       event.NewCreated(lead),
			timezone: "America/New_York",
			header:   "🙋 New lead: Bob",
			text:     "New lead from Bob via 3254a9d0424c4806b9ea3d0763ccf000",
			fields: []string{
				"*Chatbot*\n3254a9d0424c4806b9ea3d0763ccf000",
				"*When*\nTue 21 Nov 2023 22:13 EST",
			},
			sections: []string{">Pricing?"},
		},
		{
			name:   "updated lead",
			ev:     event.NewUpdated(lead, lead.CreatedAt.Add(time.Hour)),
			header: "🙋 Lead updated: Bob",
			text:   "Updated lead from Bob via 3254a9d0424c4806b9ea3d0763ccf000",
			fields: []string{
				"*Chatbot*\n3254a9d0424c4806b9ea3d0763ccf000",
				"*When*\nWed 22 Nov 2023 03:13 UTC",
			},
			sections: []string{">Pricing?"},
		},
		{
			name:       "updated appointment",
			ev:         event.NewUpdated(appointment, appointment.CreatedAt.Add(time.Hour)),
			timezone:   "Asia/Tokyo",
			header:     "📅 Appointment updated: Ada Lovelace",
			text:       "Updated appointment from Ada Lovelace via Main site",
			fields:     []string{"*Email*\n<mailto:ada@example.com|ada@example.com>", "*Phone*\n<tel:+15550100|+1 555 0100>", "*Chatbot*\nMain site", "*When*\nWed 22 Nov 2023 12:13 JST", "*Page*\nwww.example.com"},
			sections:   []string{">Please call\n>tomorrow"},
			wantsLinks: true,
		},
		{
			name:   "no name, nothing written",
			ev:     event.NewCreated(anonymous),
			header: "🙋 New lead",
			text:   "New lead via 3254a9d0424c4806b9ea3d0763ccf000",
			fields: []string{
				"*Chatbot*\n3254a9d0424c4806b9ea3d0763ccf000",
				"*When*\nWed 22 Nov 2023 03:13 UTC",
			},
		},
	} {
		for _, m := range modes {
			t.Run(tc.name+"/"+m.name, func(t *testing.T) {
				fs := newFakeSlack(t)
				f := m.new(t, fs.srv.URL, func(c *Config) { c.Timezone = tc.timezone })
				require.NoError(t, deliver(t, f, tc.ev))
				got := fs.received()
				require.Len(t, got, 1)
				d := got[0].msg
				checkSafe(t, d)
				assert.Equal(t, tc.header, d.header())
				assert.Equal(t, tc.text, d.Text)
				assert.Equal(t, tc.fields, d.fields())
				assert.Equal(t, tc.sections, d.sections())
				assert.Equal(t, "Event "+tc.ev.ID+" · session 31313", d.context())
				assert.Equal(t, MetadataEventType, d.Metadata.EventType, "the id, for apps, in the metadata")
				assert.Equal(t, []string{tc.ev.ID}, d.Metadata.EventPayload.IDs)
				all := strings.Join(d.texts(), "\n")
				assert.Equal(t, tc.wantsLinks, strings.Contains(all, "<mailto:"))
				assert.Equal(t, tc.wantsLinks, strings.Contains(all, "<tel:"))
			})
		}
	}
}

func TestDeliverEscapesInjection(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fs := newFakeSlack(t)
			f := m.new(t, fs.srv.URL, nil)
			l := forwarderstest.SampleEvent().Data
			l.ChatbotName = "<!here|here>"
			l.URI = "<https://evil.example|bank>"
			require.NoError(t, deliver(t, f, event.NewCreated(l)))
			got := fs.received()
			require.Len(t, got, 1)
			d := got[0].msg
			checkSafe(t, d)
			for _, s := range d.texts() {
				assert.NotContains(t, s, "<!")
				assert.NotContains(t, s, "<http")
			}
			assert.Contains(t, d.sections(), ">Call me &lt;https://evil.example|here&gt; &amp; soon")
		})
	}
}

func TestDeliverTokenMode(t *testing.T) {
	fs := newFakeSlack(t)
	f := modes[1].new(t, fs.srv.URL, nil)
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
	got := fs.received()
	require.Len(t, got, 1)
	assert.Equal(t, "Bearer "+testToken, got[0].header.Get("Authorization"))
	assert.Equal(t, testChannel, got[0].form.Get("channel"))
	assert.Equal(t, "false", got[0].form.Get("unfurl_links"))
	assert.Equal(t, "false", got[0].form.Get("unfurl_media"))
	assert.NotEmpty(t, got[0].msg.Blocks)

	// Without the right token the fake answers invalid_auth, as Slack does.
	fs = newFakeSlack(t)
	f = mustNew(t, Config{Name: "sales", Token: "xoxb-wrong", Channel: testChannel, APIURL: fs.srv.URL + "/api"}, nil)
	err := deliver(t, f, forwarderstest.SampleEvent())
	require.Error(t, err)
	assert.True(t, forwarders.IsPermanent(err))
	assert.Contains(t, err.Error(), "invalid_auth")
	assert.NotContains(t, err.Error(), "xoxb-wrong")
}

func TestDeliverWebhookPayload(t *testing.T) {
	var body map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		assert.NoError(t, json.NewDecoder(r.Body).Decode(&body))
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	f := mustNew(t, Config{Name: "sales", WebhookURL: srv.URL + webhookPath}, nil)
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
	assert.Equal(t, false, body["unfurl_links"])
	assert.Equal(t, false, body["unfurl_media"])
	assert.NotContains(t, body, "channel", "a webhook posts to its own channel")
}

func TestDeliverTemplate(t *testing.T) {
	fs := newFakeSlack(t)
	f := modes[0].new(t, fs.srv.URL, func(c *Config) {
		c.Template = `{{if eq .Kind "appointment"}}:calendar:{{end}} *{{.Name}}* wrote: {{.Content}}`
	})
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
	got := fs.received()
	require.Len(t, got, 1)
	checkSafe(t, got[0].msg)
	assert.Equal(t, []string{":calendar: *Ada &lt;!channel&gt;* wrote: Call me &lt;https://evil.example|here&gt; &amp; soon"},
		got[0].msg.sections())
	assert.Empty(t, got[0].msg.fields())
}

func TestDeliverRetryAfter(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			body := "rate_limited"
			if m.name == "token" {
				body = `{"ok":false,"error":"ratelimited"}`
			}
			fs := newFakeSlack(t, reply{status: http.StatusTooManyRequests, retryAfter: "1", body: body})
			f := m.new(t, fs.srv.URL, nil)

			err := deliver(t, f, forwarderstest.SampleEvent())
			require.Error(t, err)
			assert.False(t, forwarders.IsPermanent(err))
			assert.Equal(t, time.Second, forwarders.RetryAfterOf(err))
			assert.Contains(t, err.Error(), `"sales"`)

			require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
			assert.Len(t, fs.received(), 2)
		})
	}
}

func TestDeliverRefusals(t *testing.T) {
	type want int
	const (
		retryable want = iota
		permanent
		gone
	)
	apiError := func(code string) reply {
		return reply{status: http.StatusOK, body: `{"ok":false,"error":"` + code + `"}`}
	}
	for _, tc := range []struct {
		mode  int // index in modes
		name  string
		reply reply
		want  want
		text  string // Slack's words the error must carry
	}{
		{1, "invalid_auth", apiError("invalid_auth"), permanent, "invalid_auth"},
		{1, "not_authed", apiError("not_authed"), permanent, "not_authed"},
		{1, "account_inactive", apiError("account_inactive"), permanent, "account_inactive"},
		{1, "token_revoked", apiError("token_revoked"), permanent, "token_revoked"},
		{1, "channel_not_found", apiError("channel_not_found"), permanent, "channel_not_found"},
		{1, "not_in_channel", apiError("not_in_channel"), permanent, "not_in_channel"},
		{1, "msg_too_long", apiError("msg_too_long"), permanent, "msg_too_long"},
		{1, "no_text", apiError("no_text"), permanent, "no_text"},
		{1, "invalid_blocks with details", reply{status: http.StatusOK,
			body: `{"ok":false,"error":"invalid_blocks","response_metadata":{"messages":["[ERROR] must be less than 151 characters [json-pointer:/blocks/0/text/text]"]}}`},
			permanent, "chat.postMessage: invalid_blocks"},
		{1, "ok:false without an error", reply{status: http.StatusOK, body: `{"ok":false}`}, permanent, "chat.postMessage"},
		{1, "an empty JSON answer", reply{status: http.StatusOK, body: `{}`}, permanent, "chat.postMessage"},
		{1, "an error outside Slack's vocabulary", apiError("Ada_Lovelace"), permanent, "chat.postMessage: unknown Slack error"},
		{1, "is_archived", apiError("is_archived"), gone, "is_archived"},
		{1, "internal_error", apiError("internal_error"), retryable, "internal_error"},
		{1, "fatal_error", apiError("fatal_error"), retryable, "fatal_error"},
		{1, "ratelimited without 429", apiError("ratelimited"), retryable, "ratelimited"},
		{1, "HTTP 503", reply{status: http.StatusServiceUnavailable, body: "busy"}, retryable, "HTTP 503"},
		{1, "HTTP 404", reply{status: http.StatusNotFound, body: "no"}, permanent, "HTTP 404"},
		{1, "not JSON", reply{status: http.StatusOK, body: "<html>proxy</html>"}, retryable, "chat.postMessage"},
		{0, "invalid_payload", reply{status: http.StatusBadRequest, body: "invalid_payload"}, permanent, "invalid_payload"},
		{0, "invalid_token", reply{status: http.StatusForbidden, body: "invalid_token"}, permanent, "invalid_token"},
		{0, "no_service", reply{status: http.StatusNotFound, body: "no_service"}, permanent, "no_service"},
		{0, "channel_not_found", reply{status: http.StatusNotFound, body: "channel_not_found"}, permanent, "channel_not_found"},
		{0, "channel_is_archived", reply{status: http.StatusGone, body: "channel_is_archived"}, gone, "channel_is_archived"},
		{0, "rollup_error", reply{status: http.StatusInternalServerError, body: "rollup_error"}, retryable, "rollup_error"},
		{0, "429 without Retry-After", reply{status: http.StatusTooManyRequests, body: "rate_limited"}, retryable, "rate_limited"},
		{0, "200 ok:false", apiError("invalid_blocks"), permanent, "HTTP 200: invalid_blocks"},
		{0, "200 ok:false transient", apiError("internal_error"), retryable, "HTTP 200: internal_error"},
		{0, "200 ok:false archived", apiError("channel_is_archived"), gone, "HTTP 200: channel_is_archived"},
		{0, "200 ok:false without an error", reply{status: http.StatusOK, body: `{"ok":false}`}, permanent, "HTTP 200"},
		{0, "200 with an empty body", reply{status: http.StatusOK}, permanent, "HTTP 200"},
		{0, "200 with a proxy's page", reply{status: http.StatusOK, body: "<html>sign in</html>"}, permanent, "HTTP 200"},
		{0, "200 with a text error", reply{status: http.StatusOK, body: "invalid_payload"}, permanent, "HTTP 200: invalid_payload"},
	} {
		m := modes[tc.mode]
		t.Run(m.name+"/"+tc.name, func(t *testing.T) {
			fs := newFakeSlack(t, tc.reply)
			f := m.new(t, fs.srv.URL, nil)
			err := deliver(t, f, forwarderstest.SampleEvent())
			require.Error(t, err)
			assert.Contains(t, err.Error(), `"sales"`)
			assert.Contains(t, err.Error(), tc.text)
			assert.NotContains(t, err.Error(), testToken)
			assert.NotContains(t, err.Error(), "XXXXSECRET")
			assert.Equal(t, tc.want != retryable, forwarders.IsPermanent(err), "permanent? %v", err)
			assert.Equal(t, tc.want == gone, forwarders.IsGone(err), "gone? %v", err)
		})
	}
}

// Slack's incoming webhook answers a message it took with the text "ok"; compatible
// targets (Mattermost, Rocket.Chat, proxies) answer in their own ways. Only an answer that
// says it took the message counts as delivered.
func TestDeliverWebhookAnswers(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reply reply
	}{
		{"Slack's ok", reply{status: http.StatusOK, body: "ok"}},
		{"ok with a newline", reply{status: http.StatusOK, body: "ok\n"}},
		{"JSON ok:true", reply{status: http.StatusOK, body: `{"ok":true}`}},
		{"JSON success:true", reply{status: http.StatusOK, body: `{"success":true}`}},
		{"204 No Content", reply{status: http.StatusNoContent}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := newFakeSlack(t, tc.reply)
			require.NoError(t, deliver(t, modes[0].new(t, fs.srv.URL, nil), forwarderstest.SampleEvent()))
			assert.Len(t, fs.received(), 1)
		})
	}
}

// Every request names leadbridge and its version, in both modes.
func TestDeliverUserAgent(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fs := newFakeSlack(t)
			require.NoError(t, deliver(t, m.new(t, fs.srv.URL, nil), forwarderstest.SampleEvent()))
			got := fs.received()
			require.Len(t, got, 1)
			assert.True(t, strings.HasPrefix(got[0].header.Get("User-Agent"), "leadbridge/"),
				"User-Agent %q", got[0].header.Get("User-Agent"))
		})
	}
}

func TestDeliverRateLimit(t *testing.T) {
	t.Run("spaces messages", func(t *testing.T) {
		fs := newFakeSlack(t)
		f := modes[0].new(t, fs.srv.URL, func(c *Config) { c.RateLimit = 100 * time.Millisecond })
		start := time.Now()
		require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
		require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
		assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
		assert.Len(t, fs.received(), 2)
	})
	t.Run("gives up with the context", func(t *testing.T) {
		fs := newFakeSlack(t)
		f := modes[0].new(t, fs.srv.URL, func(c *Config) { c.RateLimit = time.Hour })
		require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		err := f.Deliver(ctx, forwarderstest.SampleEvent())
		require.Error(t, err)
		assert.False(t, forwarders.IsPermanent(err))
		assert.Contains(t, err.Error(), `"sales"`)
		assert.Len(t, fs.received(), 1)
	})
}

func TestNew(t *testing.T) {
	webhook := "https://hooks.slack.com" + webhookPath
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no name", Config{WebhookURL: webhook}, "name"},
		{"no target", Config{Name: "sales"}, "webhook_url: required (or token and channel)"},
		{"both targets", Config{Name: "sales", WebhookURL: webhook, Token: testToken, Channel: testChannel}, "token: cannot be combined with webhook_url"},
		{"token without channel", Config{Name: "sales", Token: testToken}, "channel"},
		{"channel with webhook", Config{Name: "sales", WebhookURL: webhook, Channel: testChannel}, "channel"},
		{"webhook not http", Config{Name: "sales", WebhookURL: "ftp://hooks.slack.com" + webhookPath}, "webhook_url"},
		{"webhook without host", Config{Name: "sales", WebhookURL: "https://" + webhookPath}, "webhook_url"},
		{"api_url with webhook", Config{Name: "sales", WebhookURL: webhook, APIURL: "http://127.0.0.1:1/api"}, "api_url"},
		{"bad api_url", Config{Name: "sales", Token: testToken, Channel: testChannel, APIURL: "slack.com/api"}, "api_url"},
		{"token with space", Config{Name: "sales", Token: testToken + " x", Channel: testChannel}, "token"},
		{"bad timezone", Config{Name: "sales", WebhookURL: webhook, Timezone: "Mars/Olympus"}, "timezone"},
		{"bad template", Config{Name: "sales", WebhookURL: webhook, Template: "{{.Name"}, "template"},
		{"unknown template field", Config{Name: "sales", WebhookURL: webhook, Template: "{{.Nmae}}"}, "template"},
		{"negative timeout", Config{Name: "sales", WebhookURL: webhook, Timeout: -time.Second}, "timeout"},
		{"negative rate limit", Config{Name: "sales", WebhookURL: webhook, RateLimit: -time.Second}, "rate_limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NotContains(t, err.Error(), testToken)
			assert.NotContains(t, err.Error(), "XXXXSECRET")
		})
	}

	f, err := New(Config{Name: "sales", WebhookURL: webhook}, nil)
	require.NoError(t, err)
	assert.Equal(t, "sales", f.Name())
	assert.Equal(t, DefaultTimeout, f.client.Timeout)
	assert.Equal(t, rate.Every(DefaultRateLimit), f.limiter.Limit())
	assert.Equal(t, time.UTC, f.loc)

	f, err = New(Config{Name: "sales", Token: testToken, Channel: testChannel, APIURL: "http://127.0.0.1:1/api"}, nil)
	require.NoError(t, err)
	assert.Equal(t, "http://127.0.0.1:1/api/", f.apiURL, "slack-go appends the method: a slash is added")

	_, err = New(Config{Name: "sales", WebhookURL: webhook, Template: "{{index .Name 0}}"}, nil)
	assert.NoError(t, err, "New tries a template on a record with every field set")
}

// unreachable returns the base URL of a server that has stopped listening.
func unreachable(t *testing.T) string {
	srv := httptest.NewServer(http.NotFoundHandler())
	srv.Close()
	return srv.URL
}

func TestConformance(t *testing.T) {
	faults := map[string]map[forwarderstest.Fault]reply{
		"webhook": {
			forwarderstest.Retryable:   {status: http.StatusInternalServerError, body: "rollup_error"},
			forwarderstest.RateLimited: {status: http.StatusTooManyRequests, retryAfter: "2", body: "rate_limited"},
			forwarderstest.Permanent:   {status: http.StatusForbidden, body: "invalid_token"},
			forwarderstest.EchoSecret:  {status: http.StatusForbidden, body: "XXXXSECRET"},
			forwarderstest.EchoLead:    {status: http.StatusBadRequest, body: "Ada"},
			forwarderstest.PhoneWord:   {status: http.StatusBadRequest, body: forwarderstest.PhoneNumber},
		},
		"token": {
			forwarderstest.Retryable:   {status: http.StatusInternalServerError, body: "oops"},
			forwarderstest.RateLimited: {status: http.StatusTooManyRequests, retryAfter: "2", body: `{"ok":false,"error":"ratelimited"}`},
			forwarderstest.Permanent:   {status: http.StatusOK, body: `{"ok":false,"error":"invalid_auth"}`},
			forwarderstest.EchoSecret:  {status: http.StatusOK, body: `{"ok":false,"error":"` + testToken + `"}`},
			forwarderstest.EchoLead: {status: http.StatusOK, body: `{"ok":false,"error":"invalid_blocks","response_metadata":` +
				`{"messages":["[ERROR] Ada <!channel> ada@example.com +1 555 0100 [json-pointer:/blocks/0]"]}}`},
			forwarderstest.PhoneWord: {status: http.StatusOK, body: `{"ok":false,"error":"` + forwarderstest.PhoneNumber + `"}`},
		},
	}
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			forwarderstest.Run(t, forwarderstest.Harness{
				Name: "sales",
				New: func(t *testing.T, fault forwarderstest.Fault) forwarders.Forwarder {
					if fault == forwarderstest.Unreachable {
						return m.new(t, unreachable(t), nil)
					}
					var replies []reply
					if r, ok := faults[m.name][fault]; ok {
						replies = append(replies, r)
					}
					return m.new(t, newFakeSlack(t, replies...).srv.URL, nil)
				},
				Faults: []forwarderstest.Fault{forwarderstest.OK, forwarderstest.Retryable,
					forwarderstest.RateLimited, forwarderstest.Permanent, forwarderstest.Unreachable,
					forwarderstest.EchoSecret, forwarderstest.EchoLead, forwarderstest.PhoneWord},
				Secrets: []string{testToken, webhookPath, "XXXXSECRET"},
			})
		})
	}
}

// A Slack that refuses the metadata alone (a user token, a format or size it will not
// take) gets the message again without it, and this forwarder's later messages, digests
// too, go without: the ids stay in the context lines, and nothing is dead-lettered.
func TestMetadataRefusedGoesWithout(t *testing.T) {
	for _, tc := range []struct {
		mode    mode
		refusal reply
	}{
		{modes[0], reply{status: http.StatusBadRequest, body: "invalid_metadata_format"}},
		{modes[1], reply{status: http.StatusOK, body: `{"ok":false,"error":"metadata_must_be_sent_from_app"}`}},
	} {
		t.Run(tc.mode.name, func(t *testing.T) {
			fs := newFakeSlack(t, tc.refusal)
			f := tc.mode.new(t, fs.srv.URL, nil)
			ev := event.NewCreated(sampleLead())
			require.NoError(t, deliver(t, f, ev))
			other := sampleLead()
			other.SessionID++
			require.Empty(t, f.DeliverBatch(t.Context(), []event.Event{ev, event.NewCreated(other)}, forwarders.Rest{}))

			got := fs.received()
			require.Len(t, got, 3, "the refused message, the same without metadata, the digest")
			assert.Equal(t, []string{ev.ID}, got[0].msg.Metadata.EventPayload.IDs)
			for _, p := range got[1:] {
				assert.Empty(t, p.msg.Metadata.EventType, "no metadata once Slack refused it")
			}
			assert.Equal(t, "Event "+ev.ID+" · session 31313", got[1].msg.context())
			assert.Equal(t, []string{ev.ID, event.NewCreated(other).ID}, got[2].msg.listedIDs())
		})
	}
}
