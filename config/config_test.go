package config

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	slackfwd "github.com/leadbridge/leadbridge/forwarders/slack"
)

// head is a valid neoagent section (lines 1-5); hook a valid forwarders list (lines 6-9).
const (
	head = `neoagent:
  api_key: key123
  chatbots:
    - serial: bot1
    - serial: bot2
`
	hook = `forwarders:
  - name: crm
    type: webhook
    url: https://crm.example.com/hook
`
)

func parseOK(t *testing.T, yaml string) *Config {
	t.Helper()
	c, err := Parse([]byte(yaml), "test.yaml")
	require.NoError(t, err)
	return c
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each must appear in the error message
	}{
		{"unknown top-level key", head + hook + "pol:\n  interval: 1m\n",
			[]string{"pol: unknown key (line 10)"}},
		{"unknown nested key", head + hook + "poll:\n  intervl: 1m\n",
			[]string{"poll.intervl: unknown key (line 11)"}},
		{"admin token from an unset variable", head + hook + "http:\n  admin_token: ${LB_UNSET_ADMIN_TOKEN}\n",
			[]string{"http.admin_token: empty (is the environment variable set?) (line 11)"}},
		{"unknown key in a chatbot", "neoagent:\n  api_key: k\n  chatbots:\n    - serial: bot1\n      nmae: x\n" + hook,
			[]string{"neoagent.chatbots[0].nmae: unknown key (line 5)"}},
		{"unknown key in a forwarder", head + hook + "    colour: red\n",
			[]string{"forwarders[0].colour: unknown key (line 10)"}},
		{"key of another forwarder type", head + hook + "  - name: ops\n    type: webhook\n    url: https://x.example/\n    channel: '#ops'\n",
			[]string{"forwarders[1].channel: not a key of a webhook forwarder (line 13)"}},
		{"slack key on nats", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://127.0.0.1:4222\n    webhook_url: https://h\n",
			[]string{"forwarders[0].webhook_url: not a key of a nats forwarder (line 10)"}},
		{"unknown key in nested retry", head + hook + "    retry:\n      max_elapsd: 1h\n",
			[]string{"forwarders[0].retry.max_elapsd: unknown key (line 11)"}},
		{"duplicate key", head + hook + "poll:\n  interval: 1m\n  interval: 2m\n",
			[]string{"poll.interval: duplicate key (line 12)"}},
		{"mapping where a scalar belongs", head + hook + "poll:\n  interval: {a: 1}\n",
			[]string{"poll.interval: expected a duration such as 30s, got a mapping (line 11)"}},
		{"list where a mapping belongs", head + hook + "poll: [1, 2]\n",
			[]string{"poll: expected a mapping, got a list (line 10)"}},
		{"string where a list belongs", head + hook + "    types: lead\n",
			[]string{"forwarders[0].types: expected a list, got \"lead\" (line 10)"}},
		{"bool expected", head + hook + "dedupe:\n  emit_updates: 3\n",
			[]string{"dedupe.emit_updates: expected true or false, got \"3\" (line 11)"}},
		{"integer expected", head + hook + "    concurrency: many\n",
			[]string{"forwarders[0].concurrency: expected an integer, got \"many\" (line 10)"}},
		{"number expected", head + hook + "poll:\n  jitter: lots\n",
			[]string{"poll.jitter: expected a number, got \"lots\" (line 11)"}},
		{"string expected", head + hook + "store:\n  path: [a]\n",
			[]string{"store.path: expected a string, got a list (line 11)"}},
		{"bad duration", "neoagent:\n  api_key: k\n  chatbots: [{serial: bot1}]\n  timeout: abc\n" + hook,
			[]string{`neoagent.timeout: invalid duration "abc" (line 4)`}},
		{"duration without unit", head + hook + "shutdown:\n  grace: 30\n",
			[]string{`shutdown.grace: invalid duration "30" (line 11)`}},
		{"empty api key from an unset variable", "neoagent:\n  api_key: ${LEADBRIDGE_TEST_UNSET}\n  chatbots: [{serial: bot1}]\n" + hook,
			[]string{"neoagent.api_key: empty (is the environment variable set?) (line 2)"}},
		{"missing api key", "neoagent:\n  chatbots: [{serial: bot1}]\n" + hook,
			[]string{"neoagent.api_key: required (line 1)"}},
		{"no chatbots", "neoagent:\n  api_key: k\n" + hook,
			[]string{"neoagent.chatbots: at least one chatbot is required (line 1)"}},
		{"empty serial", "neoagent:\n  api_key: k\n  chatbots:\n    - serial: \"${LEADBRIDGE_TEST_UNSET}\"\n" + hook,
			[]string{"neoagent.chatbots[0].serial: empty (is the environment variable set?) (line 4)"}},
		{"duplicate serial", head + "    - serial: bot1\n" + hook,
			[]string{`neoagent.chatbots[2].serial: duplicate serial "bot1" (also neoagent.chatbots[0]) (line 6)`}},
		{"bad serial", head + "    - serial: bot 3\n" + hook,
			[]string{`neoagent.chatbots[2].serial: must be letters, digits, - and _, got "bot 3" (line 6)`}},
		{"bad base url", head + "  base_url: ftp://app.neoagent.co\n" + hook,
			[]string{"neoagent.base_url: must be an http or https URL, got ftp://app.neoagent.co (line 6)"}},
		{"no forwarders", head,
			[]string{"forwarders: at least one forwarder is required"}},
		{"empty forwarders list", head + "forwarders: []\n",
			[]string{"forwarders: at least one forwarder is required (line 6)"}},
		{"duplicate forwarder names", head + hook + "  - name: crm\n    type: webhook\n    url: https://b.example/\n",
			[]string{`forwarders[1].name: duplicate forwarder name "crm" (also forwarders[0]) (line 10)`}},
		{"bad forwarder name", head + "forwarders:\n  - name: CRM Main\n    type: webhook\n    url: https://b.example/\n",
			[]string{`forwarders[0].name: must be lower-case letters, digits, - and _, got "CRM Main" (line 7)`}},
		{"missing forwarder name", head + "forwarders:\n  - type: webhook\n    url: https://b.example/\n",
			[]string{"forwarders[0].name: required (line 7)"}},
		{"bad forwarder type", head + "forwarders:\n  - name: mail\n    type: smtp\n    host: mx\n",
			[]string{`forwarders[0].type: must be one of webhook, nats, slack, got "smtp" (line 8)`, "forwarders[0].host: unknown key (line 9)"}},
		{"missing forwarder type", head + "forwarders:\n  - name: x\n    url: https://b.example/\n",
			[]string{"forwarders[0].type: required (line 7)"}},
		{"webhook missing url", head + "forwarders:\n  - name: crm\n    type: webhook\n",
			[]string{"forwarders[0].url: required (line 7)"}},
		{"webhook bad url", head + "forwarders:\n  - name: crm\n    type: webhook\n    url: crm.example.com/hook\n",
			[]string{"forwarders[0].url: must be an http or https URL, got [redacted-url] (line 9)"}},
		{"webhook bad body", head + hook + "    body: xml\n",
			[]string{`forwarders[0].body: must be one of cloudevent, lead, got "xml" (line 10)`}},
		{"webhook bad header name", head + hook + "    headers:\n      \"X Bad\": v\n",
			[]string{`forwarders[0].headers: invalid header name "X Bad" (line 10)`}},
		{"webhook content-type header", head + hook + "    headers:\n      content-type: text/plain\n",
			[]string{`forwarders[0].headers: header "content-type" is set by the forwarder and cannot be configured (line 10)`}},
		{"webhook signature header", head + hook + "    headers:\n      Webhook-Signature: v1,x\n",
			[]string{`forwarders[0].headers: header "Webhook-Signature" is set by the forwarder and cannot be configured (line 10)`}},
		{"webhook ce header", head + hook + "    headers:\n      CE-ID: x\n",
			[]string{`forwarders[0].headers: header "CE-ID" is set by the forwarder and cannot be configured (line 10)`}},
		{"webhook header value with control character", head + hook + "    headers:\n      Authorization: \"Bearer x\\r\\nX-Evil: 1\"\n",
			[]string{`forwarders[0].headers: header "Authorization": value contains control characters (line 10)`}},
		{"webhook bad whsec secret", head + hook + "    secret: whsec_not!base64\n",
			[]string{`forwarders[0].secret: the part after "whsec_" is not valid base64 (line 10)`}},
		{"webhook empty whsec key", head + hook + "    secret: whsec_\n",
			[]string{`forwarders[0].secret: the key after "whsec_" is empty (line 10)`}},
		{"webhook empty secret", head + hook + "    secret: ${LEADBRIDGE_TEST_UNSET}\n",
			[]string{"forwarders[0].secret: empty (is the environment variable set?) (line 10)"}},
		{"nats missing url", head + "forwarders:\n  - name: bus\n    type: nats\n",
			[]string{"forwarders[0].url: required (line 7)"}},
		{"nats bad url in list", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222, http://b:4222\n",
			[]string{"forwarders[0].url: must be nats://, tls://, ws:// or wss:// URLs (or host:port) separated by commas, got http://b:4222 (line 9)"}},
		{"nats empty url in list", head + "forwarders:\n  - name: bus\n    type: nats\n    url: \"nats://a:4222,\"\n",
			[]string{"forwarders[0].url: entry 2 of the comma-separated list is empty (line 9)"}},
		{"nats bad stream name", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    jetstream: true\n    stream: leads.all\n",
			[]string{`forwarders[0].stream: "leads.all" is not a valid stream name (no whitespace, ., *, >, / or \) (line 11)`}},
		{"nats unknown template function", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    subject: \"x.{{upper .Kind}}\"\n",
			[]string{`forwarders[0].subject: invalid template: template: subject:1: function "upper" not defined (line 10)`}},
		{"nats bad subject template", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    subject: \"x.{{.Chatbot\"\n",
			[]string{"forwarders[0].subject: invalid template: template: subject:1: unclosed action (line 10)"}},
		{"nats stream without jetstream", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    stream: S\n",
			[]string{"forwarders[0].stream: requires jetstream: true (line 10)"}},
		{"nats user without password", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    user: u\n",
			[]string{"forwarders[0].password: required with user (line 7)"}},
		{"nats password without user", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    password: p\n",
			[]string{"forwarders[0].user: required with password (line 7)"}},
		{"nats two auth methods", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    creds_file: /c\n    token: t\n",
			[]string{"forwarders[0].token: cannot be combined with creds_file: set at most one of creds_file, nkey_file, user, token (line 11)"}},
		{"nats cert without key", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    tls:\n      cert_file: /c\n",
			[]string{"forwarders[0].tls: cert_file and key_file must be set together (line 10)"}},
		{"nats unknown tls key", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    tls:\n      ca: /c\n",
			[]string{"forwarders[0].tls.ca: unknown key (line 11)"}},
		{"slack with webhook_url and token", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/services/T/B/X\n    token: xoxb-1\n    channel: C1\n",
			[]string{"forwarders[0].token: cannot be combined with webhook_url: set webhook_url, or token and channel (line 10)"}},
		{"slack with neither", head + "forwarders:\n  - name: s\n    type: slack\n",
			[]string{"forwarders[0].webhook_url: required (or token and channel) (line 7)"}},
		{"slack token without channel", head + "forwarders:\n  - name: s\n    type: slack\n    token: xoxb-1\n",
			[]string{"forwarders[0].channel: required with token (line 7)"}},
		{"slack bad timezone", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    timezone: Mars/Olympus\n",
			[]string{`forwarders[0].timezone: unknown time zone "Mars/Olympus" (want an IANA name such as Europe/Berlin) (line 10)`}},
		{"slack bad template", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    template: \"{{if}}\"\n",
			[]string{"forwarders[0].template: invalid template: template: slack:1: missing value for if (line 10)"}},
		{"slack bad webhook url", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: hooks.slack.com/x\n",
			[]string{"forwarders[0].webhook_url: must be an http or https URL (line 9)"}},
		{"slack digest out of range", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    digest: {threshold: -1, max_items: 50}\n",
			[]string{"forwarders[0].digest.threshold: must be between 0 (digests off) and 100, got -1 (line 10)",
				"forwarders[0].digest.max_items: must be between 1 and 45 (a Slack message holds 50 blocks), got 50 (line 10)"}},
		{"slack digest max_items zero", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    digest:\n      max_items: 0\n",
			[]string{"forwarders[0].digest.max_items: must be between 1 and 45, got 0 (line 11)"}},
		{"slack digest unknown key", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    digest: {threshold: 5, items: 3}\n",
			[]string{"forwarders[0].digest.items: unknown key (line 10)"}},
		{"digest on a webhook", head + hook + "    digest: {threshold: 5}\n",
			[]string{"forwarders[0].digest: not a key of a webhook forwarder (line 10)"}},
		{"types filter bad value", head + hook + "    types: [lead, meeting]\n",
			[]string{`forwarders[0].types[1]: must be lead or appointment, got "meeting" (line 10)`}},
		{"chatbots filter unknown serial", head + hook + "    chatbots: [bot1, bot9]\n",
			[]string{`forwarders[0].chatbots[1]: unknown chatbot "bot9" (not a serial in neoagent.chatbots or neoagent.accounts[].chatbots) (line 10)`}},
		{"concurrency zero", head + hook + "    concurrency: 0\n",
			[]string{"forwarders[0].concurrency: must be between 1 and 256, got 0 (line 10)"}},
		{"concurrency too high", head + hook + "    concurrency: 257\n",
			[]string{"forwarders[0].concurrency: must be between 1 and 256, got 257 (line 10)"}},
		{"retry max below initial", head + hook + "    retry: {initial_interval: 10s, max_interval: 5s}\n",
			[]string{"forwarders[0].retry.max_interval: must be at least retry.initial_interval (10s), got 5s (line 10)"}},
		{"retry max_elapsed zero", head + hook + "    retry: {max_elapsed: 0s}\n",
			[]string{"forwarders[0].retry.max_elapsed: must be positive, got 0s (line 10)"}},
		{"retention too short", head + hook + "poll:\n  lookback: 72h\nstore:\n  retention: 120h\n",
			[]string{"store.retention: must exceed poll.lookback (72h0m0s) + 48h0m0s = 120h0m0s, got 120h0m0s (line 13)"}},
		{"interval too short", head + hook + "poll:\n  interval: 500ms\n",
			[]string{"poll.interval: must be at least 1s, got 500ms (line 11)"}},
		{"lookback too short", head + hook + "poll:\n  lookback: 12h\n",
			[]string{"poll.lookback: must be at least 24h0m0s, got 12h0m0s (line 11)"}},
		{"bad initial", head + hook + "poll:\n  initial: all\n",
			[]string{`poll.initial: must be one of skip, emit, got "all" (line 11)`}},
		{"jitter out of range", head + hook + "poll:\n  jitter: 1.5\n",
			[]string{"poll.jitter: must be between 0 and 1, got 1.5 (line 11)"}},
		{"negative max body", head + "  max_body_bytes: -1\n" + hook,
			[]string{"neoagent.max_body_bytes: must be positive, got -1 (line 6)"}},
		{"bad listen", head + hook + "http:\n  listen: localhost\n",
			[]string{`http.listen: must be host:port (or "" to disable), got "localhost" (line 11)`}},
		{"bad log level", head + hook + "log:\n  level: verbose\n  format: xml\n",
			[]string{`log.level: must be one of debug, info, warn, error, got "verbose" (line 11)`,
				`log.format: must be one of text, json, got "xml" (line 12)`}},
		{"invalid YAML", head + hook + "poll:\n interval: 1m\n  lookback: 48h\n",
			[]string{"invalid YAML: line 12: mapping values are not allowed in this context"}},
		{"two documents", head + hook + "---\npoll: {}\n",
			[]string{"only one YAML document is allowed (line 10)"}},
		{"top level not a mapping", "- a\n- b\n",
			[]string{"expected a mapping, got a list (line 1)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "test.yaml")
			require.Error(t, err)
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tt.want {
				assert.Contains(t, lines, w)
			}
		})
	}
}

