package console_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bigRig is a console over a store that took leads leads of bot, routed to each of fwds,
// and recorded every delivery's outcome: dead for every deadEvery-th, else delivered.
func bigRig(t *testing.T, leads, deadEvery int, fwds []string) (*dedupe.Store, http.Handler) {
	t.Helper()
	store := leadtest.OpenStore(t, dedupe.Options{Initial: dedupe.InitialEmit, Route: func(event.Event) []string { return fwds }})
	now := time.Now()
	_, err := store.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, leads, now.Add(-2*time.Hour)))
	require.NoError(t, err)
	var infos []ops.ForwarderInfo
	for _, f := range fwds {
		infos = append(infos, ops.ForwarderInfo{Name: f, Type: "webhook"})
		var outcomes []event.Outcome
		for i, d := range leadtest.Pending(t, store, f) {
			o := event.Outcome{Delivery: d, Verdict: event.Acked, Took: time.Duration(i) * time.Microsecond}
			if i%deadEvery == 0 {
				o.Verdict, o.Delivery.LastError, o.At = event.Dead, fmt.Sprintf("webhook %s: 400 Bad Request", f), now
			}
			outcomes = append(outcomes, o)
		}
		require.NoError(t, store.Record(t.Context(), outcomes))
	}
	local := &ops.Local{Store: store, Chatbots: []event.Chatbot{{Serial: bot, Name: "Main site", Account: "agency"}}, Forwarders: infos}
	return store, console.New(console.Options{Operator: local, Activity: store, Token: token})
}

// A full activity log, ten forwarders with 1,000 attempts each, and 1,000 dead letters:
// every page answers with its first 50 rows and pages through the rest (the time each
// took is logged).
func TestAFullActivityLogOfTenForwarders(t *testing.T) {
	var fwds []string
	for i := range 10 {
		fwds = append(fwds, fmt.Sprintf("f%d", i))
	}
	store, c := bigRig(t, dedupe.ActivityPerForwarder, 10, fwds)
	all, err := store.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	require.Len(t, all, 10*dedupe.ActivityPerForwarder)
	get := func(path string) string {
		t.Helper()
		start := time.Now()
		w := from(c, "127.0.0.1:1", "GET", "http://127.0.0.1"+path, nil, "Authorization", "Bearer "+token)
		t.Logf("%s: %v, %d bytes", path, time.Since(start), w.Body.Len())
		require.Equal(t, http.StatusOK, w.Code, path)
		return w.Body.String()
	}
	rows := func(page, table string) int {
		i := strings.Index(page, `<table id="`+table+`">`)
		require.GreaterOrEqual(t, i, 0, table)
		return strings.Count(page[i:i+strings.Index(page[i:], "</table>")], "<tr")
	}

	o := get("/ui/")
	assert.Contains(t, o, "<b>9000</b> delivered, 1000 failed in the last hour")
	assert.Contains(t, o, "1000 dead letters")
	assert.Equal(t, 1+10, rows(o, "forwarders"))
	assert.Equal(t, 1+50, rows(get("/ui/activity"), "activity"))
	last := get("/ui/activity?page=200")
	assert.Equal(t, 1+50, rows(last, "activity"))
	assert.Contains(t, last, "page 200 of 200")
	dead := get("/ui/activity?forwarder=f3&outcome=dead&page=2")
	assert.Equal(t, 1+50, rows(dead, "activity"))
	assert.Equal(t, 50, strings.Count(dead, "<td>f3</td>"))
	assert.Contains(t, dead, "page 2 of 2")
	assert.Contains(t, get("/ui/activity?chatbot=nope"), "Nothing recorded that matches")
	ev := get("/ui/events/" + all[0].EventID)
	assert.Equal(t, 1+10, rows(ev, "attempts"), "the event's attempt at each forwarder")
	d := get("/ui/dead?page=20")
	assert.Contains(t, d, "1000 dead letters")
	assert.Contains(t, d, "page 20 of 20")
	assert.Equal(t, 1+50, rows(d, "dead"))
}

// Replaying every dead letter of a forwarder that holds 10,000 is one store transaction
// (its time is logged).
func TestReplayAllOfTenThousandDeadLetters(t *testing.T) {
	store, c := bigRig(t, 10_000, 1, []string{"crm"})
	dead, err := store.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	require.Len(t, dead, 10_000)
	start := time.Now()
	w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/dead/replay", url.Values{"all": {"crm"}}, "Authorization", "Bearer "+token)
	t.Logf("replay all of 10,000: %v", time.Since(start))
	require.Equal(t, http.StatusSeeOther, w.Code, w.Body.String())
	dead, err = store.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	assert.Empty(t, dead)
	assert.Len(t, leadtest.Pending(t, store, "crm"), 10_000)
}
