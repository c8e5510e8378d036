package ops_test

import (
	"errors"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

const secret = "s3cr3t-api-key-value"

// scriptedRun drives metrics through what a daemon would report: two polls of serialA
// (4 new records, then the same 4 as duplicates), a failed poll of serialB, and
// deliveries to bus (one delivered, one retried then dead-lettered) and crm (paused).
// Errors carry a secret and records carry personal data, as real ones might.
func scriptedRun(t *testing.T) (*dedupe.Store, string) {
	t.Helper()
	botA := event.Chatbot{Serial: serialA, Account: "client-a"}
	botB := event.Chatbot{Serial: serialB, Account: event.DefaultAccount}
	s := openStore(t, "bus", "crm")
	m := ops.NewMetrics("1.2.3", s)
	srv := httptest.NewServer(ops.NewServer(m, ops.NewHealth(s, nil, nil, time.Minute, nil), nil, "", nil))
	t.Cleanup(srv.Close)

	res := ingest(t, s, 4)
	require.Equal(t, 4, res.New)
	require.NoError(t, s.RecordPoll(t.Context(), serialA, time.Now(), nil))
	m.ObservePoll(botA, 250*time.Millisecond, res, nil)
	res = ingest(t, s, 4)
	require.Equal(t, 4, res.Duplicate)
	require.NoError(t, s.RecordPoll(t.Context(), serialA, time.Now(), nil))
	m.ObservePoll(botA, 100*time.Millisecond, res, nil)
	apiDown := errors.New("LeadList HTTP 500 for https://app.example/api?key=" + secret)
	require.NoError(t, s.RecordPoll(t.Context(), serialB, time.Now(), apiDown))
	m.ObservePoll(botB, 2*time.Second, event.Ingested{}, apiDown)

	bus := leadtest.Pending(t, s, "bus")
	require.Len(t, bus, 4)
	ok := bus[0]
	ok.Enqueued = time.Now().Add(-90 * time.Second)
	ok.Attempts = 2
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "bus", Seq: ok.Seq}, Verdict: event.Acked}}))
	m.ObserveDelivery(ok, forwarders.ResultOK, 0, nil)

	failing := bus[1]
	failing.Attempts = 1
	m.ObserveDelivery(failing, forwarders.ResultRetry, time.Second,
		errors.New("webhook bus: HTTP 503 from https://user:"+secret+"@crm.example"))
	failing = deadLetter(t, s, failing, 3)
	m.ObserveDelivery(failing, forwarders.ResultDead, time.Second, errors.New("webhook bus: HTTP 400 "+personEmail))

	crm := leadtest.Pending(t, s, "crm")[0]
	crm.Attempts = 1
	require.NoError(t, s.Pause(t.Context(), "crm", "webhook crm: HTTP 410 Gone", "hash"))
	m.ObserveDelivery(crm, forwarders.ResultPaused, time.Second, errors.New("webhook crm: HTTP 410 Gone"))

	// Filters kept records out: two said false for bus, one failed for crm.
	m.ObserveFiltered("bus", bus[2].Event, nil)
	m.ObserveFiltered("bus", bus[3].Event, nil)
	m.ObserveFiltered("crm", crm.Event, errors.New("the jq filter produced a value that is not true or false"))

	return s, srv.URL + "/metrics"
}