// TestAcceptsWhatForwardersAccept covers values the forwarder packages accept, which
// config must not reject.
func TestAcceptsWhatForwardersAccept(t *testing.T) {
	c := parseOK(t, head+hook+`    headers: {Authorization: "Bearer x", x-tenant: "a\tb"}
    secret: whsec_c2VjcmV0
  - name: bus
    type: nats
    url: "nats://a:4222, tls://b:4222, ws://c:8080, wss://d:443, e:4222"
    subject: "leads.{{token .ChatbotName}}.{{.Kind}}"
    jetstream: true
    stream: LEADS
`)
	assert.Equal(t, "leads.{{token .ChatbotName}}.{{.Kind}}", c.Forwarders[1].NATS.Subject)
	assert.Equal(t, "whsec_c2VjcmV0", c.Forwarders[0].Webhook.Secret)
}

func TestParseReportsEveryProblemAtOnce(t *testing.T) {
	yaml := `neoagent:
  api_key: ${LEADBRIDGE_TEST_UNSET}
  timeout: abc
  chatbots:
    - serial: bot1
poll:
  intervl: 1m
  lookback: 12h
forwarders:
  - name: crm
    type: webhook
    channel: x
  - name: crm
    type: slack
    webhook_url: https://hooks.slack.com/x
    token: t
log:
  level: loud
`
	_, err := Parse([]byte(yaml), "test.yaml")
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "test.yaml", ve.Source)
	want := []string{
		"neoagent.api_key: empty (is the environment variable set?) (line 2)",
		`neoagent.timeout: invalid duration "abc" (line 3)`,
		"poll.intervl: unknown key (line 7)",
		"poll.lookback: must be at least 24h0m0s, got 12h0m0s (line 8)",
		"forwarders[0].url: required (line 10)",
		"forwarders[0].channel: not a key of a webhook forwarder (line 12)",
		`forwarders[1].name: duplicate forwarder name "crm" (also forwarders[0]) (line 13)`,
		"forwarders[1].token: cannot be combined with webhook_url: set webhook_url, or token and channel (line 16)",
		`log.level: must be one of debug, info, warn, error, got "loud" (line 18)`,
	}
	assert.Equal(t, strings.Join(want, "\n"), err.Error())
	assert.Len(t, ve.Problems, len(want))
	assert.Equal(t, Problem{Path: "poll.intervl", Msg: "unknown key", Line: 7}, ve.Problems[2])
}

