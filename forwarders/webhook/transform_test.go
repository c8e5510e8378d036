package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/forwarderstest"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// A transform's output is the body, sent as JSON, signed over exactly those bytes, with
// the usual webhook-id.
func TestTransformSendsItsOutputAsJSON(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Secret: whsecSecret,
		Transform: `{fields: [{name: "email", value: .data.email}], id: .id, session: .data.session_id, type}`})
	ev := forwarderstest.SampleEvent()
	require.NoError(t, deliver(t, f, ev))

	req := tg.seen()[0]
	assert.Equal(t, "application/json", req.Header.Get("Content-Type"))
	assert.JSONEq(t, `{"fields":[{"name":"email","value":"ada@example.com"}],"id":"`+ev.ID+
		`","session":31313,"type":"neoagent.appointment.created"}`, string(req.Body))
	assert.Equal(t, ev.ID, req.Header.Get("webhook-id"))
	require.NoError(t, verifySignature(whsecSecret, req.Header, req.Body, time.Now(), 5*time.Minute))
	assert.Empty(t, req.Header.Get("ce-id"), "a transformed body is not a CloudEvent in binary mode")
}

// encoding: form sends an object of scalars form-encoded: numbers as jq prints them,
// booleans as words, null fields left out, and characters escaped.
func TestTransformFormEncoding(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Secret: rawSecret, Encoding: webhook.EncodingForm,
		Transform: `{email: .data.email, name: .data.name, count: .data.count, half: 0.5, yes: true, none: null,
		             note: "a&b=c d", big: 12345678901234567890, nan: nan, inf: infinite}`})
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))

	req := tg.seen()[0]
	assert.Equal(t, "application/x-www-form-urlencoded", req.Header.Get("Content-Type"))
	form, err := url.ParseQuery(string(req.Body))
	require.NoError(t, err)
	assert.Equal(t, url.Values{
		"email": {"ada@example.com"}, "name": {"Ada <!channel>"}, "count": {"2"}, "half": {"0.5"},
		"yes": {"true"}, "note": {"a&b=c d"}, "big": {"12345678901234567890"},
		"inf": {"1.7976931348623157e+308"}, // as jq prints it; NaN, which jq prints as null, is left out as null is
	}, form)
	require.NoError(t, verifySignature(rawSecret, req.Header, req.Body, time.Now(), 5*time.Minute))
}

// A transform that fails on an event, or whose output does not fit, dead-letters that
// event: the error is permanent, says why in words of its own, and quotes none of the
// lead's data (gojq's own messages would: `"ada@example.com" and 1 cannot be added`).
// Nothing is sent.
func TestTransformFailuresArePermanentAndQuoteNoData(t *testing.T) {
	cases := []struct {
		name, program, encoding, reason string
	}{
		{"type error", `.data.email + 1`, "", "failed at run time"},
		{"error with the data", `error(.data.email + " " + .data.phone)`, "", "failed at run time"},
		{"halt_error", `.data.name | halt_error`, "", "failed at run time"},
		{"no output", `.data | select(.email == "nobody")`, "", "no output"},
		{"two outputs", `.data.email, .data.name`, "", "more than one output"},
		{"form of a string", `.data.content`, webhook.EncodingForm, "not an object"},
		{"form with a list", `{emails: [.data.email]}`, webhook.EncodingForm, "array or object"},
		{"too large", `{padding: (.data.email * 100000)}`, "", "larger than"},
	}
	ev := forwarderstest.SampleEvent()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tg := newTarget(t, status(http.StatusOK))
			f := newForwarder(t, webhook.Config{URL: tg.URL, Transform: tc.program, Encoding: tc.encoding})
			err := deliver(t, f, ev)
			require.Error(t, err)
			assert.True(t, forwarders.IsPermanent(err), "a transform failure is permanent: %v", err)
			assert.Contains(t, err.Error(), tc.reason)
			assert.Contains(t, err.Error(), `"crm"`, "the error names the forwarder")
			assert.Contains(t, err.Error(), ev.ID, "the error names the event")
			for _, private := range forwarders.PersonalData(ev) {
				assert.NotContains(t, err.Error(), private)
			}
			assert.Empty(t, tg.seen(), "nothing is sent")
		})
	}
}

