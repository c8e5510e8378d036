package natsstore_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// One replica at a time holds a chatbot's lease; the holder renews it; a holder that
// stops renewing loses it when it expires, and one that releases it frees it at once.
func TestLeases(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	leases := func() *natsstore.Leases {
		nc, _ := ns.Connect()
		t.Cleanup(nc.Close)
		l, err := open(t, nc, nil).Leases(t.Context(), 1)
		require.NoError(t, err)
		return l
	}
	a, b := leases(), leases()
	ctx := t.Context()
	const ttl = time.Second

	held, holder, err := a.Acquire(ctx, bot, "replica-a", ttl)
	require.NoError(t, err)
	assert.True(t, held)
	assert.Equal(t, "replica-a", holder)
	held, holder, err = b.Acquire(ctx, bot, "replica-b", ttl)
	require.NoError(t, err)
	assert.False(t, held, "a holds it")
	assert.Equal(t, "replica-a", holder)
	held, _, err = a.Acquire(ctx, bot, "replica-a", ttl)
	require.NoError(t, err)
	assert.True(t, held, "the holder renews")
	held, _, err = b.Acquire(ctx, "bot2", "replica-b", ttl)
	require.NoError(t, err)
	assert.True(t, held, "another chatbot is free")
	holders, err := b.Holders(ctx)
	require.NoError(t, err)
	assert.Equal(t, map[string]string{bot: "replica-a", "bot2": "replica-b"}, holders)

	// Renewals keep it: three seconds pass on the server, more than a 2s lease, while a
	// renews every second.
	for range 3 {
		held, _, err = a.Acquire(ctx, bot, "replica-a", 2*ttl)
		require.NoError(t, err)
		require.True(t, held)
		ackWaitsPass(t, ns, 1, ttl)
		held, _, err = b.Acquire(ctx, bot, "replica-b", ttl)
		require.NoError(t, err)
		require.False(t, held, "a renewed it")
	}

	// a dies (stops renewing): b takes the chatbot over once the lease expires.
	require.Eventually(t, func() bool {
		held, _, err := b.Acquire(ctx, bot, "replica-b", ttl)
		return err == nil && held
	}, 10*time.Second, 50*time.Millisecond)
	held, holder, err = a.Acquire(ctx, bot, "replica-a", ttl)
	require.NoError(t, err)
	assert.False(t, held, "a, back, finds b holding it")
	assert.Equal(t, "replica-b", holder)

	// Release frees it at once; a release by a non-holder changes nothing.
	require.NoError(t, a.Release(ctx, bot, "replica-a"))
	held, _, err = a.Acquire(ctx, bot, "replica-a", ttl)
	require.NoError(t, err)
	assert.False(t, held)
	require.NoError(t, b.Release(ctx, bot, "replica-b"))
	held, _, err = a.Acquire(ctx, bot, "replica-a", ttl)
	require.NoError(t, err)
	assert.True(t, held)

	_, _, err = a.Acquire(ctx, "bad serial", "replica-a", ttl)
	assert.ErrorContains(t, err, "want a serial")
}

// A resume by any replica or operator reaches every replica that watches.
func TestWatchResumes(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	a, b := open(t, nc, nil), open(t, nc, nil)
	got := make(chan string, 4)
	require.NoError(t, b.WatchResumes(t.Context(), func(f string) { got <- f }))
	require.NoError(t, a.Pause(t.Context(), "crm", "crm: HTTP 410", "h1"))
	was, err := a.Resume(t.Context(), "crm")
	require.NoError(t, err)
	require.True(t, was)
	select {
	case f := <-got:
		assert.Equal(t, "crm", f, "the pause itself is not a resume; its removal is")
	case <-time.After(10 * time.Second):
		t.Fatal("no resume seen")
	}
}

// Replicas announce themselves and count each other; a clean stop counts itself out at
// once; an owner that cannot be a key is refused, by name.
func TestReplicaJoinAndLeave(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	l, err := open(t, nc, nil).Leases(t.Context(), 1)
	require.NoError(t, err)
	ctx := t.Context()
	a, b := l.Replica("replica-a"), l.Replica("replica-b")
	n, err := a.Join(ctx, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = b.Join(ctx, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	n, err = a.Join(ctx, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, 2, n, "a renewal is no new replica")
	require.NoError(t, b.Leave(ctx))
	n, err = a.Join(ctx, time.Minute)
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	_, err = l.Replica("host.example.com").Join(ctx, time.Minute)
	assert.ErrorContains(t, err, `join as replica host.example.com: want an owner of letters`)
	assert.Regexp(t, `^[A-Za-z0-9_-]+-[0-9]+-[0-9a-f]{8}$`, natsstore.NewOwner())
	assert.NotEqual(t, natsstore.NewOwner(), natsstore.NewOwner())
}

// A chatbot polled by another replica (it holds the lease) has that replica's last
// success here too: readiness and a takeover's window read the shared state, not what
// this process saw at its start.
func TestLastOKIsShared(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	a, b := open(t, nc, nil), open(t, nc, nil)
	ctx := t.Context()
	at := time.Now().Add(-time.Minute).Round(0)
	require.NoError(t, b.RecordPoll(ctx, bot, at, nil))
	got, err := a.LastOK(ctx, bot)
	require.NoError(t, err)
	assert.True(t, got.Equal(at), "a sees b's success: got %v, want %v", got, at)

	// a's own later success keeps its monotonic reading; b's later one wins over it.
	mine := time.Now()
	require.NoError(t, a.RecordPoll(ctx, bot, mine, nil))
	got, err = a.LastOK(ctx, bot)
	require.NoError(t, err)
	assert.Equal(t, mine, got, "its own success, monotonic reading included")
	later := mine.Add(time.Second).Round(0)
	require.NoError(t, b.RecordPoll(ctx, bot, later, nil))
	got, err = a.LastOK(ctx, bot)
	require.NoError(t, err)
	assert.True(t, got.Equal(later))
	// A failure recorded elsewhere changes no last success.
	require.NoError(t, b.RecordPoll(ctx, bot, later.Add(time.Second), errors.New("HTTP 500")))
	got, err = a.LastOK(ctx, bot)
	require.NoError(t, err)
	assert.True(t, got.Equal(later))
}
