package storetest

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// The activity log's bounds, as every backend keeps them: the newest ActivityPerForwarder
// attempts per forwarder, none older than ActivityMaxAge by the store's clock.
const (
	ActivityPerForwarder = 1000
	ActivityMaxAge       = 7 * 24 * time.Hour
)

// outcome is the outcome the Dispatcher hands Record for delivery d.
func outcome(d event.Delivery, v event.Verdict, attempts int, lastErr string) event.Outcome {
	d.Attempts, d.LastError = attempts, lastErr
	return event.Outcome{Delivery: d, Verdict: v}
}

func activity(t *testing.T, s Store, q event.ActivityQuery) []event.Attempt {
	t.Helper()
	got, err := s.Activity(t.Context(), q)
	require.NoError(t, err)
	return got
}

// activityEvent reports whether the log still refers to event id, and returns it.
func activityEvent(t *testing.T, s Store, id string) (event.Event, bool) {
	t.Helper()
	ev, found, err := s.ActivityEvent(t.Context(), id)
	require.NoError(t, err)
	return ev, found
}

func testActivityRecorded(t *testing.T, r *rig) {
	clk := &clock{t: t0.Add(12 * time.Hour)}
	s := r.with(func(c *Config) { c.Now = clk.now })
	agency := leadtest.Lead(bot, event.KindLead, 1, t0)
	agency.Account = "agency"
	page := []event.Lead{agency, leadtest.Lead(bot, event.KindAppointment, 2, t0.Add(time.Minute))}
	ingest(t, s, bot, page)
	bus, sales := pending(t, s, "bus"), pending(t, s, "sales")
	require.Len(t, bus, 2)
	require.Len(t, sales, 1)
	assert.Empty(t, activity(t, s, event.ActivityQuery{}), "nothing recorded yet")

	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(bus[0], event.Acked, 0, "")}))
	clk.pass(time.Second)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{
		outcome(sales[0], event.Retrying, 1, "webhook https://crm.example.com: 503 Service Unavailable")}))
	clk.pass(time.Minute)
	dead := outcome(sales[0], event.Dead, 2, "webhook https://crm.example.com: 400 Bad Request")
	dead.At, dead.Took = clk.now(), 250*time.Millisecond
	require.NoError(t, s.Record(t.Context(), []event.Outcome{dead}))
	// An outcome that names no event (an ack by Seq alone) is not an attempt to show.
	ack(t, s, bus[1])

	all := activity(t, s, event.ActivityQuery{})
	require.Len(t, all, 3)
	assert.Equal(t, event.Attempt{At: clk.now(), Forwarder: "sales", EventID: page[1].ID(), Chatbot: bot, Kind: event.KindAppointment,
		Verdict: event.Dead, Attempt: 2, Took: 250 * time.Millisecond, InOutbox: clk.now().Sub(sales[0].Enqueued),
		Error: "webhook https://crm.example.com: 400 Bad Request", Account: event.DefaultAccount},
		all[0], "newest first")
	assert.Equal(t, event.Retrying, all[1].Verdict)
	assert.Equal(t, 1, all[1].Attempt)
	assert.Equal(t, "webhook https://crm.example.com: 503 Service Unavailable", all[1].Error)
	assert.Equal(t, event.Acked, all[2].Verdict)
	assert.Equal(t, 1, all[2].Attempt, "a first attempt that succeeded is attempt 1")
	assert.Empty(t, all[2].Error)
	assert.Equal(t, "agency", all[2].Account)

	for name, q := range map[string]event.ActivityQuery{
		"forwarder": {Forwarder: "bus"},
		"kind":      {Kind: event.KindLead},
		"verdict":   {Verdict: event.Acked},
		"event":     {EventID: page[0].ID()},
		"account":   {Account: "agency"},
		"chatbot":   {Chatbot: bot, Verdict: event.Acked},
	} {
		got := activity(t, s, q)
		require.Len(t, got, 1, name)
		assert.Equal(t, page[0].ID(), got[0].EventID, name)
	}
	for name, q := range map[string]event.ActivityQuery{
		"another chatbot":   {Chatbot: "someone-else"},
		"another forwarder": {Forwarder: "nobody"},
		"a wildcard":        {Forwarder: "*"},
		"later":             {Since: clk.now().Add(time.Second)},
	} {
		assert.Empty(t, activity(t, s, q), name)
	}
	got := activity(t, s, event.ActivityQuery{Limit: 1})
	require.Len(t, got, 1)
	assert.Equal(t, event.Dead, got[0].Verdict)
	got = activity(t, s, event.ActivityQuery{Since: clk.now().Add(-time.Minute)})
	assert.Len(t, got, 2, "since selects by the time recorded, inclusive")

	// The event stays readable after it left the outbox (delivered, dead-lettered), and
	// after a reopen.
	assert.Empty(t, pending(t, s, "sales"))
	require.NoError(t, s.Close())
	s = r.with(func(c *Config) { c.Now = clk.now })
	assert.Len(t, activity(t, s, event.ActivityQuery{}), 3)
	ev, found := activityEvent(t, s, page[1].ID())
	require.True(t, found)
	assert.Equal(t, sales[0].Event, ev)
	for _, id := range []string{"no-such-id", "", "*", ">", bot + ".*", "a b"} {
		_, found = activityEvent(t, s, id)
		assert.False(t, found, "%q", id)
	}
}

