package natsstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// failedOnce ingests one record and records a failed first attempt of its crm entry,
// due again at once, as a replica would have; it returns the entry.
func failedOnce(t *testing.T, s *natsstore.Store) event.Delivery {
	t.Helper()
	_, err := s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 1, base))
	require.NoError(t, err)
	ds, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	d := ds[0]
	d.Attempts, d.FirstTry, d.NextTry, d.LastError = 1, time.Now(), time.Now(), "webhook crm: HTTP 503"
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Retrying}}))
	return d
}

// takeRetry waits until sh is handed entry seq (it pulls itself: a drain), as a retried
// entry (so its attempt goes through Entry).
func takeRetry(t *testing.T, sh *natsstore.Shared, seq uint64) {
	t.Helper()
	require.Eventually(t, func() bool {
		ds, err := sh.Pending(t.Context(), "crm", 0, 10)
		require.NoError(t, err)
		for _, d := range ds {
			if d.Seq == seq {
				assert.Equal(t, 1, d.Attempts)
				return true
			}
		}
		return false
	}, 10*time.Second, 20*time.Millisecond, "the server hands entry #%d over", seq)
}

// The server hands an entry to a second replica while the first is attempting it (its
// in-progress acks come slower than the consumer's AckWait, as when they are lost across
// a consumer leader change): the second does not attempt it, for as long as the holder
// lives (past the first claim's time: the holder renews it), and the holder's verdict
// stands.
func TestAnEntryHandedToTwoReplicasIsAttemptedByOne(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	ncA, _ := ns.Connect()
	t.Cleanup(ncA.Close)
	ncB, _ := ns.Connect()
	t.Cleanup(ncB.Close)
	sa, sb := open(t, ncA, nil), open(t, ncB, nil)
	entry := failedOnce(t, sa)

	a := sa.Shared(natsstore.SharedOptions{AckWait: time.Second, Drain: true})
	t.Cleanup(func() { _ = a.Close() })
	takeRetry(t, a, entry.Seq)
	d, found, err := a.Entry(t.Context(), "crm", entry.Seq)
	require.NoError(t, err)
	require.True(t, found, "a attempts it")
	require.Equal(t, 1, d.Attempts)
	claimed := time.Now()

	// b's consumer settings leave a's in-progress acks (every third of a second) too late.
	b := sb.Shared(natsstore.SharedOptions{AckWait: 100 * time.Millisecond, Drain: true})
	t.Cleanup(func() { _ = b.Close() })
	refused := 0
	for time.Since(claimed) < 2500*time.Millisecond {
		takeRetry(t, b, entry.Seq)
		_, found, err := b.Entry(t.Context(), "crm", entry.Seq)
		require.NoError(t, err)
		require.False(t, found, "b attempts an entry a is attempting (%s after a's claim)", time.Since(claimed))
		refused++
	}
	t.Logf("b was handed the entry and left it to a %d times", refused)

	d.Attempts++
	require.NoError(t, a.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Acked}}))
	depth, err := sa.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"], "a's delivery recorded")
	ds, err := b.Pending(t.Context(), "crm", 0, 10)
	require.NoError(t, err)
	assert.Empty(t, ds)
}

// A replica that dies during an attempt leaves its claim: once the claim has stood for
// the holder's AckWait unrenewed, another replica takes the entry over and delivers it,
// with the attempt count the dead one's attempt never added to. The claim, written after
// the server's delivery, lapses after the server offers the entry again: the replica
// refused then gets it back as the claim lapses, not a whole AckWait later.
func TestAClaimOfAReplicaThatDiedIsTakenOver(t *testing.T) {
	const ackWait = 2 * time.Second
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	ncA, _ := ns.Connect()
	t.Cleanup(ncA.Close)
	ncB, _ := ns.Connect()
	t.Cleanup(ncB.Close)
	sa, sb := open(t, ncA, nil), open(t, ncB, nil)
	entry := failedOnce(t, sa)

	a := sa.Shared(natsstore.SharedOptions{AckWait: ackWait, Drain: true})
	takeRetry(t, a, entry.Seq)
	time.Sleep(ackWait / 4) // the lane's due time comes a while after the delivery
	_, found, err := a.Entry(t.Context(), "crm", entry.Seq)
	require.NoError(t, err)
	require.True(t, found)
	claimed := time.Now()
	ncA.Close() // killed mid-attempt: no verdict, no renewal, no word to the server

	b := sb.Shared(natsstore.SharedOptions{AckWait: ackWait, Drain: true})
	t.Cleanup(func() { _ = b.Close() })
	var d event.Delivery
	refused := 0
	for found = false; !found; refused++ {
		takeRetry(t, b, entry.Seq)
		d, found, err = b.Entry(t.Context(), "crm", entry.Seq)
		require.NoError(t, err)
	}
	took := time.Since(claimed)
	assert.GreaterOrEqual(t, took, ackWait, "taken over only once a's claim lapsed")
	assert.Less(t, took, ackWait+ackWait/2, "taken over as the claim lapsed, not an AckWait after b was refused")
	t.Logf("b took the entry over %s after a's claim, refused %d times before", took, refused-1)
	assert.Equal(t, 1, d.Attempts, "the dead replica's attempt recorded nothing")
	d.Attempts++
	require.NoError(t, b.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Acked}}))
	depth, err := sb.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"], "delivered by b")
}

