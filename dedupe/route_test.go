package dedupe_test

import (
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Route runs the forwarders' jq filters, each bounded only by its own time limit (100ms
// a run), so a page of new records can spend seconds in it. It must not hold the store's
// write transaction meanwhile: another chatbot's page, an ack, a poll's bookkeeping all
// wait for that transaction. Here the route of one chatbot's page is held until another
// chatbot's page has been taken.
func TestSlowRouteDoesNotHoldTheStore(t *testing.T) {
	const other = "3254a9d0424c4806b9ea3d0763ccf002"
	entered, release := make(chan struct{}, 1), make(chan struct{})
	s := open(t, dbPath(t), func(o *dedupe.Options) {
		o.Route = func(ev event.Event) []string {
			if ev.Chatbot() == bot {
				select {
				case entered <- struct{}{}:
				default:
				}
				<-release
			}
			return []string{"bus"}
		}
	})
	slow := make(chan error, 1)
	go func() {
		_, err := s.Ingest(t.Context(), bot, leads(bot, 1, 3))
		slow <- err
	}()
	<-entered // the slow page is being routed

	fast := make(chan error, 1)
	go func() {
		res, err := s.Ingest(t.Context(), other, leads(other, 1, 2))
		if err == nil && res.New != 2 {
			err = assert.AnError
		}
		fast <- err
	}()
	select {
	case err := <-fast:
		require.NoError(t, err)
	case <-time.After(10 * time.Second): // a deadlock detector, not a speed bound
		close(release)
		<-slow
		t.Fatal("a page waited for another page's route: Route runs inside the write transaction")
	}
	close(release)
	require.NoError(t, <-slow)

	bus := pending(t, s, "bus")
	assert.Len(t, bus, 5, "every record of both pages is queued once")
	res, err := s.Ingest(t.Context(), bot, leads(bot, 1, 3))
	require.NoError(t, err)
	assert.Equal(t, 3, res.Duplicate)
}

// Between the run that finds a chunk's events and the run that takes them, another
// writer may change what the chunk makes: here the route of the first run takes one of
// the page's records with other content, so the chunk then makes an updated event where
// it found a created one. That event is routed too, and each event is queued once.
func TestRouteMeetsEventsChangedBetweenRuns(t *testing.T) {
	page := leads(bot, 1, 2)
	changed := page[1]
	changed.Content = "changed before the page was taken"
	var s *dedupe.Store
	var routedIDs []string
	nested := false
	s = open(t, dbPath(t), func(o *dedupe.Options) {
		o.EmitUpdates = true
		o.Route = func(ev event.Event) []string {
			routedIDs = append(routedIDs, ev.ID)
			if !nested {
				nested = true
				_, err := s.Ingest(t.Context(), bot, []event.Lead{changed})
				require.NoError(t, err)
			}
			return []string{"bus"}
		}
	})
	res, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)
	assert.Equal(t, 1, res.Updated)

	var queued []string
	for _, d := range pending(t, s, "bus") {
		queued = append(queued, d.Event.ID)
	}
	updated := event.NewUpdated(page[1], t0).ID
	assert.ElementsMatch(t, []string{changed.ID(), page[0].ID(), updated}, queued)
	assert.Contains(t, routedIDs, updated)
}