func TestMetricsCountWhatHappened(t *testing.T) {
	before := time.Now()
	_, url := scriptedRun(t)
	mfs, _ := scrape(t, url)

	type L = map[string]string
	counts := []struct {
		name   string
		labels L
		want   float64
	}{
		{"leadbridge_polls_total", L{"account": "client-a", "chatbot": serialA, "result": "ok"}, 2},
		{"leadbridge_polls_total", L{"account": "default", "chatbot": serialB, "result": "error"}, 1},
		{"leadbridge_records_total", L{"account": "client-a", "chatbot": serialA, "kind": "lead", "outcome": "new"}, 2},
		{"leadbridge_records_total", L{"account": "client-a", "chatbot": serialA, "kind": "appointment", "outcome": "new"}, 2},
		{"leadbridge_records_total", L{"account": "client-a", "chatbot": serialA, "kind": "", "outcome": "duplicate"}, 4},
		{"leadbridge_deliveries_total", L{"forwarder": "bus", "result": "ok"}, 1},
		{"leadbridge_deliveries_total", L{"forwarder": "bus", "result": "retry"}, 1},
		{"leadbridge_deliveries_total", L{"forwarder": "bus", "result": "dead"}, 1},
		{"leadbridge_deliveries_total", L{"forwarder": "crm", "result": "paused"}, 1},
		{"leadbridge_records_filtered_total", L{"forwarder": "bus"}, 2},
		{"leadbridge_records_filtered_total", L{"forwarder": "crm"}, 1},
		{"leadbridge_filter_errors_total", L{"forwarder": "crm"}, 1},
		// Read from the store at scrape time.
		{"leadbridge_outbox_depth", L{"forwarder": "bus"}, 2},
		{"leadbridge_outbox_depth", L{"forwarder": "crm"}, 4},
		{"leadbridge_dead_letters", L{"forwarder": "bus"}, 1},
		{"leadbridge_dead_letters", L{"forwarder": "crm"}, 0},
		{"leadbridge_forwarder_paused", L{"forwarder": "crm"}, 1},
		{"leadbridge_forwarder_paused", L{"forwarder": "bus"}, 0},
		{"leadbridge_build_info", L{"version": "1.2.3", "goversion": runtime.Version()}, 1},
	}
	for _, c := range counts {
		assert.Equal(t, c.want, value(t, mfs, c.name, c.labels), "%s%v", c.name, c.labels)
	}

	_, ok := find(mfs, "leadbridge_polls_total", L{"account": "default", "chatbot": serialB, "result": "ok"})
	assert.False(t, ok, "serialB never succeeded")
	_, ok = find(mfs, "leadbridge_last_successful_poll_timestamp_seconds", L{"chatbot": serialB})
	assert.False(t, ok, "serialB never succeeded")
	last := value(t, mfs, "leadbridge_last_successful_poll_timestamp_seconds", L{"chatbot": serialA})
	assert.InDelta(t, float64(before.Unix()), last, 60)

	n, sum := histogram(t, mfs, "leadbridge_poll_duration_seconds", L{"chatbot": serialA})
	assert.Equal(t, uint64(2), n)
	assert.InDelta(t, 0.35, sum, 1e-9)
	n, sum = histogram(t, mfs, "leadbridge_delivery_latency_seconds", L{"forwarder": "bus"})
	assert.Equal(t, uint64(1), n, "latency counts delivered events only")
	assert.GreaterOrEqual(t, sum, 90.0)
	n, sum = histogram(t, mfs, "leadbridge_delivery_attempts", L{"forwarder": "bus"})
	assert.Equal(t, uint64(2), n, "one delivered, one dead")
	assert.Equal(t, 3.0+3.0, sum, "delivered on the 3rd attempt; dead after 3")

	assert.Contains(t, mfs, "go_goroutines", "the Go collector is registered")
}

func TestMetricsFollowNamingConventions(t *testing.T) {
	_, url := scriptedRun(t)
	_, body := scrape(t, url)
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	require.NoError(t, err)
	for _, p := range problems {
		assert.False(t, strings.HasPrefix(p.Metric, "leadbridge_"), "%s: %s", p.Metric, p.Text)
	}
}

func TestMetricsCarryNoSecretOrPersonalData(t *testing.T) {
	_, url := scriptedRun(t)
	_, body := scrape(t, url)
	for _, s := range []string{
		secret, personName, personEmail, personPhone, personContent, personURI,
		strconv.Itoa(personSession), chatbotName, "Zanzibar", "HTTP 410", "HTTP 503",
	} {
		assert.NotContains(t, body, s)
	}
}