func TestSlackDigestKeys(t *testing.T) {
	slack := head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n"
	off := parseOK(t, slack+"    digest: {threshold: 0}\n")
	assert.Equal(t, slackfwd.Digest{Threshold: 0, MaxItems: 20}, off.Forwarders[0].SlackConfig().Digest, "threshold 0 turns it off")
	set := parseOK(t, slack+"    digest:\n      threshold: 10\n      max_items: 45\n")
	assert.Equal(t, slackfwd.Digest{Threshold: 10, MaxItems: 45}, set.Forwarders[0].SlackConfig().Digest)
}

func TestDefaults(t *testing.T) {
	c := parseOK(t, head+hook+"  - name: bus\n    type: nats\n    url: nats://127.0.0.1:4222\n"+
		"  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n")

	assert.Equal(t, "test.yaml", c.Source)
	assert.Equal(t, NeoAgent{
		BaseURL:      "https://app.neoagent.co",
		APIKey:       "key123",
		Timeout:      30 * time.Second,
		MaxBodyBytes: 64 << 20,
		MaxRPS:       DefaultMaxRPS,
		Chatbots:     []Chatbot{{Serial: "bot1", Name: "bot1"}, {Serial: "bot2", Name: "bot2"}},
	}, c.NeoAgent)
	assert.Equal(t, Poll{Interval: time.Minute, Lookback: 48 * time.Hour, Initial: "skip", Jitter: 0.1, MaxBackoff: 10 * time.Minute}, c.Poll)
	assert.Equal(t, Store{Backend: BackendBbolt, Path: "./leadbridge.db", Retention: 2160 * time.Hour,
		NATS: StoreNATS{Prefix: "leadbridge", Replicas: 1, Timeout: 5 * time.Second}}, c.Store)
	assert.Equal(t, Dedupe{}, c.Dedupe)
	assert.Equal(t, Shutdown{Grace: 30 * time.Second}, c.Shutdown)
	assert.Equal(t, HTTP{Listen: "127.0.0.1:9108"}, c.HTTP)
	assert.Equal(t, Log{Level: "info", Format: "text"}, c.Log)

	retry := Retry{InitialInterval: time.Second, MaxInterval: 5 * time.Minute, MaxElapsed: 24 * time.Hour}
	require.Len(t, c.Forwarders, 3)
	assert.Equal(t, ForwarderConfig{Name: "crm", Type: TypeWebhook, Concurrency: 16, Retry: retry,
		Webhook: &Webhook{URL: "https://crm.example.com/hook", Timeout: 10 * time.Second, Body: "cloudevent"}}, c.Forwarders[0])
	assert.Equal(t, ForwarderConfig{Name: "bus", Type: TypeNATS, Concurrency: 256, Retry: retry,
		NATS: &NATS{URL: "nats://127.0.0.1:4222", Subject: "neoagent.{{.Chatbot}}.{{.Kind}}", Timeout: 5 * time.Second}}, c.Forwarders[1])
	assert.Equal(t, ForwarderConfig{Name: "s", Type: TypeSlack, Concurrency: 4, Retry: retry,
		Slack: &Slack{WebhookURL: "https://hooks.slack.com/x", Timezone: "UTC", Timeout: 10 * time.Second,
			Digest: SlackDigest{Threshold: 5, MaxItems: 20}}}, c.Forwarders[2])
	assert.Equal(t, slog.LevelInfo, c.Log.SlogLevel())
}

