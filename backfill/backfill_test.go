package backfill_test

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/backfill"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/poller"
)

const (
	key   = "sk-backfill-5e6f7a8b"
	bot1  = "BOT-1"
	bot2  = "BOT-2"
	day   = 24 * time.Hour
	since = "2026-06-01"
	until = "2026-06-20"
)

// rig is a LeadList API stand-in with two chatbots of one account, a real bbolt store
// that routes every event to forwarders a and b, and a Reader over both.
type rig struct {
	api   *leadsim.Server
	store *dedupe.Store
	r     *backfill.Reader
	log   *bytes.Buffer
	route []string // what the route returns by default, the same slice every time
	// routeOf is the config's routing, which the store and the Reader share.
	routeOf func(event.Event) []string
}

func newRig(t *testing.T) *rig {
	api, url := leadtest.StartAPI(t, key)
	g := &rig{api: api, log: new(bytes.Buffer), route: []string{"a", "b"}}
	g.routeOf = func(event.Event) []string { return g.route }
	route := func(ev event.Event) []string { return g.routeOf(ev) }
	g.store = leadtest.OpenStore(t, dedupe.Options{Route: route})
	bots := []event.Chatbot{
		{Serial: bot1, Name: "One", Account: event.DefaultAccount},
		{Serial: bot2, Name: "Two", Account: event.DefaultAccount},
	}
	g.r = &backfill.Reader{
		Since: date(t, since), Until: date(t, until), ChunkDays: 7, Chatbots: bots,
		Clients: map[string]*poller.Client{event.DefaultAccount: poller.NewClient(url, key, 5*time.Second)},
		Route:   route, Ingest: g.store.Backfill, Logger: slog.New(slog.NewTextHandler(g.log, nil)),
	}
	return g
}

func date(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(time.DateOnly, s)
	require.NoError(t, err)
	return d
}

// add puts a record of serial created at at (kind by n: 3 makes an appointment) into the
// API and returns its session.
func (g *rig) add(serial string, n int, session int64, at time.Time) int64 {
	g.api.Add(serial, leadsim.Sample(n, session, at))
	return session
}

func TestReadKeepsExactlyTheRangeEachRecordOnce(t *testing.T) {
	g := newRig(t)
	g.r.Chatbot = bot1
	first, last := date(t, since), date(t, until)
	g.add(bot1, 1, 1, first.Add(-time.Second))   // the day before: read, not kept
	g.add(bot1, 1, 2, first)                     // the first instant of the range
	g.add(bot1, 1, 3, first.AddDate(0, 0, 6))    // on a window boundary: read twice
	g.add(bot1, 1, 4, last.Add(day-time.Second)) // the last second of the range
	g.add(bot1, 1, 5, last.Add(day))             // the day after: read, not kept
	g.add(bot2, 1, 6, first.Add(12*time.Hour))   // another chatbot: not asked for

	windows := g.r.Chunks()
	require.Len(t, windows, 3, "%s..%s plus a day each side in 7-day windows", since, until)
	assert.Equal(t, first.Add(-day), windows[0].Start)
	assert.Equal(t, last.Add(day), windows[2].End)

	var chunks []backfill.Chunk
	g.r.OnChunk = func(c backfill.Chunk) { chunks = append(chunks, c) }
	tally, err := g.r.Read(t.Context())
	require.NoError(t, err)

	assert.Equal(t, backfill.Tally{Found: 3, Queued: 3}, tally)
	assert.Equal(t, 3, g.api.RequestsFor(bot1), "one request per window")
	assert.Zero(t, g.api.RequestsFor(bot2))
	require.Len(t, chunks, 3)
	var sessions []int64
	for i, c := range chunks {
		assert.Equal(t, bot1, c.Chatbot.Serial)
		assert.Equal(t, windows[i], c.Window)
		assert.Equal(t, c.Found, c.New, "a fresh store has seen none")
		for _, ev := range c.Events {
			sessions = append(sessions, ev.Data.SessionID)
			assert.Equal(t, []string{"a", "b"}, ev.Targets)
		}
	}
	assert.Equal(t, []int64{2, 3, 4}, sessions, "oldest first, the boundary record once")
	assert.Len(t, leadtest.Pending(t, g.store, "a"), 3)
}

