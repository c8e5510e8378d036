package dedupe_test

import (
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A wall clock that jumps a month ahead and back does not wipe the activity log (the
// store's clock moves at most a day past what it can vouch for), and the log stays in
// the order of recording, so that Since still finds the newest attempts.
func TestActivityLogSurvivesAClockJump(t *testing.T) {
	now := t0.Add(12 * time.Hour)
	s := open(t, dbPath(t), func(o *dedupe.Options) { o.Now = func() time.Time { return now } })
	_, err := s.Ingest(t.Context(), bot, leads(bot, 1, 3))
	require.NoError(t, err)
	bus := pending(t, s, "bus")
	require.Len(t, bus, 3)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(bus[0], event.Acked, 0, "")}))

	now = now.Add(30 * 24 * time.Hour) // the wall clock jumps a month ahead
	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(bus[1], event.Retrying, 1, "timeout")}))
	all, err := s.Activity(t.Context(), event.ActivityQuery{Forwarder: "bus"})
	require.NoError(t, err)
	require.Len(t, all, 2, "the attempt of before the jump is kept")
	assert.True(t, all[0].At.Before(t0.Add(12*time.Hour+dedupe.ActivityMaxAge)), "the jump was not believed: %v", all[0].At)

	now = t0.Add(13 * time.Hour) // and back
	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(bus[2], event.Acked, 0, "")}))
	all, err = s.Activity(t.Context(), event.ActivityQuery{Forwarder: "bus"})
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, bus[2].Event.ID, all[0].EventID, "the newest first")
	assert.False(t, all[0].At.Before(all[1].At), "never earlier than an attempt recorded before it")
	got, err := s.Activity(t.Context(), event.ActivityQuery{Since: all[1].At})
	require.NoError(t, err)
	assert.Len(t, got, 2)
}
