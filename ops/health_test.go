package ops_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

var bots = []event.Chatbot{{Serial: serialA, Name: chatbotName}, {Serial: serialB, Name: "Shop"}}

// healthServer serves a Health over the store on a fake clock, polled every minute.
func healthServer(t *testing.T, s *dedupe.Store) (*clock, string) {
	t.Helper()
	c := newClock()
	h := ops.NewHealth(s, bots, nil, time.Minute, c.Now)
	srv := httptest.NewServer(ops.NewServer(ops.NewMetrics("test", s), h, nil, "", nil))
	t.Cleanup(srv.Close)
	return c, srv.URL
}

// ready GETs /readyz and decodes its answer.
func ready(t *testing.T, base string) (int, ops.Readiness) {
	t.Helper()
	resp, err := http.Get(base + "/readyz")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
	var r ops.Readiness
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&r))
	return resp.StatusCode, r
}

func chatbot(t *testing.T, r ops.Readiness, serial string) ops.ChatbotReadiness {
	t.Helper()
	for _, c := range r.Chatbots {
		if c.Serial == serial {
			return c
		}
	}
	require.Failf(t, "chatbot missing from /readyz", "serial %s", serial)
	return ops.ChatbotReadiness{}
}

func TestReadyzFollowsPolls(t *testing.T) {
	s := openStore(t)
	clk, base := healthServer(t, s)
	apiDown := errors.New("LeadList HTTP 500 Internal Server Error")

	code, r := ready(t, base)
	assert.Equal(t, http.StatusOK, code, "a fresh start is ready")
	assert.True(t, r.Ready)
	assert.Equal(t, "open", r.Store)
	assert.Len(t, r.Chatbots, 2)

	// serialA succeeds every minute; serialB fails from the start.
	for range 3 {
		clk.Advance(time.Minute)
		require.NoError(t, s.RecordPoll(t.Context(), serialA, clk.Now(), nil))
		require.NoError(t, s.RecordPoll(t.Context(), serialB, clk.Now(), apiDown))
	}
	code, r = ready(t, base)
	assert.Equal(t, http.StatusOK, code, "3 intervals since start have not passed yet")
	assert.Equal(t, apiDown.Error(), chatbot(t, r, serialB).LastError)

	clk.Advance(12 * time.Second)
	code, r = ready(t, base)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.False(t, r.Ready)
	a, b := chatbot(t, r, serialA), chatbot(t, r, serialB)
	assert.True(t, a.OK)
	assert.Empty(t, a.Reason)
	assert.False(t, b.OK)
	assert.True(t, b.LastSuccess.IsZero())
	assert.Equal(t, "no successful poll since start for 3m12s (3 intervals = 3m0s); last error: "+apiDown.Error(), b.Reason)
	require.Len(t, r.Reasons, 1)
	assert.Contains(t, r.Reasons[0], "Shop ("+serialB+")")

	require.NoError(t, s.RecordPoll(t.Context(), serialB, clk.Now(), nil))
	code, r = ready(t, base)
	assert.Equal(t, http.StatusOK, code, "ready again after a success")
	assert.True(t, chatbot(t, r, serialB).OK)
	assert.Empty(t, chatbot(t, r, serialB).LastError)
	assert.Equal(t, clk.Now(), chatbot(t, r, serialB).LastSuccess.UTC())

	// Both fall silent: counted from their last success.
	clk.Advance(3*time.Minute + time.Second)
	code, r = ready(t, base)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Equal(t, "no successful poll for 3m1s (3 intervals = 3m0s)", chatbot(t, r, serialB).Reason)
	assert.False(t, chatbot(t, r, serialA).OK)
	assert.Len(t, r.Reasons, 2)
}

