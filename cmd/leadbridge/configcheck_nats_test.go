package main

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// `config check` and `status` with the JetStream store only look: on a server where no
// daemon started they create no bucket or stream (the check says what a start will
// create, status says they are missing), and on a store a daemon made they change no
// setting of it.
func TestConfigCheckOnTheJetStreamStoreCreatesNothing(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	cfg := natsConfig(t, "check", "http://127.0.0.1:9", "http://127.0.0.1:9", ns.URL(), "")
	streams := func() []string {
		var names []string
		l := js.StreamNames(t.Context())
		for name := range l.Name() {
			names = append(names, name)
		}
		require.NoError(t, l.Err())
		return names
	}

	code, out, stderr := runMain(t, "config", "check", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, out, ": ok (1 chatbots, 1 forwarders)")
	assert.Contains(t, out, "store nats:leadbridge: bucket leadbridge_seen, bucket leadbridge_chatbots,")
	assert.Contains(t, out, "stream leadbridge_activity_events do not exist yet: they will be created at start")
	assert.Empty(t, stderr)
	assert.Empty(t, streams(), "the check created no bucket or stream")

	code, _, stderr = runMain(t, "status", "--config", cfg)
	assert.NotEqual(t, 0, code)
	assert.Contains(t, stderr, "not created yet: bucket leadbridge_seen")
	assert.Contains(t, stderr, `is store.nats.prefix "leadbridge" right?`)
	assert.Empty(t, streams(), "status created no bucket or stream")

	// A store a daemon made, with a duplicate window other than this config's (an older
	// poll.interval): the check reads it and leaves its settings alone.
	_, err := natsstore.Open(t.Context(), natsstore.Options{Conn: nc, DuplicateWindow: 2 * time.Hour})
	require.NoError(t, err)
	before := len(streams())
	code, out, stderr = runMain(t, "config", "check", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.NotContains(t, out, "do not exist yet")
	assert.Empty(t, stderr)
	outbox, err := js.Stream(t.Context(), "leadbridge_outbox")
	require.NoError(t, err)
	assert.Equal(t, 2*time.Hour, outbox.CachedInfo().Config.Duplicates, "the check changed no setting")
	assert.Len(t, streams(), before)
	_, err = js.KeyValue(t.Context(), "leadbridge_leases")
	assert.ErrorIs(t, err, jetstream.ErrBucketNotFound, "nor made the lease bucket")
}