func TestExplicitZeroValuesAreKept(t *testing.T) {
	c := parseOK(t, head+hook+"poll:\n  jitter: 0\nhttp:\n  listen: \"\"\n")
	assert.Zero(t, c.Poll.Jitter)
	assert.Empty(t, c.HTTP.Listen, `listen: "" disables the listener`)

	c = parseOK(t, head+hook+"poll:\n  jitter:\nhttp:\n  listen:\n")
	assert.Equal(t, 0.1, c.Poll.Jitter, "a null value counts as left out")
	assert.Empty(t, c.HTTP.Listen)
}

func TestValidateGoConfig(t *testing.T) {
	c := &Config{
		NeoAgent:   NeoAgent{Chatbots: []Chatbot{{Serial: "bot1"}}},
		Forwarders: []ForwarderConfig{{Name: "crm", Type: TypeWebhook}},
	}
	err := c.Validate()
	require.EqualError(t, err, "neoagent.api_key: required\nforwarders[0].url: required")
	assert.Equal(t, "https://app.neoagent.co", c.NeoAgent.BaseURL)
	assert.Equal(t, 0.1, c.Poll.Jitter)
	assert.Equal(t, "127.0.0.1:9108", c.HTTP.Listen)
	require.NotNil(t, c.Forwarders[0].Webhook)

	c.NeoAgent.APIKey = "k"
	c.Forwarders[0].Webhook.URL = "https://crm.example.com/"
	require.NoError(t, c.Validate())
	require.NoError(t, c.Validate(), "Validate is idempotent")
}

