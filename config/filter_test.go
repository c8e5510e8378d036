package config

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/jqprog"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// A jq program that does not compile is a config problem naming the forwarder's key, the
// line of the key in the file, and the position in the program.
func TestJQSyntaxErrorsNameTheKeyAndPosition(t *testing.T) {
	yaml := head + hook + `    transform: '{email: .data.email'
  - name: sales
    type: slack
    webhook_url: https://hooks.slack.com/services/T/B/X
    filter: |
      .data.email
        | endswith("@example.com") not
  - name: bus
    type: nats
    url: nats://127.0.0.1:4222
    filter: '.data | nosuchfunction'
  - name: both
    type: webhook
    url: https://crm.example.com/hook
    body: lead
    transform: .data
    encoding: form
`
	_, err := Parse([]byte(yaml), "test.yaml")
	var verr *ValidationError
	require.ErrorAs(t, err, &verr)
	msg := err.Error()
	assert.Contains(t, msg, "forwarders[0].transform: jq syntax error at line 1, column 20: unexpected EOF (line 10)")
	assert.Contains(t, msg, `forwarders[1].filter: jq syntax error at line 2, column 30: unexpected token "not" (line 14)`)
	assert.Contains(t, msg, "forwarders[2].filter: jq function not defined: nosuchfunction/0 (line 20)")
	assert.Contains(t, msg, "forwarders[3].transform: cannot be combined with body: lead")
	assert.Len(t, verr.Problems, 4, msg)
}

func TestFilterAndTransformKeysLoad(t *testing.T) {
	c := parseOK(t, head+hook+`    transform: '{email: .data.email}'
    encoding: form
    filter: '.data.kind == "appointment"'
`)
	f := c.Forwarders[0]
	assert.Equal(t, `.data.kind == "appointment"`, f.Filter)
	assert.Equal(t, `{email: .data.email}`, f.WebhookConfig().Transform)
	assert.Equal(t, "form", f.WebhookConfig().Encoding)
	assert.NotNil(t, f.filter, "compiled at load")
}

// filtered is one call of Router's onFiltered.
type filtered struct {
	forwarder string
	session   int64
	err       error
}

// Filters decide at ingest: a record a forwarder's filter drops is never queued for it,
// every other forwarder still gets it, and each drop is reported. A filter that fails on
// a record (here, on an email without "@") does not match it, with a reason that holds
// none of the record's data.
func TestFiltersDropAtIngestExactlyWhatTheySay(t *testing.T) {
	c := parseOK(t, head+`forwarders:
  - name: all
    type: webhook
    url: https://crm.example.com/all
  - name: external
    type: webhook
    url: https://crm.example.com/external
    filter: '.data.email | endswith("@example.com") | not'
  - name: bot2-appointments
    type: webhook
    url: https://crm.example.com/bot2
    types: [appointment]
    filter: '.source == "neoagent/bot2" and .data.count >= 2'
  - name: strict
    type: webhook
    url: https://crm.example.com/strict
    filter: '(.data.email | split("@") | .[1] | ascii_downcase) == "example.org"'
`)
	var (
		mu   sync.Mutex
		seen []filtered
	)
	st := leadtest.OpenStore(t, dedupe.Options{
		Path: filepath.Join(t.TempDir(), "s.db"), Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit,
		Route: NewRouter(c, func(forwarder string, ev event.Event, err error) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, filtered{forwarder, ev.Data.SessionID, err})
		}).Route,
	})
	base := time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)
	lead := func(serial string, kind event.Kind, session int64, email string, count int) event.Lead {
		l := leadtest.Lead(serial, kind, session, base.Add(time.Duration(session)*time.Second))
		l.Email, l.Count = email, count
		return l
	}
	_, err := st.Ingest(t.Context(), "bot1", []event.Lead{
		lead("bot1", event.KindLead, 1, "a@example.com", 1),
		lead("bot1", event.KindLead, 2, "b@EXAMPLE.org", 1),
		lead("bot1", event.KindAppointment, 3, "no-at-sign", 5),
	})
	require.NoError(t, err)
	_, err = st.Ingest(t.Context(), "bot2", []event.Lead{
		lead("bot2", event.KindAppointment, 4, "d@example.com", 2),
		lead("bot2", event.KindAppointment, 5, "e@example.net", 1),
		lead("bot2", event.KindLead, 6, "f@example.com", 3),
	})
	require.NoError(t, err)

	sessions := func(forwarder string) []int64 {
		var out []int64
		for _, d := range leadtest.Pending(t, st, forwarder) {
			out = append(out, d.Event.Data.SessionID)
		}
		return out
	}
	assert.Equal(t, []int64{1, 2, 3, 4, 5, 6}, sessions("all"))
	assert.Equal(t, []int64{2, 3, 5}, sessions("external"))
	assert.Equal(t, []int64{4}, sessions("bot2-appointments"), "types apply first, then the filter")
	assert.Equal(t, []int64{2}, sessions("strict"))

	mu.Lock()
	defer mu.Unlock()
	var failed []filtered
	dropped := map[string][]int64{}
	for _, f := range seen {
		dropped[f.forwarder] = append(dropped[f.forwarder], f.session)
		if f.err != nil {
			failed = append(failed, f)
		}
	}
	assert.Equal(t, map[string][]int64{
		"external":          {1, 4, 6},
		"bot2-appointments": {3, 5}, // 1, 2 and 6 are leads: the types filter kept them out
		"strict":            {1, 3, 4, 5, 6},
	}, dropped)
	require.Len(t, failed, 1, "only the email without @ makes a filter fail")
	assert.Equal(t, "strict", failed[0].forwarder)
	assert.Equal(t, int64(3), failed[0].session)
	assert.Contains(t, failed[0].err.Error(), "failed at run time")
	assert.NotContains(t, failed[0].err.Error(), "no-at-sign")
}

