package ops_test

import (
	"bytes"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// Personal data carried by the test records; none of it may show in metrics.
const (
	personName    = "Alice Privatename"
	personEmail   = "alice.private@example.org"
	personPhone   = "+15550001234"
	personContent = "call me about the Zanzibar project"
	personURI     = "www.private-site.example"
	personSession = 987654321
	chatbotName   = "Main site"
	serialA       = "3254a9d0424c4806b9ea3d0763ccf0aa"
	serialB       = "b1b2b3b4b5b6b7b8b9b0c1c2c3c4c5c6"
)

// openStore opens a real bbolt store in a temp dir that sends every event to the given
// forwarders and emits the first poll's records.
func openStore(t *testing.T, forwarders ...string) *dedupe.Store {
	t.Helper()
	return leadtest.OpenStore(t, dedupe.Options{Initial: dedupe.InitialEmit, Route: leadtest.RouteTo(forwarders...)})
}

// record is a record of chatbot serialA full of personal data.
func record(kind event.Kind, n int) event.Lead {
	return event.Lead{
		Chatbot: serialA, ChatbotName: chatbotName, Kind: kind,
		Name: personName, Email: personEmail, Phone: personPhone, Content: personContent,
		SessionID: personSession + int64(n), URI: personURI, Count: 1,
		CreatedAt: time.Date(2026, 11, 20, 10, n, 0, 0, time.UTC),
	}
}

// ingest takes n records (alternating lead, appointment) into the store.
func ingest(t *testing.T, s *dedupe.Store, n int) event.Ingested {
	t.Helper()
	var leads []event.Lead
	for i := range n {
		kind := event.KindLead
		if i%2 == 1 {
			kind = event.KindAppointment
		}
		leads = append(leads, record(kind, i))
	}
	res, err := s.Ingest(t.Context(), serialA, leads)
	require.NoError(t, err)
	return res
}

// deadLetter moves d to the dead letters as a failed attempt would.
func deadLetter(t *testing.T, s *dedupe.Store, d event.Delivery, attempts int) event.Delivery {
	t.Helper()
	d.Attempts, d.LastError = attempts, "webhook bus: HTTP 400 Bad Request"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Dead, At: time.Now()}}))
	return d
}

// scrape GETs url and returns the parsed metric families and the raw body.
func scrape(t *testing.T, url string) (map[string]*dto.MetricFamily, string) {
	t.Helper()
	resp, err := http.Get(url)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(t, err)
	return mfs, string(body)
}

// find returns the sample of family name whose labels include want (a missing label
// counts as "").
func find(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (*dto.Metric, bool) {
	mf, ok := mfs[name]
	if !ok {
		return nil, false
	}
	for _, m := range mf.GetMetric() {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		match := true
		for k, v := range want {
			if got[k] != v {
				match = false
				break
			}
		}
		if match {
			return m, true
		}
	}
	return nil, false
}

// value is the value of a counter or gauge sample; it fails the test if there is none.
func value(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	m, ok := find(mfs, name, labels)
	require.True(t, ok, "no sample %s%v", name, labels)
	if m.Counter != nil {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

// histogram is the sample count and sum of a histogram sample.
func histogram(t *testing.T, mfs map[string]*dto.MetricFamily, name string, labels map[string]string) (uint64, float64) {
	t.Helper()
	m, ok := find(mfs, name, labels)
	require.True(t, ok, "no sample %s%v", name, labels)
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// clock is a settable time for Health, safe for concurrent use.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
