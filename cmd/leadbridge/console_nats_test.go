package main

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// The web console is served with store.backend nats too: its Activity page shows a lead
// the daemon delivered, read from the JetStream store's activity log, and the event's
// page shows the event after it left the outbox.
func TestConsoleOnTheJetStreamStoreShowsADeliveredLead(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	api.Generate(testSerial, time.Now().Add(-time.Minute))
	addr := freeAddr(t)
	startDaemon(t, natsConfig(t, "a", apiURL, sink.URL, ns.URL(), addr), addr)
	require.Eventually(t, func() bool { return sink.Count() == 1 }, 20*time.Second, 20*time.Millisecond)
	eventID := sink.IDs()[0]

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + addr + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp.StatusCode, string(b)
	}
	var body string
	require.Eventually(t, func() bool {
		var code int
		code, body = get("/ui/activity?forwarder=crm&outcome=delivered")
		return code == http.StatusOK && strings.Contains(body, eventID[:11])
	}, 10*time.Second, 50*time.Millisecond, "the delivered lead in Activity")
	assert.Contains(t, body, `href="/ui/events/`+eventID+`"`)
	assert.Contains(t, body, "delivered")

	code, page := get("/ui/events/" + eventID)
	assert.Equal(t, http.StatusOK, code)
	assert.Contains(t, page, eventID)
	assert.Contains(t, page, testSerial)
	code, _ = get("/ui/")
	assert.Equal(t, http.StatusOK, code, "the overview too")
}
