package console_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
)

// watchedStore is the rig's real bbolt store, with its two ways of reading the chatbots'
// states counted: PollStates, and Chatbots, which also counts every seen key and here
// fails instead, so that a page asking for it shows.
type watchedStore struct {
	*dedupe.Store
	polls, counts atomic.Int32
}

func (s *watchedStore) PollStates(ctx context.Context) (map[string]event.ChatbotState, error) {
	s.polls.Add(1)
	return s.Store.PollStates(ctx)
}

func (s *watchedStore) Chatbots(context.Context) (map[string]event.ChatbotState, error) {
	s.counts.Add(1)
	return nil, errors.New("counted every seen key")
}

// The console's five pages that show the status read the chatbots' poll states, never
// the seen counts `leadbridge status` shows, which bbolt reads key by key (the whole
// seen bucket, on every page and every 15 s with auto-refresh).
func TestPagesDoNotCountTheSeenKeys(t *testing.T) {
	r := newRig(t, token)
	states, err := r.store.Chatbots(t.Context())
	require.NoError(t, err)
	require.Equal(t, 3, states[bot].Seen, "the store has seen keys to count")

	ws := &watchedStore{Store: r.store}
	r.local.Store = ws
	_, err = r.local.Status(t.Context())
	require.ErrorContains(t, err, "counted every seen key", "the CLI's status counts, through this very store")
	require.EqualValues(t, 1, ws.counts.Load())
	ws.counts.Store(0)

	c := client(t)
	r.login(t, c)
	visit := func(name string, get func() answer, wantCode int, want string) answer {
		t.Helper()
		before := ws.polls.Load()
		a := get()
		require.Equal(t, wantCode, a.code, "%s: %s", name, a.body)
		assert.Contains(t, a.body, want, name)
		assert.Greater(t, ws.polls.Load(), before, "%s read the poll states", name)
		assert.Zero(t, ws.counts.Load(), "%s counted the seen keys", name)
		return a
	}
	get := func(path string) func() answer {
		return func() answer { return do(t, c, "GET", r.srv.URL+path, nil) }
	}

	o := visit("overview", get("/ui/"), http.StatusOK, "401 Unauthorized") // the failing chatbot's last poll
	assert.NotContains(t, o.body, "Records seen", "no column of counts the page no longer has")
	visit("activity", get("/ui/activity"), http.StatusOK, `<option value="agency"`)
	visit("event", get("/ui/events/"+r.deadID), http.StatusOK, "Replay to crm")
	dead := visit("dead letters", get("/ui/dead"), http.StatusOK, "Replay all 1 of crm")
	form := url.Values{"one": {"crm/" + r.deadID}, "csrf": {csrfOf(t, dead.body)}}
	visit("replay", func() answer { return do(t, c, "POST", r.srv.URL+"/ui/dead/replay", form) }, http.StatusSeeOther, "")
	left, err := r.store.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	assert.Empty(t, left, "the replay went through")
}