func TestReadyzPausedForwarder(t *testing.T) {
	s := openStore(t)
	_, base := healthServer(t, s)
	require.NoError(t, s.Pause(t.Context(), "crm", "webhook crm: HTTP 410 Gone", "hash"))

	code, r := ready(t, base)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	require.Len(t, r.PausedForwarders, 1)
	assert.Equal(t, "crm", r.PausedForwarders[0].Name)
	assert.Equal(t, "webhook crm: HTTP 410 Gone", r.PausedForwarders[0].Reason)
	require.Len(t, r.Reasons, 1)
	assert.Contains(t, r.Reasons[0], "forwarder crm is paused")
	assert.Contains(t, r.Reasons[0], "leadbridge forwarder resume crm")

	_, err := s.Resume(t.Context(), "crm")
	require.NoError(t, err)
	code, r = ready(t, base)
	assert.Equal(t, http.StatusOK, code)
	assert.Empty(t, r.PausedForwarders)
}

func TestReadyzStoreClosedHealthzStillAlive(t *testing.T) {
	s := openStore(t)
	_, base := healthServer(t, s)
	require.NoError(t, s.Close())

	code, r := ready(t, base)
	assert.Equal(t, http.StatusServiceUnavailable, code)
	assert.Contains(t, r.Store, "error: ")
	assert.Contains(t, r.Store, "database not open")

	resp, err := http.Get(base + "/healthz")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	var body map[string]string
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	assert.Equal(t, map[string]string{"status": "ok"}, body)
}

// TestReadyzCountsOnlyThisProcessPolls: the store remembers the polls of a previous
// process; readiness speaks of this one's, so a fresh start is ready with nothing to
// show, and a failure of this process shows without the old success.
func TestReadyzCountsOnlyThisProcessPolls(t *testing.T) {
	s := openStore(t)
	start := newClock().Now()
	require.NoError(t, s.RecordPoll(t.Context(), serialA, start.Add(-time.Hour), nil))
	require.NoError(t, s.RecordPoll(t.Context(), serialB, start.Add(-2*time.Hour), nil))
	require.NoError(t, s.RecordPoll(t.Context(), serialB, start.Add(-time.Hour), errors.New("LeadList HTTP 503")))
	clk, base := healthServer(t, s)

	code, r := ready(t, base)
	assert.Equal(t, http.StatusOK, code, "a fresh start is ready")
	for _, c := range r.Chatbots {
		assert.True(t, c.OK, c.Serial)
		assert.True(t, c.LastSuccess.IsZero(), c.Serial)
		assert.Empty(t, c.LastError, c.Serial)
	}

	clk.Advance(time.Minute)
	require.NoError(t, s.RecordPoll(t.Context(), serialA, clk.Now(), errors.New("LeadList HTTP 500")))
	_, r = ready(t, base)
	a := chatbot(t, r, serialA)
	assert.True(t, a.LastSuccess.IsZero(), "the success before the start is not this process's")
	assert.Equal(t, "LeadList HTTP 500", a.LastError)
}

// With a thousand chatbots, /readyz names at most 5 failing ones and counts the rest; a
// chatbot with a longer interval of its own is judged by it.
func TestReadyzAtScaleNamesAFewAndCountsTheRest(t *testing.T) {
	s := openStore(t)
	c := newClock()
	var many []event.Chatbot
	for i := range 1000 {
		many = append(many, event.Chatbot{Serial: fmt.Sprintf("bot%04d", i), Account: "client-a"})
	}
	many[999].Interval = time.Hour // polled hourly: 4 minutes of silence is fine
	h := ops.NewHealth(s, many, nil, time.Minute, c.Now)
	c.Advance(4 * time.Minute)
	for _, bot := range many[:10] {
		require.NoError(t, s.RecordPoll(t.Context(), bot.Serial, c.Now(), nil))
	}

	r := h.Check(t.Context())
	assert.False(t, r.Ready)
	assert.Equal(t, 1000, r.ChatbotsTotal)
	assert.Equal(t, 989, r.ChatbotsFailing, "all but the 10 polled and the hourly one")
	require.Len(t, r.Chatbots, 5)
	for i, cr := range r.Chatbots {
		assert.False(t, cr.OK)
		assert.Equal(t, fmt.Sprintf("bot%04d", 10+i), cr.Serial)
	}
	require.Len(t, r.Reasons, 6)
	assert.Equal(t, "and 984 more chatbots with no recent successful poll (of 1000): `leadbridge status --failing` lists them", r.Reasons[5])
	b, err := json.Marshal(r)
	require.NoError(t, err)
	assert.Less(t, len(b), 3000, "a short answer")
}
