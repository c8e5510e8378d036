package dedupe_test

import (
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// wallClock is an injected wall clock. Moving it with pass also moves the store's
// monotonic clock (time really passed); setting it with jump does not (the clock jumped).
type wallClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *wallClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *wallClock) jump(to time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = to
}

func (c *wallClock) pass(s *dedupe.Store, d time.Duration) {
	c.jump(c.now().Add(d))
	dedupe.Elapse(s, d)
}

func openAt(t *testing.T, path string, clock *wallClock, retention time.Duration) *dedupe.Store {
	return open(t, path, func(o *dedupe.Options) { o.Now, o.Retention = clock.now, retention })
}

func TestIngestTakesTheRestOfAPageWithARecordItCannotEncode(t *testing.T) {
	s := open(t, dbPath(t), nil)
	good := leads(bot, 1, 2)
	bad := leadtest.Lead(bot, event.KindLead, 99, time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC))
	alien := leadtest.Lead("otherbot", event.KindLead, 98, t0)
	odd := leadtest.Lead(bot, event.Kind("Spam"), 97, t0)
	page := []event.Lead{good[0], bad, alien, good[1], odd}

	res, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err, "one record must not fail the page")
	assert.Equal(t, 2, res.New)
	assert.Equal(t, []string{good[0].ID(), good[1].ID()}, ids(res.Events))
	require.Len(t, pending(t, s, "bus"), 2, "the good records are queued")
	require.Len(t, res.Rejected, 3)
	assert.Equal(t, event.Rejected{Index: 1, EventID: bad.ID(), Reason: "created_at: year 10000 is outside 0..9999"}, res.Rejected[0])
	assert.Equal(t, 2, res.Rejected[1].Index)
	assert.Contains(t, res.Rejected[1].Reason, "chatbot")
	assert.Equal(t, 4, res.Rejected[2].Index)
	assert.Contains(t, res.Rejected[2].Reason, "kind")
	for _, r := range res.Rejected {
		for _, l := range page {
			assert.NotContains(t, r.Reason, l.Name)
			assert.NotContains(t, r.Reason, l.Email)
		}
		assert.NotContains(t, r.Reason, "Spam")
	}

	res, err = s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Duplicate)
	assert.Len(t, res.Rejected, 3, "a rejected record is not marked seen")
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, bots[bot].Seen)
}

func TestARecordOlderThanRetentionIsNeverAnnounced(t *testing.T) {
	path := dbPath(t)
	clock := &wallClock{t: t0}
	s := openAt(t, path, clock, 72*time.Hour)
	ancient := leadtest.Lead(bot, event.KindLead, 1, t0.Add(-30*24*time.Hour))
	fresh := leadtest.Lead(bot, event.KindLead, 2, t0.Add(-time.Hour))

	for round := range 3 {
		res, err := s.Ingest(t.Context(), bot, []event.Lead{ancient, fresh})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Stale, "round %d", round)
		assert.NotContains(t, ids(res.Events), ancient.ID(), "round %d", round)
		_, err = s.Prune(t.Context(), clock.now())
		require.NoError(t, err)
		require.NoError(t, s.Close())
		s = openAt(t, path, clock, 72*time.Hour)
		clock.pass(s, 30*time.Hour)
	}
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 1, bots[bot].Seen, "a stale record is not marked seen")
	assert.Len(t, pending(t, s, "bus"), 1, "only the fresh record was ever queued")

	res, err := s.Backfill(t.Context(), bot, []event.Lead{ancient}, event.BackfillOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{ancient.ID()}, ids(res.Events), "a backfill asked for it: it is taken")
}

func TestAClockJumpPrunesNothingEarly(t *testing.T) {
	path := dbPath(t)
	clock := &wallClock{t: t0}
	s := openAt(t, path, clock, 72*time.Hour)
	known := leadtest.Lead(bot, event.KindLead, 1, t0.Add(-time.Hour))
	_, err := s.Ingest(t.Context(), bot, []event.Lead{known})
	require.NoError(t, err)

	clock.jump(t0.Add(100 * 24 * time.Hour))
	for round := range 2 {
		n, err := s.Prune(t.Context(), clock.now())
		require.NoError(t, err)
		assert.Zero(t, n, "a jump of the wall clock prunes nothing")
		unseen := leadtest.Lead(bot, event.KindLead, int64(10+round), t0.Add(-2*time.Hour))
		res, err := s.Ingest(t.Context(), bot, []event.Lead{known, unseen})
		require.NoError(t, err)
		assert.Equal(t, 1, res.Duplicate)
		assert.Equal(t, 1, res.New, "nor does it make recent records stale")
		require.NoError(t, s.Close())
		s = openAt(t, path, clock, 72*time.Hour) // nor across a restart
	}

	clock.jump(t0.Add(-100 * 24 * time.Hour)) // and back, far behind
	res, err := s.Ingest(t.Context(), bot, []event.Lead{leadtest.Lead(bot, event.KindLead, 3, t0.Add(-80*time.Hour))})
	require.NoError(t, err)
	assert.Equal(t, 1, res.Stale, "a clock that went back does not widen the horizon")

	// Time that really passes is followed: a new record proves it after a long downtime.
	clock.jump(t0.Add(10 * 24 * time.Hour))
	proof := leadtest.Lead(bot, event.KindLead, 4, clock.now().Add(-time.Minute))
	_, err = s.Ingest(t.Context(), bot, []event.Lead{proof})
	require.NoError(t, err)
	n, err := s.Prune(t.Context(), clock.now())
	require.NoError(t, err)
	assert.Equal(t, 3, n, "known and the two unseen ones are pruned once the time is proven")
}

func TestIdlePollsRefreshLastSeenRarely(t *testing.T) {
	clock := &wallClock{t: t0}
	s := openAt(t, dbPath(t), clock, 24*time.Hour)
	page := leads(bot, 1, 5)
	_, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)

	// Retention/10 is 2.4h: within it no key is rewritten, so Prune at the original
	// retention still removes keys not refreshed...
	clock.pass(s, 2*time.Hour)
	_, err = s.Ingest(t.Context(), bot, page[:2])
	require.NoError(t, err)
	// ...and after it, the keys a poll returns are refreshed and outlive the others.
	clock.pass(s, time.Hour)
	_, err = s.Ingest(t.Context(), bot, page[:1])
	require.NoError(t, err)
	clock.pass(s, 23*time.Hour)
	n, err := s.Prune(t.Context(), clock.now())
	require.NoError(t, err)
	assert.Equal(t, 4, n, "only the key refreshed after 3h survives 26h")
	res, err := s.Ingest(t.Context(), bot, page[:1])
	require.NoError(t, err)
	assert.Equal(t, 1, res.Duplicate)
}

func TestRejectedAndStaleAreLoggedWithoutPersonalData(t *testing.T) {
	var logs leadtest.LogBuffer
	clock := &wallClock{t: t0}
	s := open(t, dbPath(t), func(o *dedupe.Options) {
		o.Now = clock.now
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	bad := leadtest.Lead(bot, event.KindLead, 1, time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC))
	ancient := leadtest.Lead(bot, event.KindLead, 2, t0.Add(-90*24*time.Hour))
	for range 2 {
		_, err := s.Ingest(t.Context(), bot, []event.Lead{bad, ancient})
		require.NoError(t, err)
	}
	out := logs.String()
	assert.Contains(t, out, bad.ID())
	assert.Equal(t, 1, strings.Count(out, "older than store.retention"), "logged once per chatbot")
	for _, l := range []event.Lead{bad, ancient} {
		assert.NotContains(t, out, l.Name)
		assert.NotContains(t, out, l.Email)
	}
}
