package main

import (
	"encoding/json"
	"fmt"
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

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// bodies is a webhook target that keeps each request's content type and body.
type bodies struct {
	mu   sync.Mutex
	reqs []struct{ contentType, body string }
}

func newBodies(t *testing.T) (*bodies, string) {
	b := &bodies{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.reqs = append(b.reqs, struct{ contentType, body string }{r.Header.Get("Content-Type"), string(body)})
		b.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)
	return b, srv.URL
}

func (b *bodies) all() []struct{ contentType, body string } {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append(b.reqs[:0:0], b.reqs...)
}

// send-test sends an event of type neoagent.test from leadbridge/send-test: as the
// CloudEvent, or through the forwarder's transform, which it says it used; a filter it
// ignores, and says so and what the filter would have done.
func TestSendTestSendsATestEventThroughTheTransform(t *testing.T) {
	plain, plainURL := newBodies(t)
	mapped, mappedURL := newBodies(t)
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", plainURL, fmt.Sprintf(`
  - name: mapped
    type: webhook
    url: %s
    transform: '{type, source, email: .data.email}'
    encoding: form
    filter: '.data.email | endswith("@example.com") | not'
  - name: broken-filter
    type: webhook
    url: %s
    filter: '.data.count + "x"'
`, mappedURL, mappedURL))

	code, stdout, stderr := runMain(t, "send-test", "crm", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, stdout, "note:", "no filter, no transform: nothing to note")
	require.Len(t, plain.all(), 1)
	var ev event.Event
	require.NoError(t, json.Unmarshal([]byte(plain.all()[0].body), &ev))
	assert.Equal(t, event.TypeTest, ev.Type)
	assert.Equal(t, "leadbridge/send-test", ev.Source)
	assert.Equal(t, "application/cloudevents+json", plain.all()[0].contentType)

	code, stdout, stderr = runMain(t, "send-test", "mapped", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `note: send-test ignores filters: forwarder "mapped"'s filter was not applied (it would keep this test event out)`)
	assert.Contains(t, stdout, `note: the body is the output of forwarder "mapped"'s transform (encoding form)`)
	assert.Contains(t, stdout, `ok: forwarder "mapped" (webhook) took the test appointment event`)
	require.Len(t, mapped.all(), 1)
	assert.Equal(t, "application/x-www-form-urlencoded", mapped.all()[0].contentType)
	form, err := url.ParseQuery(mapped.all()[0].body)
	require.NoError(t, err)
	assert.Equal(t, url.Values{"type": {"neoagent.test"}, "source": {"leadbridge/send-test"}, "email": {"test@example.com"}}, form)

	code, stdout, stderr = runMain(t, "send-test", "broken-filter", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `filter was not applied (on this test event it fails: the jq program failed at run time`)
	assert.Len(t, mapped.all(), 2, "sent all the same")
}

// On Slack the test message says TEST; on NATS the event has the test type.
func TestSendTestIsMarkedOnSlackAndNATS(t *testing.T) {
	slack := leadtest.NewSlack(t)
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	t.Setenv("LB_SLACK_URL", slack.URL())
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", "http://127.0.0.1:2", fmt.Sprintf(`
  - name: sales
    type: slack
    webhook_url: ${LB_SLACK_URL}
    filter: 'false'
  - name: bus
    type: nats
    url: %s
    jetstream: true
    stream: TESTS
`, ns.URL()))

	code, stdout, stderr := runMain(t, "send-test", "sales", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `forwarder "sales"'s filter was not applied (it would keep this test event out)`)
	msgs := slack.Messages()
	require.Len(t, msgs, 1)
	assert.Contains(t, msgs[0]["text"], "TEST (leadbridge send-test)")
	blocks, _ := json.Marshal(msgs[0]["blocks"])
	assert.Contains(t, string(blocks), "🧪 TEST (leadbridge send-test) · 📅 New appointment booked")

	code, _, stderr = runMain(t, "send-test", "bus", "--config", cfg, "--kind", "lead")
	require.Equal(t, 0, code, stderr)
	stored := ns.ReadStream("TESTS")
	require.Len(t, stored, 1)
	assert.Equal(t, event.TypeTest, stored[0].Header.Get("Ce-Type"))
	assert.Equal(t, "leadbridge/send-test", stored[0].Header.Get("Ce-Source"))
}

// The daemon's route applies filters at ingest: a forwarder gets only what its filter
// lets through, and a filter that fails on a record logs a warning naming the record's
// ids and the reason, never its data.
func TestOnceAppliesFilters(t *testing.T) {
	api, apiURL := leadtest.StartAPI(t, testKey)
	all := leadtest.NewSink(t, nil)
	appts := leadtest.NewSink(t, nil)
	cfg := writeConfig(t, t.TempDir(), apiURL, all.URL, fmt.Sprintf(`
  - name: appointments
    type: webhook
    url: %s/hook
    filter: '.type == "neoagent.appointment.created"'
  - name: broken
    type: webhook
    url: %s/hook
    filter: '.data.email + 1 > 0'
`, appts.URL, appts.URL))
	var records []leadsimRecord
	want := 0
	now := time.Now()
	for i := range 9 {
		r := api.Generate(testSerial, now.Add(-time.Duration(i)*time.Hour))
		records = append(records, leadsimRecord{r.Name, r.Email})
		if r.Type == "Appointment" {
			want++
		}
	}
	code, _, stderr := runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Len(t, all.IDs(), 9)
	assert.Len(t, appts.IDs(), want, "only appointments, and nothing from the broken filter")
	assert.Equal(t, 9, strings.Count(stderr, "a forwarder's filter failed on a record"))
	assert.Contains(t, stderr, "the jq program failed at run time")
	for _, r := range records {
		assert.NotContains(t, stderr, r.email)
		assert.NotContains(t, stderr, r.name)
	}
}

type leadsimRecord struct{ name, email string }