func TestAliases(t *testing.T) {
	c := parseOK(t, head+`forwarders:
  - name: a
    type: webhook
    url: https://a.example/
    retry: &slow {initial_interval: 5s, max_interval: 1h}
  - name: b
    type: webhook
    url: https://b.example/
    retry: *slow
`)
	assert.Equal(t, c.Forwarders[0].Retry, c.Forwarders[1].Retry)
	assert.Equal(t, time.Hour, c.Forwarders[1].Retry.MaxInterval)
}

func TestExampleConfigLoads(t *testing.T) {
	t.Setenv("NEOAGENT_API_KEY", "neo-key")
	t.Setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/xyz")
	t.Setenv("CRM_SECRET", "whsec_c2VjcmV0")
	c, err := Load("../config.yaml")
	require.NoError(t, err)

	assert.Equal(t, "neo-key", c.NeoAgent.APIKey)
	require.Len(t, c.Forwarders, 3)
	bus, ok := c.Forwarder("bus")
	require.True(t, ok)
	require.NotNil(t, bus.NATS)
	assert.True(t, bus.NATS.JetStream)
	sales, ok := c.Forwarder("sales")
	require.True(t, ok)
	assert.Equal(t, "https://hooks.slack.com/services/T0/B0/xyz", sales.Slack.WebhookURL)
	assert.Equal(t, []event.Kind{event.KindAppointment}, sales.Types)
	crm, ok := c.Forwarder("crm")
	require.True(t, ok)
	assert.Equal(t, "whsec_c2VjcmV0", crm.Webhook.Secret)
	cb, ok := c.Chatbot("3254a9d0424c4806b9ea3d0763ccfxxx")
	require.True(t, ok)
	assert.Equal(t, "Main site", cb.Name)
}