func testActivityKeepsTheNewest(t *testing.T, r *rig) {
	s := r.with(nil)
	n := ActivityPerForwarder + 5
	ingest(t, s, bot, leads(bot, 1, n))
	ds := pending(t, s, "bus")
	require.Len(t, ds, n)
	outcomes := make([]event.Outcome, 0, n)
	for _, d := range ds {
		outcomes = append(outcomes, outcome(d, event.Acked, 0, ""))
	}
	require.NoError(t, s.Record(t.Context(), outcomes[:10]))
	require.NoError(t, s.Record(t.Context(), outcomes[10:]))

	all := activity(t, s, event.ActivityQuery{Forwarder: "bus"})
	require.Len(t, all, ActivityPerForwarder)
	assert.Equal(t, ds[5].Event.ID, all[len(all)-1].EventID, "the five oldest were pruned")
	assert.Equal(t, ds[n-1].Event.ID, all[0].EventID)
	for _, d := range ds[:5] {
		_, found := activityEvent(t, s, d.Event.ID)
		assert.False(t, found, "an event no attempt refers to any more is forgotten")
	}
	_, found := activityEvent(t, s, ds[5].Event.ID)
	assert.True(t, found)
	some := activity(t, s, event.ActivityQuery{Limit: 7})
	require.Len(t, some, 7)
	assert.Equal(t, all[:7], some)
}

func testActivityForgetsAWeekAgo(t *testing.T, r *rig) {
	clk := &clock{t: t0.Add(12 * time.Hour)}
	s := r.with(func(c *Config) { c.Now = clk.now })
	ingest(t, s, bot, []event.Lead{leadtest.Lead(bot, event.KindAppointment, 1, t0), leadtest.Lead(bot, event.KindLead, 2, t0)})
	bus, sales := pending(t, s, "bus"), pending(t, s, "sales")
	// Both forwarders log an attempt; a week and a day later only bus records again.
	require.NoError(t, s.Record(t.Context(), []event.Outcome{
		outcome(bus[0], event.Retrying, 1, "timeout"), outcome(sales[0], event.Retrying, 1, "timeout")}))
	clk.pass(ActivityMaxAge + 24*time.Hour)
	// A record created a minute ago proves the time to a store that doubts a clock jump.
	fresh := leadtest.Lead(bot, event.KindLead, 3, clk.now().Add(-time.Minute))
	ingest(t, s, bot, []event.Lead{fresh})
	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(pending(t, s, "bus")[2], event.Acked, 0, "")}))

	all := activity(t, s, event.ActivityQuery{})
	require.Len(t, all, 1, "the week-old attempts of both forwarders are gone, the idle one's too")
	assert.Equal(t, fresh.ID(), all[0].EventID)
	for _, d := range []event.Delivery{sales[0], bus[0]} {
		_, found := activityEvent(t, s, d.Event.ID)
		assert.False(t, found)
	}
	_, found := activityEvent(t, s, fresh.ID())
	assert.True(t, found)
	assert.Empty(t, activity(t, s, event.ActivityQuery{Since: clk.now().Add(time.Second)}))
}
