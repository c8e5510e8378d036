package natsstore_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// A seen key no replica prunes expires on the server after twice the retention (here
// 500ms, so a 1s TTL), and an acknowledged entry's retry state leaves only a marker
// that expires too: neither bucket grows by one key per record forever.
func TestSeenKeysAndMarkersExpireOnTheirOwn(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	now := base
	s := open(t, nc, func(o *natsstore.Options) {
		o.Retention, o.Now = 500*time.Millisecond, func() time.Time { return now }
	})
	l := leadtest.Lead(bot, event.KindLead, 1, base)
	res, err := s.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	require.Equal(t, 1, res.New)

	seen, err := js.KeyValue(t.Context(), "leadbridge_seen")
	require.NoError(t, err)
	_, err = seen.Get(t.Context(), l.ID())
	require.NoError(t, err, "claimed")
	require.Eventually(t, func() bool {
		_, err := seen.Get(t.Context(), l.ID())
		return err != nil
	}, 10*time.Second, 50*time.Millisecond, "the key expired on the server")

	ds, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	d := ds[0]
	d.Attempts, d.FirstTry, d.NextTry, d.LastError = 1, now, now.Add(time.Second), "bus: timeout"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Retrying}}))
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Acked}}))
	retry, err := js.Stream(t.Context(), "KV_leadbridge_retry")
	require.NoError(t, err)
	m, err := retry.GetLastMsgForSubject(t.Context(), "$KV.leadbridge_retry.>")
	require.NoError(t, err)
	assert.Equal(t, "PURGE", m.Header.Get("KV-Operation"))
	assert.NotEmpty(t, m.Header.Get(jetstream.MsgTTLHeader), "the purge marker expires")
}

// A wall clock jumped far ahead does not prune keys early: Prune follows the server's
// clock when the given time is ahead of it.
func TestPruneFollowsTheServersClockWhenTheWallClockJumpedAhead(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) { o.Retention, o.Now = 72*time.Hour, time.Now })
	l := leadtest.Lead(bot, event.KindLead, 1, time.Now().Add(-time.Hour))
	res, err := s.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	require.Equal(t, 1, res.New)

	n, err := s.Prune(t.Context(), time.Now().Add(1000*time.Hour))
	require.NoError(t, err)
	assert.Zero(t, n, "the key stays")
	res, err = s.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 1}, res, "and the record is not announced again")
}