func TestReadToOneForwarderQueuesOnlyWhatItTakes(t *testing.T) {
	g := newRig(t)
	first := date(t, since)
	g.add(bot1, 1, 1, first.Add(time.Hour))
	g.add(bot2, 3, 2, first.Add(2*time.Hour))
	// Leads go to a and b, appointments to a only.
	g.routeOf = func(ev event.Event) []string {
		if ev.Data.Kind == event.KindAppointment {
			return g.route[:1]
		}
		return g.route
	}
	g.r.Forwarder = "b"
	var events []backfill.Event
	g.r.OnChunk = func(c backfill.Chunk) { events = append(events, c.Events...) }
	tally, err := g.r.Read(t.Context())
	require.NoError(t, err)

	assert.Equal(t, backfill.Tally{Found: 2, Queued: 1}, tally, "the appointment is for a only")
	require.Len(t, events, 1)
	assert.Equal(t, int64(1), events[0].Data.SessionID)
	assert.Equal(t, []string{"b"}, events[0].Targets)
	assert.Equal(t, []string{"a", "b"}, g.route, "the route's own slice is left as it was")
	assert.Len(t, leadtest.Pending(t, g.store, "b"), 1)
	assert.Empty(t, leadtest.Pending(t, g.store, "a"), "--forwarder b queues nothing for a")
}

func TestReadAgainQueuesNothingUnlessResend(t *testing.T) {
	g := newRig(t)
	first := date(t, since)
	g.add(bot1, 1, 1, first.Add(time.Hour))
	g.add(bot2, 1, 2, first.AddDate(0, 0, 10))
	_, err := g.r.Read(t.Context())
	require.NoError(t, err)
	ids := func() []string {
		var out []string
		for _, d := range leadtest.Pending(t, g.store, "a") {
			out = append(out, d.Event.ID)
		}
		return out
	}
	firstIDs := ids()
	require.Len(t, firstIDs, 2)

	tally, err := g.r.Read(t.Context())
	require.NoError(t, err)
	assert.Equal(t, backfill.Tally{Found: 2, Queued: 0}, tally, "seen records are not queued again")

	g.r.Resend = true
	tally, err = g.r.Read(t.Context())
	require.NoError(t, err)
	assert.Equal(t, backfill.Tally{Found: 2, Queued: 2}, tally)
	again := ids()
	require.Len(t, again, 4)
	assert.ElementsMatch(t, firstIDs, again[2:], "--resend queues the same event ids")
}

func TestReadNamesTheWindowThatFailedAndKeepsWhatCameBefore(t *testing.T) {
	g := newRig(t)
	g.r.Chatbot = bot1
	g.add(bot1, 1, 1, date(t, since).Add(time.Hour))
	// The first window answers; the second one fails.
	g.api.InjectFor(bot1, leadsim.Fault{BadRecord: true}, leadsim.Fault{Status: http.StatusBadGateway})
	tally, err := g.r.Read(t.Context())
	require.Error(t, err)
	assert.Contains(t, err.Error(), "backfill BOT-1 2026-06-07..2026-06-14")
	assert.NotContains(t, err.Error(), key)
	assert.Equal(t, backfill.Tally{Found: 1, Queued: 1}, tally)
	assert.Len(t, leadtest.Pending(t, g.store, "a"), 1, "what the first window queued stays")
	assert.Contains(t, g.log.String(), "skipped a malformed record")
	assert.Contains(t, g.log.String(), "chatbot=BOT-1")
}

func TestReadStopsWhenCancelled(t *testing.T) {
	g := newRig(t)
	ctx, cancel := context.WithCancel(t.Context())
	n := 0
	g.r.OnChunk = func(backfill.Chunk) {
		if n++; n == 2 {
			cancel()
		}
	}
	_, err := g.r.Read(ctx)
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 2, g.api.Requests(), "no request after the cancel")
}

func TestReadRefusesAChatbotWithoutAClient(t *testing.T) {
	g := newRig(t)
	g.r.Chatbots = append(g.r.Chatbots, event.Chatbot{Serial: "BOT-3", Account: "other"})
	g.r.Chatbot = "BOT-3"
	_, err := g.r.Read(t.Context())
	require.EqualError(t, err, `backfill BOT-3: no LeadList client for account "other"`)
	assert.Zero(t, g.api.Requests())
}

func TestReadRefusesARangeThatEndsBeforeItStarts(t *testing.T) {
	g := newRig(t)
	g.r.Since, g.r.Until = date(t, until), date(t, since)
	_, err := g.r.Read(t.Context())
	require.EqualError(t, err, "backfill: the range ends (2026-06-01) before it starts (2026-06-20)")
	assert.Zero(t, g.api.Requests())
}
