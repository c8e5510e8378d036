package ops_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

func TestMetricsCountSkippedRecords(t *testing.T) {
	s := openStore(t, "bus")
	m := ops.NewMetrics("1.2.3", s)
	srv := httptest.NewServer(ops.NewServer(m, ops.NewHealth(s, nil, nil, time.Minute, nil), nil, "", nil))
	t.Cleanup(srv.Close)

	for range 3 {
		m.ObserveSkip(event.Chatbot{Serial: serialA, Account: "client-a"}, "CreateTime") // the API repeats the same bad record on every poll
	}
	m.ObserveSkip(event.Chatbot{Serial: serialB, Account: "default"}, "record")

	mfs, _ := scrape(t, srv.URL+"/metrics")
	type L = map[string]string
	assert.Equal(t, 3.0, value(t, mfs, "leadbridge_records_skipped_total", L{"account": "client-a", "chatbot": serialA, "reason_field": "CreateTime"}))
	assert.Equal(t, 1.0, value(t, mfs, "leadbridge_records_skipped_total", L{"account": "default", "chatbot": serialB, "reason_field": "record"}))
}