// A Config built in Go and never validated still filters (its programs compile on use),
// and Route counts a filter that does not compile as not matching.
func TestRouteFiltersAGoBuiltConfig(t *testing.T) {
	c := &Config{Forwarders: []ForwarderConfig{
		{Name: "leads", Filter: `.data.kind == "lead"`},
		{Name: "broken", Filter: `.data.kind ==`},
		{Name: "all"},
	}}
	ev := event.NewCreated(leadtest.Lead("bot1", event.KindLead, 1, time.Now()))
	assert.Equal(t, []string{"leads", "all"}, c.Route(ev))
	ev = event.NewCreated(leadtest.Lead("bot1", event.KindAppointment, 2, time.Now()))
	assert.Equal(t, []string{"all"}, c.Route(ev))
}

// A filter that loops is stopped by its bounds and counts as not matching, with a
// reason that says so. On a quiet machine the bound of steps stops it long before the
// time bound; under -race on a loaded one the time bound can come first (3 runs in 5
// seen), so either reason is right here: jqprog's own tests pin which bound is which.
func TestFilterThatLoopsIsStopped(t *testing.T) {
	c := parseOK(t, head+hook+"    filter: 'reduce range(1e18) as $i (true; .)'\n")
	var reason error
	route := NewRouter(c, func(_ string, _ event.Event, err error) { reason = err }).Route
	ev := event.NewCreated(leadtest.Lead("bot1", event.KindLead, 1, time.Now()))
	assert.Empty(t, route(ev))
	assert.Truef(t, errors.Is(reason, jqprog.ErrSteps) || errors.Is(reason, jqprog.ErrTimeout),
		"the reason names a bound of the run, got %v", reason)
}

// HasFilters says whether Route may run a jq filter, for the config in force: a Router
// follows Set, so a reload that adds or drops a filter changes the answer.
func TestHasFiltersFollowsTheConfigInForce(t *testing.T) {
	plain := &Config{Forwarders: []ForwarderConfig{{Name: "all"}, {Name: "appts", Types: []event.Kind{event.KindAppointment}}}}
	filtered := &Config{Forwarders: []ForwarderConfig{{Name: "all"}, {Name: "leads", Filter: `.data.kind == "lead"`}}}
	assert.False(t, plain.HasFilters())
	assert.True(t, filtered.HasFilters())
	r := NewRouter(plain, nil)
	assert.False(t, r.HasFilters())
	r.Set(filtered)
	assert.True(t, r.HasFilters())
	r.Set(plain)
	assert.False(t, r.HasFilters())
}
