package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

// watchedStore is the rig's real bbolt store, with its two ways of reading the chatbots'
// states counted: PollStates, and Chatbots, which also counts every seen key.
type watchedStore struct {
	*dedupe.Store
	polls, counts atomic.Int32
}

func (s *watchedStore) PollStates(ctx context.Context) (map[string]event.ChatbotState, error) {
	s.polls.Add(1)
	return s.Store.PollStates(ctx)
}

func (s *watchedStore) Chatbots(ctx context.Context) (map[string]event.ChatbotState, error) {
	s.counts.Add(1)
	return s.Store.Chatbots(ctx)
}

// Of the console's five pages that show the status, only the overview, which shows the
// records seen, reads the counts; the other four read the chatbots' poll states, never
// the counts, which bbolt reads key by key (the whole seen bucket, on every page and
// every 15 s with auto-refresh).
func TestPagesDoNotCountTheSeenKeys(t *testing.T) {
	r := newRig(t, token)
	states, err := r.store.Chatbots(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, states[bot].Seen, "the store has seen keys to count")

	ws := &watchedStore{Store: r.store}
	local := &ops.Local{Store: ws, Chatbots: r.local.Chatbots, Forwarders: r.local.Forwarders}
	st, err := local.Status(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, st.Chatbots[0].Seen, "the CLI's status counts, through this very store")
	require.EqualValues(t, 1, ws.counts.Load())
	ws.counts.Store(0)
	srv := httptest.NewServer(ops.WithConsole(http.NotFoundHandler(),
		console.New(console.Options{Operator: local, Activity: r.store, Token: token})))
	t.Cleanup(srv.Close)

	c := client(t)
	visit := func(name, method, path string, form url.Values, wantCode int, want string) answer {
		t.Helper()
		before := ws.polls.Load()
		a := do(t, c, method, srv.URL+path, form, "Authorization", "Bearer "+token)
		require.Equal(t, wantCode, a.code, "%s: %s", name, a.body)
		assert.Contains(t, a.body, want, name)
		assert.Greater(t, ws.polls.Load(), before, "%s read the poll states", name)
		assert.Zero(t, ws.counts.Load(), "%s counted the seen keys", name)
		return a
	}

	before := ws.counts.Load()
	o := do(t, c, "GET", srv.URL+"/ui/", nil, "Authorization", "Bearer "+token)
	require.Equal(t, http.StatusOK, o.code, o.body)
	assert.Contains(t, o.body, "Records seen", "the overview shows the counts")
	assert.Greater(t, ws.counts.Load(), before, "the overview read the counts")
	ws.counts.Store(0)
	visit("activity", "GET", "/ui/activity", nil, http.StatusOK, `<option value="agency"`)
	visit("event", "GET", "/ui/events/"+r.deadID, nil, http.StatusOK, "Replay to crm")
	visit("dead letters", "GET", "/ui/dead", nil, http.StatusOK, "Replay all 1 of crm")
	visit("replay", "POST", "/ui/dead/replay", url.Values{"one": {"crm/" + r.deadID}}, http.StatusSeeOther, "")
	left, err := r.store.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	assert.Empty(t, left, "the replay went through")
}