func TestMetricsServedWhenStoreFails(t *testing.T) {
	s, url := scriptedRun(t)
	require.NoError(t, s.Close())
	mfs, _ := scrape(t, url)
	assert.Equal(t, 2.0, value(t, mfs, "leadbridge_polls_total", map[string]string{"chatbot": serialA, "result": "ok"}))
	assert.NotContains(t, mfs, "leadbridge_outbox_depth", "a store that cannot be read has no depth to show")
}

// TestLastSuccessGaugeIsThisProcess: the gauge shows successes of this process only, so
// a chatbot removed from the config does not show its last success forever.
func TestLastSuccessGaugeIsThisProcess(t *testing.T) {
	s := openStore(t)
	require.NoError(t, s.RecordPoll(t.Context(), serialB, time.Now().Add(-time.Hour), nil))
	srv := httptest.NewServer(ops.NewServer(ops.NewMetrics("1", s), ops.NewHealth(s, nil, nil, time.Minute, nil), nil, "", nil))
	t.Cleanup(srv.Close)

	require.NoError(t, s.RecordPoll(t.Context(), serialA, time.Now(), nil))
	mfs, _ := scrape(t, srv.URL+"/metrics")
	_, ok := find(mfs, "leadbridge_last_successful_poll_timestamp_seconds", map[string]string{"chatbot": serialB})
	assert.False(t, ok, "a success before this process started")
	_, ok = find(mfs, "leadbridge_last_successful_poll_timestamp_seconds", map[string]string{"chatbot": serialA})
	assert.True(t, ok)
}

// A chatbot's poll series are looked up once and kept: each poll still lands on the
// series of its own result, account and serial, and a series shows only once touched.
func TestObservePollKeepsEachSeriesApart(t *testing.T) {
	s := openStore(t, "bus")
	m := ops.NewMetrics("1.2.3", s)
	srv := httptest.NewServer(ops.NewServer(m, ops.NewHealth(s, nil, nil, time.Minute, nil), nil, "", nil))
	t.Cleanup(srv.Close)
	botA := event.Chatbot{Serial: serialA, Account: "client-a"}
	moved := event.Chatbot{Serial: serialA, Account: "client-b"} // a reload moved it to another account

	m.ObservePoll(botA, time.Second, event.Ingested{Duplicate: 3}, nil)
	_, text := scrape(t, srv.URL+"/metrics")
	assert.NotContains(t, text, `result="error"`, "no failed poll yet")
	assert.NotContains(t, text, `outcome="baseline"`, "no baseline yet")
	m.ObservePoll(botA, time.Second, event.Ingested{}, errors.New("HTTP 500"))
	m.ObservePoll(botA, time.Second, event.Ingested{Duplicate: 2, Baseline: 4}, nil)
	m.ObservePoll(moved, time.Second, event.Ingested{Duplicate: 1}, nil)

	_, text = scrape(t, srv.URL+"/metrics")
	for _, line := range []string{
		`leadbridge_polls_total{account="client-a",chatbot="` + serialA + `",result="ok"} 2`,
		`leadbridge_polls_total{account="client-a",chatbot="` + serialA + `",result="error"} 1`,
		`leadbridge_polls_total{account="client-b",chatbot="` + serialA + `",result="ok"} 1`,
		`leadbridge_records_total{account="client-a",chatbot="` + serialA + `",kind="",outcome="duplicate"} 5`,
		`leadbridge_records_total{account="client-a",chatbot="` + serialA + `",kind="",outcome="baseline"} 4`,
		`leadbridge_records_total{account="client-b",chatbot="` + serialA + `",kind="",outcome="duplicate"} 1`,
		`leadbridge_poll_duration_seconds_count{account="client-a",chatbot="` + serialA + `"} 3`,
		`leadbridge_poll_duration_seconds_count{account="client-b",chatbot="` + serialA + `"} 1`,
	} {
		assert.Contains(t, text, line+"\n")
	}
}
