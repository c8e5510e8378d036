package natsstore_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

const bot = "bot1"

var base = time.Date(2024, 3, 1, 10, 0, 0, 0, time.UTC)

func open(t *testing.T, nc *natsgo.Conn, mod func(*natsstore.Options)) *natsstore.Store {
	t.Helper()
	o := natsstore.Options{Conn: nc, Initial: natsstore.InitialEmit, Route: leadtest.RouteTo("bus", "crm"),
		Retention: 72 * time.Hour, Now: func() time.Time { return base.Add(time.Hour) }}
	if mod != nil {
		mod(&o)
	}
	s, err := natsstore.Open(t.Context(), o)
	require.NoError(t, err)
	return s
}

func pendingIDs(t *testing.T, s *natsstore.Store, fwd string) []string {
	t.Helper()
	ds, err := s.Pending(t.Context(), fwd, 0, 0)
	require.NoError(t, err)
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Event.ID
	}
	return out
}

// A replica whose ingest dies after publishing a page's outbox entries and before
// claiming its records (here: the server refuses its claims) leaves the records unseen;
// the next ingest (another replica) takes them, and the stream holds each delivery once.
func TestIngestCutOffBeforeTheClaimIsTakenAgainOnce(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) {
		o.Users = []*natsserver.User{
			{Username: "full", Password: "full"},
			{Username: "noclaim", Password: "noclaim", Permissions: &natsserver.Permissions{
				Publish: &natsserver.SubjectPermission{Allow: []string{">"}, Deny: []string{"$KV.leadbridge_seen.>"}}}},
		}
	}})
	conn := func(user string) *natsgo.Conn {
		nc, err := natsgo.Connect(ns.URL(), natsgo.UserInfo(user, user))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	full := open(t, conn("full"), nil)
	cut := open(t, conn("noclaim"), func(o *natsstore.Options) { o.Timeout = 300 * time.Millisecond })

	page := leadtest.Leads(bot, 1, 3, base)
	_, err := cut.Ingest(t.Context(), bot, page)
	require.Error(t, err, "the claim must fail")
	assert.ErrorContains(t, err, "claim")
	assert.Len(t, pendingIDs(t, full, "bus"), 3, "the entries went out first")

	res, err := full.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 3, res.New, "unclaimed records are taken by the next ingest")
	want := []string{page[0].ID(), page[1].ID(), page[2].ID()}
	assert.Equal(t, want, pendingIDs(t, full, "bus"), "each delivery once: the duplicate window dropped the repeats")
	assert.Equal(t, want, pendingIDs(t, full, "crm"))

	res, err = full.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 3}, res)
}

// Two replicas polling the same chatbot at once (a lease lapsed) take each record once
// between them, and the outbox owes each delivery once.
func TestTwoReplicasIngestingTheSamePageTakeEachRecordOnce(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	var replicas []*natsstore.Store
	for range 3 {
		nc, _ := ns.Connect()
		t.Cleanup(nc.Close)
		replicas = append(replicas, open(t, nc, nil))
	}
	for round := range 5 {
		page := leadtest.Leads(bot, 1, 20*(round+1), base)
		var mu sync.Mutex
		total := event.Ingested{}
		var wg sync.WaitGroup
		for _, s := range replicas {
			wg.Go(func() {
				res, err := s.Ingest(context.Background(), bot, page)
				assert.NoError(t, err)
				mu.Lock()
				total = total.Add(res)
				mu.Unlock()
			})
		}
		wg.Wait()
		assert.Equal(t, 20, total.New, "round %d: each new record taken by exactly one replica", round)
		assert.Len(t, total.Events, 20, "round %d", round)
		ids := pendingIDs(t, replicas[0], "bus")
		assert.Len(t, ids, 20*(round+1), "round %d", round)
		seen := map[string]bool{}
		for _, id := range ids {
			assert.False(t, seen[id], "round %d: %s owed twice", round, id)
			seen[id] = true
		}
	}
	bots, err := replicas[1].Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 100, bots[bot].Seen, fmt.Sprint("the count adds up across replicas: ", bots[bot]))
}

// A backfill cut off between its outbox entries and its claims (the daemon runs beside
// it) leaves its unseen records unclaimed; the daemon's next poll takes them, and each
// delivery is owed once, not once by the backfill and once more by the poll. The same
// holds the other way round and for a backfill run again after the failed one.
func TestBackfillCutOffBeforeTheClaimIsNotOwedTwice(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) {
		o.Users = []*natsserver.User{
			{Username: "full", Password: "full"},
			{Username: "noclaim", Password: "noclaim", Permissions: &natsserver.Permissions{
				Publish: &natsserver.SubjectPermission{Allow: []string{">"}, Deny: []string{"$KV.leadbridge_seen.>"}}}},
		}
	}})
	conn := func(user string) *natsgo.Conn {
		nc, err := natsgo.Connect(ns.URL(), natsgo.UserInfo(user, user))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	full := open(t, conn("full"), nil)
	cut := open(t, conn("noclaim"), func(o *natsstore.Options) { o.Timeout = 300 * time.Millisecond })

	page := leadtest.Leads(bot, 1, 2, base)
	_, err := cut.Backfill(t.Context(), bot, page, event.BackfillOptions{})
	require.Error(t, err, "the claim must fail")
	_, err = cut.Backfill(t.Context(), bot, page, event.BackfillOptions{})
	require.Error(t, err, "the claim must fail again")
	res, err := full.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 2, res.New, "unclaimed records are taken by the next poll")
	want := []string{page[0].ID(), page[1].ID()}
	assert.Equal(t, want, pendingIDs(t, full, "bus"), "each delivery once")

	// A poll cut off, then a backfill of the same records.
	more := leadtest.Leads(bot, 3, 2, base)
	_, err = cut.Ingest(t.Context(), bot, more)
	require.Error(t, err, "the claim must fail")
	res, err = full.Backfill(t.Context(), bot, more, event.BackfillOptions{})
	require.NoError(t, err)
	assert.Equal(t, 2, res.New)
	want = append(want, more[0].ID(), more[1].ID())
	assert.Equal(t, want, pendingIDs(t, full, "bus"), "each delivery once")
	assert.Equal(t, want, pendingIDs(t, full, "crm"))

	// A deliberate resend still sends again.
	res, err = full.Backfill(t.Context(), bot, more, event.BackfillOptions{Resend: true})
	require.NoError(t, err)
	assert.Len(t, res.Events, 2)
	assert.Len(t, pendingIDs(t, full, "bus"), 6, "a resend is owed again")
}