// A run stopped because the caller's context ended (shutdown) is not the event's fault:
// it is retried, not dead-lettered.
func TestTransformStoppedByTheCallerIsRetryable(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Transform: `reduce range(1e18) as $i (0; .)`})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := f.Deliver(ctx, forwarderstest.SampleEvent())
	require.Error(t, err)
	assert.False(t, forwarders.IsPermanent(err), "%v", err)
	assert.Empty(t, tg.seen())
}

func TestCheckTransform(t *testing.T) {
	cases := []struct {
		name string
		cfg  webhook.Config
		want []string // each must appear in the joined problems
	}{
		{"syntax error", webhook.Config{Transform: "{email: .data.email,\n  name: .data.name"},
			[]string{"transform: jq syntax error at line 2, column 19: unexpected EOF"}},
		{"unknown function", webhook.Config{Transform: `{email: .data.email | lower}`},
			[]string{"transform: jq function not defined: lower/0"}},
		{"with body lead", webhook.Config{Transform: `.data`, Body: webhook.BodyLead},
			[]string{"transform: cannot be combined with body: lead"}},
		{"unknown encoding", webhook.Config{Transform: `.data`, Encoding: "xml"},
			[]string{`encoding: must be one of json, form, got "xml"`}},
		{"encoding alone", webhook.Config{Encoding: webhook.EncodingForm},
			[]string{"encoding: applies only with transform"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name, tc.cfg.URL = "crm", "https://crm.example.com/hooks"
			probs := forwarders.JoinSettingErrors(webhook.Check(tc.cfg))
			require.Error(t, probs)
			for _, w := range tc.want {
				assert.Contains(t, probs.Error(), w)
			}
			_, err := webhook.New(tc.cfg, nil)
			assert.Error(t, err, "New refuses what Check reports")
		})
	}
	assert.Empty(t, webhook.Check(webhook.Config{Name: "crm", URL: "https://crm.example.com/hooks",
		Transform: `{email: .data.email}`, Encoding: webhook.EncodingForm}))
}

// The program sees no environment, so it cannot put a secret of the process in a body.
func TestTransformSeesNoEnvironment(t *testing.T) {
	t.Setenv("LB_TRANSFORM_SECRET", "SECRETFROMENV")
	tg := newTarget(t, status(http.StatusOK))
	f := newForwarder(t, webhook.Config{URL: tg.URL, Transform: `{a: $ENV.LB_TRANSFORM_SECRET, b: env.LB_TRANSFORM_SECRET}`})
	require.NoError(t, deliver(t, f, forwarderstest.SampleEvent()))
	assert.JSONEq(t, `{"a":null,"b":null}`, string(tg.seen()[0].Body))
}

// Through the Dispatcher and the real store: a transform that fails on one record
// dead-letters that record only, with its reason; the others are delivered.
func TestTransformRuntimeErrorDeadLettersOnlyThatEvent(t *testing.T) {
	tg := newTarget(t, status(http.StatusOK))
	st := leadtest.OpenStore(t, dedupe.Options{Path: filepath.Join(t.TempDir(), "s.db"),
		Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit, Route: leadtest.RouteTo("crm")})
	leads := leadtest.Leads("bot1", 1000, 5, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC))
	leads[2].Email = "not-an-email"
	_, err := st.Ingest(t.Context(), "bot1", leads)
	require.NoError(t, err)

	f := newForwarder(t, webhook.Config{Name: "crm", URL: tg.URL,
		Transform: `{email: (.data.email | if test("@") then . else error("bad email " + .) end), session: .data.session_id}`})
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: f,
		Retry: forwarders.RetryPolicy{InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond, MaxElapsed: time.Minute}}}}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	require.NoError(t, d.Drain(ctx))

	var sessions []int64
	for _, req := range tg.seen() {
		var body struct{ Session int64 }
		require.NoError(t, json.Unmarshal(req.Body, &body))
		sessions = append(sessions, body.Session)
	}
	assert.ElementsMatch(t, []int64{1000, 1001, 1003, 1004}, sessions, "the other four are delivered, once each")

	dead, err := st.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, int64(1002), dead[0].Event.Data.SessionID)
	assert.Equal(t, 1, dead[0].Attempts, "a permanent failure is not retried")
	assert.Contains(t, dead[0].LastError, "transform: the jq program failed at run time")
	assert.NotContains(t, dead[0].LastError, "not-an-email")
	assert.False(t, strings.Contains(dead[0].LastError, leads[2].Name))
	assert.Empty(t, leadtest.Pending(t, st, "crm"))
}