func TestExampleConfigNeedsItsVariables(t *testing.T) {
	for _, k := range []string{"NEOAGENT_API_KEY", "SLACK_WEBHOOK_URL", "CRM_SECRET"} {
		t.Setenv(k, "")
	}
	_, err := Load("../config.yaml")
	require.Error(t, err)
	msg := err.Error()
	assert.Contains(t, msg, "neoagent.api_key: empty (is the environment variable set?)")
	assert.Contains(t, msg, "forwarders[1].webhook_url: empty (is the environment variable set?)")
	assert.Contains(t, msg, "forwarders[2].secret: empty (is the environment variable set?)")
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load(t.TempDir() + "/nope.yaml")
	require.ErrorContains(t, err, "nope.yaml")
}

func TestNoSecretInErrors(t *testing.T) {
	secrets := map[string]string{
		"T_API_KEY":  "S3CRET-apikey-1111",
		"T_SECRET":   "S3CRET-whsec-2222",
		"T_PASSWORD": "S3CRET-password-3333",
		"T_TOKEN":    "S3CRET-token-4444",
		"T_SLACK":    "https://hooks.slack.com/services/S3CRET-slack-5555",
		"T_HEADER":   "Bearer S3CRET-header-6666",
		"T_USERINFO": "S3CRET-userinfo-7777",
		"T_QUOTED":   `S3CRET"quoted\8888`,
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	configs := []string{
		// Every secret in place, with errors all around them.
		`neoagent:
  base_url: "ftp://user:${T_USERINFO}@app.neoagent.co/x"
  api_key: "${T_API_KEY}"
  timeout: nope
  chatbots: [{serial: bot1}]
forwarders:
  - name: crm
    type: webhook
    url: "ftp://u:${T_USERINFO}@crm.example.com/hook?token=${T_TOKEN}"
    secret: "${T_SECRET}"
    headers: {Authorization: "${T_HEADER}", "Bad Name": "${T_TOKEN}"}
    token: "${T_TOKEN}"
  - name: bus
    type: nats
    url: "nats://u:${T_USERINFO}@a:4222, bogus://u:${T_PASSWORD}@b"
    user: u
    password: "${T_PASSWORD}"
    token: "${T_TOKEN}"
    creds_file: /c
  - name: s
    type: slack
    webhook_url: "${T_SLACK}"
    token: "${T_TOKEN}"
    password: "${T_PASSWORD}"
  - name: s2
    type: slack
    webhook_url: "not a url ${T_SLACK}"
  - name: s3
    type: slack
    token: "${T_TOKEN}"
    channel: C1
    api_url: "gopher://x:${T_USERINFO}@slack.example/"
`,
		// Secrets where a string cannot go.
		"neoagent:\n  api_key: [\"${T_API_KEY}\"]\nforwarders:\n  - name: crm\n    type: webhook\n    secret: {a: \"${T_SECRET}\"}\n    url: \"https://x:${T_USERINFO}@h/\"\n    headers: [\"${T_HEADER}\"]\n",
		// Secrets under the wrong keys: values from the environment are never echoed.
		`neoagent:
  timeout: "${T_TOKEN}"
  ${T_API_KEY}: 1
  max_body_bytes: '${T_QUOTED}'
  chatbots: [{serial: "${T_TOKEN}"}]
poll:
  jitter: "${T_PASSWORD}"
  initial: "${T_SECRET}"
forwarders:
  - name: "${T_SECRET}"
    type: "${T_TOKEN}"
    types: ["${T_SECRET}"]
    chatbots: ["${T_PASSWORD}"]
  - name: w
    type: webhook
    url: "${T_TOKEN}"
    body: "${T_SECRET}"
    timeout: '${T_QUOTED}'
log:
  level: "${T_PASSWORD}"
`,
		// Broken YAML right at a secret.
		"neoagent:\n  api_key: \"${T_API_KEY}\n  chatbots: [\n",
		"neoagent:\n  api_key: '${T_API_KEY}' '${T_TOKEN}'\n",
		"neoagent:\n  api_key: ${T_API_KEY}: x\n",
		"neoagent: {api_key: ${T_API_KEY}, timeout: [}\n",
		"forwarders:\n  - name: s\n    type: slack\n    webhook_url: ${T_SLACK} ${T_TOKEN}: [\n",
	}
	for i, cfg := range configs {
		_, err := Parse([]byte(cfg), "secret.yaml")
		require.Error(t, err, "config %d", i)
		for k, v := range secrets {
			for _, part := range []string{v, strings.TrimPrefix(v, "Bearer "), strings.TrimPrefix(v, "https://hooks.slack.com/services/")} {
				assert.NotContains(t, err.Error(), part, "config %d leaks %s", i, k)
			}
		}
		assert.NotContains(t, err.Error(), "S3CRET", "config %d", i)
	}
}

func TestFingerprint(t *testing.T) {
	base := head + hook + "    headers: {A: a, B: b, C: c}\n    secret: s1\n"
	a := parseOK(t, base).Forwarders[0].Fingerprint()
	assert.Len(t, a, 64)
	assert.Equal(t, a, parseOK(t, base).Forwarders[0].Fingerprint(), "stable")
	assert.Equal(t, a, parseOK(t, base+"    timeout: 10s\n").Forwarders[0].Fingerprint(), "an explicit default is no change")

	for name, changed := range map[string]string{
		"secret":  strings.Replace(base, "secret: s1", "secret: s2", 1),
		"header":  strings.Replace(base, "C: c", "C: d", 1),
		"timeout": base + "    timeout: 11s\n",
		"types":   base + "    types: [lead]\n",
		"retry":   base + "    retry: {max_elapsed: 1h}\n",
	} {
		assert.NotEqual(t, a, parseOK(t, changed).Forwarders[0].Fingerprint(), name)
	}
}

func TestRouteAndAccepts(t *testing.T) {
	c := parseOK(t, head+`forwarders:
  - {name: all, type: webhook, url: "https://a.example/"}
  - {name: appts, type: webhook, url: "https://b.example/", types: [appointment]}
  - {name: bot2-leads, type: webhook, url: "https://c.example/", types: [lead], chatbots: [bot2]}
`)
	ev := func(serial string, k event.Kind) event.Event {
		return event.NewCreated(event.Lead{Chatbot: serial, Kind: k, SessionID: 1, CreatedAt: time.Unix(0, 0)})
	}
	assert.Equal(t, []string{"all", "appts"}, c.Route(ev("bot1", event.KindAppointment)))
	assert.Equal(t, []string{"all"}, c.Route(ev("bot1", event.KindLead)))
	assert.Equal(t, []string{"all", "bot2-leads"}, c.Route(ev("bot2", event.KindLead)))

	_, ok := c.Chatbot("nope")
	assert.False(t, ok)
	_, ok = c.Forwarder("nope")
	assert.False(t, ok)
}

func TestSlogLevel(t *testing.T) {
	for level, want := range map[string]string{"debug": "DEBUG", "info": "INFO", "warn": "WARN", "error": "ERROR", "": "INFO"} {
		assert.Equal(t, want, Log{Level: level}.SlogLevel().String())
	}
}

// A value that holds an environment secret inside a longer word (a second secret made
// from the first, a key with a prefix) is hidden whole, not just the part that matched.
func TestNoSecretAroundAHiddenValue(t *testing.T) {
	t.Setenv("T_API_KEY", "S3CRET-apikey-1111")
	_, err := Parse([]byte("neoagent:\n  timeout: \"pre-${T_API_KEY}-and-more-private\"\n"+
		"poll:\n  interval: \"${T_API_KEY}/x y\"\n"), "secret.yaml")
	require.Error(t, err)
	t.Log(err)
	assert.Contains(t, err.Error(), "neoagent.timeout")
	assert.Contains(t, err.Error(), "poll.interval")
	for _, part := range []string{"S3CRET", "pre-", "-and-more-private", "/x"} {
		assert.NotContains(t, err.Error(), part)
	}
}

// The forwarders' own Check functions own their rules: Parse reports what New would
// refuse at start, under the forwarder's key path and line, not only `config check`.
func TestParseRunsTheForwardersChecks(t *testing.T) {
	tests := []struct {
		name, yaml, want string
		line             int
	}{
		{"nats subject that renders no valid subject", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222\n    subject: \"neoagent.{{.Serial}}\"\n",
			"forwarders[0].subject: invalid template: for a sample event: ", 10},
		{"slack template naming no field", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    template: \"{{.Nmae}}\"\n",
			"forwarders[0].template: invalid template: template: slack:1:2: executing \"slack\" at <.Nmae>: can't evaluate field Nmae", 10},
		{"slack api_url with a webhook", head + "forwarders:\n  - name: s\n    type: slack\n    webhook_url: https://hooks.slack.com/x\n    api_url: https://slack.example/api/\n",
			"forwarders[0].api_url: only used with token: the incoming webhook is the whole target (line 10)", 10},
		{"slack token with a space", head + "forwarders:\n  - name: s\n    type: slack\n    token: \"xoxb-1 2\"\n    channel: C1\n",
			"forwarders[0].token: must not contain spaces or control characters (line 9)", 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "test.yaml")
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			require.Len(t, ve.Problems, 1, err.Error())
			assert.Contains(t, ve.Problems[0].String(), tt.want)
			assert.Equal(t, tt.line, ve.Problems[0].Line, "the line of the key")
		})
	}
}
