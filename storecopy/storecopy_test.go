package storecopy_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
	"github.com/leadbridge/leadbridge/storecopy"
)

const (
	serial    = "BOT-1"
	retention = 2160 * time.Hour
)

// openNATS opens a JetStream store on an in-process server.
func openNATS(t *testing.T) *natsstore.Store {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	st, err := natsstore.Open(t.Context(), natsstore.Options{Conn: nc, Initial: natsstore.InitialEmit,
		Retention: retention, Route: leadtest.RouteTo("crm")})
	require.NoError(t, err)
	return st
}

// A copy carries seen keys, chatbot state, pending deliveries with their retry state,
// dead letters and pauses; a second copy adds none of them again.
func TestCopyCarriesEverythingOnce(t *testing.T) {
	ctx := t.Context()
	now := time.Now().UTC()
	leads := leadtest.Leads(serial, 1, 5, now.Add(-time.Hour))
	src := leadtest.OpenStore(t, dedupe.Options{Initial: dedupe.InitialEmit, Retention: retention, Route: leadtest.RouteTo("crm")})
	_, err := src.Ingest(ctx, serial, leads)
	require.NoError(t, err)
	ds := leadtest.Pending(t, src, "crm")
	require.Len(t, ds, 5)
	retry := ds[2]
	retry.Attempts, retry.FirstTry, retry.NextTry, retry.LastError = 3, now.Add(-time.Minute), now.Add(time.Minute), "webhook crm: HTTP 503"
	require.NoError(t, src.Record(ctx, []event.Outcome{
		{Delivery: ds[0], Verdict: event.Acked}, {Delivery: ds[1], Verdict: event.Acked},
		{Delivery: retry, Verdict: event.Retrying},
		{Delivery: ds[3], Verdict: event.Dead, At: now},
	}))
	require.NoError(t, src.RecordPoll(ctx, serial, now, nil))
	require.NoError(t, src.Pause(ctx, "crm", "crm: HTTP 410 Gone", "h1"))
	dst := openNATS(t)

	tally, err := storecopy.Copy(ctx, src, dst, "lb.db")
	require.NoError(t, err)
	assert.Equal(t, storecopy.Tally{Seen: 5, Chatbots: 1, Pending: 2, Dead: 1, Pauses: 1}, tally)
	tally, err = storecopy.Copy(ctx, src, dst, "lb.db")
	require.NoError(t, err)
	assert.Equal(t, 5, tally.Already, "a second copy adds no seen key")
	assert.Zero(t, tally.Seen)

	res, err := dst.Ingest(ctx, serial, leads)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 5}, res, "every record the bbolt store knew is known")
	pending, err := dst.Pending(ctx, "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, pending, 2, "each owed delivery once, after two copies")
	assert.Equal(t, []string{ds[2].Event.ID, ds[4].Event.ID}, []string{pending[0].Event.ID, pending[1].Event.ID})
	assert.Equal(t, 3, pending[0].Attempts, "the retry state came along")
	assert.Equal(t, "webhook crm: HTTP 503", pending[0].LastError)
	assert.True(t, retry.FirstTry.Equal(pending[0].FirstTry))
	dead, err := dst.DeadLetters(ctx, "")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.Equal(t, ds[3].Event.ID, dead[0].Event.ID)
	bots, err := dst.Chatbots(ctx)
	require.NoError(t, err)
	assert.True(t, bots[serial].Initialized)
	assert.Equal(t, 5, bots[serial].Seen)
	assert.True(t, now.Equal(bots[serial].LastOK))
	paused, err := dst.Paused(ctx)
	require.NoError(t, err)
	assert.Equal(t, "h1", paused["crm"].ConfigHash)
}

// A copy stops at the first failure and says how far it got.
func TestCopyStopsAtAFailure(t *testing.T) {
	ctx := t.Context()
	src := leadtest.OpenStore(t, dedupe.Options{Initial: dedupe.InitialEmit, Retention: retention, Route: leadtest.RouteTo("crm")})
	_, err := src.Ingest(ctx, serial, leadtest.Leads(serial, 1, 3, time.Now().UTC().Add(-time.Hour)))
	require.NoError(t, err)
	dst := openNATS(t)
	tally, err := storecopy.Copy(ctx, src, dst, "lb.db")
	require.NoError(t, err)
	require.Equal(t, 3, tally.Pending)

	require.NoError(t, src.Close())
	tally, err = storecopy.Copy(ctx, src, dst, "lb.db")
	require.ErrorIs(t, err, bolt.ErrDatabaseNotOpen)
	assert.Equal(t, storecopy.Tally{}, tally)
}
