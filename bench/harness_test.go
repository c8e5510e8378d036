package bench

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	natsfwd "github.com/leadbridge/leadbridge/forwarders/nats"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/poller"
)

// The benchmark's figures are only as good as its peers: these quick tests check them
// with the real client and forwarders, so that plain `go test ./...` keeps them honest.

// TestStandInAnswersThePoller: leadbridge's own LeadList client decodes the streamed
// answer whole, every record, with the ids the stand-in predicts; a wrong key is refused.
func TestStandInAnswersThePoller(t *testing.T) {
	api := newStandIn(2500)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	now := time.Now().UTC()
	w := poller.Window{Start: now.Add(-48 * time.Hour), End: now.Add(24 * time.Hour)}
	bot := event.Chatbot{Serial: serialName(7), Name: "Bench bot"}

	page, err := poller.NewClient(srv.URL, apiKey, 10*time.Second).List(context.Background(), bot, w)
	require.NoError(t, err)
	assert.Empty(t, page.Skipped)
	got := make(map[string]struct{}, len(page.Leads))
	for _, l := range page.Leads {
		got[l.ID()] = struct{}{}
	}
	assert.Len(t, page.Leads, 2500)
	assert.Equal(t, api.ids(bot.Serial), got)
	assert.NotEqual(t, api.ids(bot.Serial), api.ids(serialName(8)), "ids differ between chatbots")

	_, err = poller.NewClient(srv.URL, "not-the-key", 10*time.Second).List(context.Background(), bot, w)
	var apiErr *poller.APIError
	require.ErrorAs(t, err, &apiErr)
	assert.Equal(t, 401, apiErr.Code)
	assert.EqualValues(t, 2, api.requests.Load())
}

// sampleEvents are n created events of the stand-in's chatbot 0.
func sampleEvents(t *testing.T, api *standIn, n int) []event.Event {
	t.Helper()
	srv := httptest.NewServer(api)
	defer srv.Close()
	now := time.Now().UTC()
	page, err := poller.NewClient(srv.URL, apiKey, 10*time.Second).List(context.Background(),
		event.Chatbot{Serial: serialName(0)}, poller.Window{Start: now.Add(-48 * time.Hour), End: now})
	require.NoError(t, err)
	require.Len(t, page.Leads, api.perBot)
	evs := make([]event.Event, n)
	for i := range n {
		evs[i] = event.NewCreated(page.Leads[i])
	}
	return evs
}

// TestSinkCountsWhatTheForwarderSends: the sink takes the real webhook forwarder's
// requests and tells distinct ids from repeats, ids nobody expected and bodies that are
// not a CloudEvent matching their Webhook-Id.
func TestSinkCountsWhatTheForwarderSends(t *testing.T) {
	api := newStandIn(3)
	evs := sampleEvents(t, api, 3)
	want := map[string]struct{}{evs[0].ID: {}, evs[1].ID: {}}
	s := newSink(t, want)
	fwd, err := webhook.New(webhook.Config{Name: "crm", URL: s.srv.URL + "/hooks"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	ctx := context.Background()
	for _, ev := range []event.Event{evs[0], evs[1], evs[0], evs[2]} {
		require.NoError(t, fwd.Deliver(ctx, ev))
	}
	req, err := http.NewRequest(http.MethodPost, s.srv.URL+"/hooks", strings.NewReader(`{"id":"other"}`))
	require.NoError(t, err)
	req.Header.Set("Webhook-Id", evs[1].ID)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())
	assert.Equal(t, tally{distinct: 2, total: 5, repeats: 1, unexpected: 1, bad: 1}, s.tally())
}

// TestStreamTallyAndReset: the stream count reads what the real NATS forwarder
// published, and a reset forgets the duplicate window, so the second pipeline of a run
// is not credited with (or blamed for) the first one's messages.
func TestStreamTallyAndReset(t *testing.T) {
	api := newStandIn(3)
	evs := sampleEvents(t, api, 3)
	want := map[string]struct{}{evs[0].ID: {}, evs[1].ID: {}}
	nb := newNATSBox(t)
	nb.resetStream(t)
	fwd, err := natsfwd.New(natsfwd.Config{Name: "bus", URL: nb.url(), JetStream: true}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(func() { _ = fwd.Close() })
	ctx := context.Background()
	for _, ev := range []event.Event{evs[0], evs[1], evs[0], evs[2]} {
		require.NoError(t, fwd.Deliver(ctx, ev))
	}
	assert.Equal(t, tally{distinct: 2, total: 3, unexpected: 1}, nb.tally(t, want),
		"the repeat of evs[0] is dropped inside the duplicate window")

	nb.resetStream(t)
	assert.Equal(t, tally{}, nb.tally(t, want))
	require.NoError(t, fwd.Deliver(ctx, evs[0]))
	assert.Equal(t, tally{distinct: 1, total: 1}, nb.tally(t, want), "after a reset the same id is stored again")
}