// A replica handed an entry whose retry state shows an attempt its own schedule does not
// know of (another replica attempted and recorded it since) leaves it: its next try is
// the server's to hand out when it is due.
func TestAnEntryRetriedElsewhereSinceItWasHandedOverIsLeft(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	entry := failedOnce(t, s)

	a := s.Shared(natsstore.SharedOptions{AckWait: 5 * time.Second, Drain: true})
	t.Cleanup(func() { _ = a.Close() })
	takeRetry(t, a, entry.Seq)
	// Another replica's second attempt failed and was recorded meanwhile.
	entry.Attempts, entry.NextTry = 2, time.Now().Add(time.Minute)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: entry, Verdict: event.Retrying}}))

	_, found, err := a.Entry(t.Context(), "crm", entry.Seq)
	require.NoError(t, err)
	assert.False(t, found, "attempt 2 again, before its next try")
	ds, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	assert.Equal(t, 2, ds[0].Attempts, "the retry state is as recorded")
}

// The outbox's duplicate window follows the poll interval (the next poll must come
// inside it): an hour at least, 20 intervals for a slow poll, unless set.
func TestTheDuplicateWindowFollowsThePollInterval(t *testing.T) {
	for _, c := range []struct {
		name          string
		interval, set time.Duration
		want          time.Duration
	}{
		{"default", 0, 0, natsstore.DefaultDuplicateWindow},
		{"fast poll", 30 * time.Second, 0, natsstore.DefaultDuplicateWindow},
		{"slow poll", 10 * time.Minute, 0, 200 * time.Minute},
		{"set", 10 * time.Minute, 2 * time.Hour, 2 * time.Hour},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
			nc, js := ns.Connect()
			t.Cleanup(nc.Close)
			open(t, nc, func(o *natsstore.Options) { o.PollInterval, o.DuplicateWindow = c.interval, c.set })
			st, err := js.Stream(t.Context(), "leadbridge_outbox")
			require.NoError(t, err)
			assert.Equal(t, c.want, st.CachedInfo().Config.Duplicates)
		})
	}
}

// A replica's lane retries an entry it recorded a failure of when the retry is due,
// through Entry, which may come after the server handed the entry back to this replica
// but before Pending read it again: the retry is made, not refused as if another
// replica had attempted it since.
func TestARetryDueBeforePendingReadTheRedeliveryIsMade(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	sh := s.Shared(natsstore.SharedOptions{AckWait: 5 * time.Second})
	t.Cleanup(func() { _ = sh.Close() })
	_, err := s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 1, base))
	require.NoError(t, err)
	var d event.Delivery
	require.Eventually(t, func() bool {
		ds, err := sh.Pending(t.Context(), "crm", 0, 10)
		require.NoError(t, err)
		if len(ds) == 1 {
			d = ds[0]
		}
		return len(ds) == 1
	}, 10*time.Second, 10*time.Millisecond)

	select { // forget earlier signals: the next one is the redelivery
	case <-sh.Changes():
	default:
	}
	d.Attempts, d.FirstTry, d.NextTry, d.LastError = 1, time.Now(), time.Now().Add(200*time.Millisecond), "webhook crm: HTTP 503"
	require.NoError(t, sh.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Retrying}}))
	select {
	case <-sh.Changes():
	case <-time.After(10 * time.Second):
		t.Fatal("the server did not hand the entry back at its next try")
	}
	got, found, err := sh.Entry(t.Context(), "crm", d.Seq)
	require.NoError(t, err)
	require.True(t, found, "the lane's own retry is refused")
	assert.Equal(t, 1, got.Attempts)
}
