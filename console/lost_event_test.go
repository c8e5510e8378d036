package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

// lostEvents is the rig's real store answering, as it does when the event record an
// attempt refers to is missing, that it has no event for any id.
type lostEvents struct{ *dedupe.Store }

func (lostEvents) ActivityEvent(context.Context, string) (event.Event, bool, error) {
	return event.Event{}, false, nil
}

// An event whose attempts are logged but whose record the store lost still has its
// page: the attempts, and a word that the event itself is gone.
func TestEventPageWithoutItsEvent(t *testing.T) {
	r := newRig(t, token)
	srv := httptest.NewServer(ops.WithConsole(http.NotFoundHandler(),
		console.New(console.Options{Operator: r.local, Activity: lostEvents{r.store}, Token: token})))
	t.Cleanup(srv.Close)
	bearer := []string{"Authorization", "Bearer " + token}

	a := do(t, client(t), "GET", srv.URL+"/ui/events/"+r.leads[0].ID(), nil, bearer...)
	require.Equal(t, http.StatusOK, a.code, a.body)
	assert.Contains(t, a.body, ">bus</td>", "its attempt")
	assert.Contains(t, a.body, "The store no longer has this event")
	assert.NotContains(t, a.body, r.leads[0].Email)

	dead := do(t, client(t), "GET", srv.URL+"/ui/events/"+r.deadID, nil, bearer...)
	require.Equal(t, http.StatusOK, dead.code)
	assert.Contains(t, dead.body, r.leads[2].Email, "a dead letter still carries its event")
	none := do(t, client(t), "GET", srv.URL+"/ui/events/"+r.leads[0].ID()[:10], nil, bearer...)
	assert.Equal(t, http.StatusNotFound, none.code, "no attempt, no dead letter: no page")
}
