package natsstore_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// replica is one leadbridge process's delivery side: its own connection, store, shared
// outbox and Dispatcher with a webhook forwarder "crm" to sink.
type replica struct {
	nc     *natsgo.Conn
	store  *natsstore.Store
	shared *natsstore.Shared
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex
	attempts map[string]int // by event id, attempts this replica finished
}

func startReplica(t *testing.T, ns *leadtest.NATS, sink *leadtest.Sink, ackWait time.Duration) *replica {
	t.Helper()
	return startReplicaWith(t, ns, sink, natsstore.SharedOptions{AckWait: ackWait})
}

func startReplicaWith(t *testing.T, ns *leadtest.NATS, sink *leadtest.Sink, o natsstore.SharedOptions) *replica {
	t.Helper()
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	r := &replica{nc: nc, store: open(t, nc, nil), done: make(chan struct{}), attempts: map[string]int{}}
	r.shared = r.store.Shared(o)
	f, err := webhook.New(webhook.Config{Name: "crm", URL: sink.URL + "/hooks", Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: r.shared, Grace: 50 * time.Millisecond,
		Routes: []forwarders.Route{{Forwarder: f, Concurrency: 4,
			Retry: forwarders.RetryPolicy{InitialInterval: 300 * time.Millisecond, MaxInterval: time.Second, MaxElapsed: time.Minute}}},
		OnResult: func(d event.Delivery, _ forwarders.Result, _ time.Duration, _ error) {
			r.mu.Lock()
			r.attempts[d.Event.ID]++
			r.mu.Unlock()
		}}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); _ = d.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

// stop ends the replica cleanly: the Dispatcher first, then the shared outbox.
func (r *replica) stop() {
	r.cancel()
	<-r.done
	_ = r.shared.Close()
}

// kill ends the replica as SIGKILL would: its connection drops with whatever it holds.
func (r *replica) kill() {
	r.nc.Close()
	r.cancel()
	<-r.done
}

func (r *replica) delivered() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.attempts)
}

func counts(ids []string) map[string]int {
	out := map[string]int{}
	for _, id := range ids {
		out[id]++
	}
	return out
}

// Two replicas on one outbox deliver every entry once between them and leave it empty.
func TestSharedOutboxReplicasDeliverEachEntryOnce(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	sink := leadtest.NewSink(t, nil)
	a := startReplica(t, ns, sink, 5*time.Second)
	b := startReplica(t, ns, sink, 5*time.Second)

	page := leadtest.Leads(bot, 1, 300, base)
	res, err := a.store.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.Equal(t, 300, res.New)

	require.Eventually(t, func() bool { return len(counts(sink.IDs())) == 300 }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		d, err := b.store.Depth(t.Context())
		return err == nil && d["crm"] == 0
	}, 10*time.Second, 20*time.Millisecond, "every delivery recorded")
	for id, n := range counts(sink.IDs()) {
		assert.Equal(t, 1, n, "event %s delivered %d times", id, n)
	}
	// Each attempt by one replica (OnResult follows the recording of its batch).
	require.Eventually(t, func() bool { return a.delivered()+b.delivered() == 300 }, 10*time.Second, 20*time.Millisecond)
	t.Logf("replica a delivered %d, b %d", a.delivered(), b.delivered())
}

// A replica killed while it holds entries (its attempts in flight) loses none: the
// other replica gets them after AckWait. Only the attempts in flight at the kill repeat.
func TestSharedOutboxAKilledReplicasEntriesGoToAnother(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	sink := leadtest.NewSink(t, nil)
	sink.Hold()
	a := startReplica(t, ns, sink, time.Second)

	page := leadtest.Leads(bot, 1, 20, base)
	_, err := a.store.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return sink.Count() == 4 }, 10*time.Second, 10*time.Millisecond,
		"a's four slots are in flight")
	inFlight := counts(sink.IDs())
	a.kill()

	b := startReplica(t, ns, sink, time.Second)
	sink.Release()
	require.Eventually(t, func() bool { return len(counts(sink.IDs())) == 20 }, 20*time.Second, 20*time.Millisecond,
		"b delivers everything a held")
	require.Eventually(t, func() bool {
		d, err := b.store.Depth(t.Context())
		return err == nil && d["crm"] == 0
	}, 10*time.Second, 20*time.Millisecond)
	for id, n := range counts(sink.IDs()) {
		if inFlight[id] > 0 {
			assert.LessOrEqual(t, n, 2, "event %s: in flight at the kill, repeated at most once", id)
		} else {
			assert.Equal(t, 1, n, "event %s was not in flight at the kill", id)
		}
	}
}

// A failed attempt goes back to the server until its next try, keeps its attempt count
// and retry budget in the store, and is delivered on a later attempt.
func TestSharedOutboxRetriesKeepTheirSchedule(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	var mu sync.Mutex
	failed := map[string]bool{}
	sink := leadtest.NewSink(t, func(_ int, id string) int {
		mu.Lock()
		defer mu.Unlock()
		if !failed[id] {
			failed[id] = true
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	a := startReplica(t, ns, sink, 5*time.Second)
	b := startReplica(t, ns, sink, 5*time.Second)
	page := leadtest.Leads(bot, 1, 10, base)
	_, err := a.store.Ingest(t.Context(), bot, page)
	require.NoError(t, err)

	require.Eventually(t, func() bool { return sink.Count() >= 20 }, 20*time.Second, 20*time.Millisecond, "%v", counts(sink.IDs()))
	require.Eventually(t, func() bool {
		d, err := a.store.Depth(t.Context())
		return err == nil && d["crm"] == 0
	}, 10*time.Second, 20*time.Millisecond)
	first := map[string]time.Time{}
	ids, times := sink.IDs(), sink.Times()
	for i, id := range ids {
		if at, ok := first[id]; ok {
			assert.GreaterOrEqual(t, times[i].Sub(at), 200*time.Millisecond,
				"event %s retried before its backoff (300ms ±25%%) ran out", id)
			continue
		}
		first[id] = times[i]
	}
	for id, n := range counts(ids) {
		assert.Equal(t, 2, n, "event %s: one failure, one success", id)
	}
	_ = b
}

// A target slower than AckWait does not make the server hand its entries to another
// replica: the holder sends in-progress acks while it holds them.
func TestSharedOutboxSlowTargetKeepsItsEntries(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	sink := leadtest.NewSink(t, nil)
	sink.Hold()
	a := startReplica(t, ns, sink, time.Second)
	page := leadtest.Leads(bot, 1, 12, base)
	_, err := a.store.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return sink.Count() == 4 }, 10*time.Second, 10*time.Millisecond)
	b := startReplica(t, ns, sink, time.Second)

	// Three AckWaits pass on the server while a holds all twelve (four in flight, eight
	// waiting).
	ackWaitsPass(t, ns, 3, time.Second)
	assert.Equal(t, 4, sink.Count(), "no entry went to b while a held it")
	sink.Release()
	require.Eventually(t, func() bool { return len(counts(sink.IDs())) == 12 }, 20*time.Second, 20*time.Millisecond)
	require.Eventually(t, func() bool {
		d, err := a.store.Depth(t.Context())
		return err == nil && d["crm"] == 0
	}, 10*time.Second, 20*time.Millisecond)
	for id, n := range counts(sink.IDs()) {
		assert.Equal(t, 1, n, "event %s", id)
	}
	assert.Zero(t, b.delivered(), "b never got one of a's entries")
}

// ackWaitsPass returns once the server has redelivered an unacked probe message n times
// under a consumer with the given AckWait: proof that n AckWaits passed on its clock.
func ackWaitsPass(t *testing.T, ns *leadtest.NATS, n int, ackWait time.Duration) {
	t.Helper()
	ns.CreateStream("PROBE", time.Minute, "probe")
	nc, js := ns.Connect()
	defer nc.Close()
	ctx := t.Context()
	_, err := js.Publish(ctx, "probe", []byte("tick"))
	require.NoError(t, err)
	c, err := js.CreateOrUpdateConsumer(ctx, "PROBE", jetstream.ConsumerConfig{Durable: "probe",
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	require.NoError(t, err)
	for i := 0; i <= n; i++ {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(ackWait*3))
		require.NoError(t, err)
		var got int
		for m := range batch.Messages() {
			md, err := m.Metadata()
			require.NoError(t, err)
			assert.Equal(t, uint64(i+1), md.NumDelivered)
			got++
		}
		require.Equal(t, 1, got, "probe delivery %d", i+1)
	}
}

// Entries that keep failing wait for their retries without being held, so however many
// there are, fresh entries behind them still go out.
func TestSharedOutboxFailingEntriesDoNotStallFreshOnes(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	page := leadtest.Leads(bot, 1, 20, base)
	failing := map[string]bool{}
	for _, l := range page[:8] {
		failing[l.ID()] = true
	}
	sink := leadtest.NewSink(t, func(_ int, id string) int {
		if failing[id] {
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	a := startReplicaWith(t, ns, sink, natsstore.SharedOptions{AckWait: 5 * time.Second, MaxHeld: 4})
	_, err := a.store.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		got := counts(sink.IDs())
		for _, l := range page[8:] {
			if got[l.ID()] == 0 {
				return false
			}
		}
		return true
	}, 20*time.Second, 20*time.Millisecond, "the twelve good entries go out past the eight failing ones")
	for _, l := range page[8:] {
		assert.Equal(t, 1, counts(sink.IDs())[l.ID()])
	}
}

// drainOnce runs a Dispatcher.Drain (what `once` and `backfill` do) through a draining
// shared outbox of its own connection, delivering to sink, and returns when it ends.
func drainOnce(t *testing.T, ns *leadtest.NATS, sink *leadtest.Sink, maxHeld int) {
	t.Helper()
	nc, _ := ns.Connect()
	defer nc.Close()
	sh := open(t, nc, nil).Shared(natsstore.SharedOptions{AckWait: 5 * time.Second, MaxHeld: maxHeld, Drain: true})
	defer func() { require.NoError(t, sh.Close()) }()
	f, err := webhook.New(webhook.Config{Name: "crm", URL: sink.URL + "/hooks", Timeout: 5 * time.Second}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: sh, Grace: 50 * time.Millisecond, Routes: []forwarders.Route{{Forwarder: f, Concurrency: 4,
		Retry: forwarders.RetryPolicy{InitialInterval: 100 * time.Millisecond, MaxInterval: 200 * time.Millisecond, MaxElapsed: time.Minute}}}}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Drain(ctx))
	require.NoError(t, ctx.Err(), "the drain ended by itself")
}

// A drain (`once`) delivers everything, retrying within the drain, and ends by itself;
// beside a running replica, each entry still goes out once.
func TestSharedOutboxDrain(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	var mu sync.Mutex
	failed := map[string]bool{}
	sink := leadtest.NewSink(t, func(_ int, id string) int {
		mu.Lock()
		defer mu.Unlock()
		if !failed[id] {
			failed[id] = true
			return http.StatusServiceUnavailable
		}
		return http.StatusNoContent
	})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	page := leadtest.Leads(bot, 1, 30, base)
	_, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)

	drainOnce(t, ns, sink, 8) // fewer pulled ahead than queued: it pulls again as the lane takes them
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"], "the drain delivered everything, failures retried within it")
	for id, n := range counts(sink.IDs()) {
		assert.Equal(t, 2, n, "event %s: one failure, one success", id)
	}

	// Beside a running replica.
	a := startReplica(t, ns, sink, 5*time.Second)
	more := leadtest.Leads(bot, 100, 60, base)
	_, err = s.Ingest(t.Context(), bot, more)
	require.NoError(t, err)
	drainOnce(t, ns, sink, natsstore.DefaultMaxHeld)
	require.Eventually(t, func() bool {
		d, err := s.Depth(t.Context())
		return err == nil && d["crm"] == 0
	}, 20*time.Second, 20*time.Millisecond)
	got := counts(sink.IDs())
	for _, l := range more {
		assert.Equal(t, 2, got[l.ID()], "event %s: one failure, one success, by one process", l.ID())
	}
	t.Logf("the running replica made %d of the deliveries", a.delivered())
}

// Draining, an attempt on a retried entry that comes before the previous attempt's
// verdict is recorded (the recorder batches) waits for it instead of dropping the retry.
func TestSharedDrainEntryWaitsForTheVerdictBeforeIt(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	_, err := s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 1, base))
	require.NoError(t, err)
	sh := s.Shared(natsstore.SharedOptions{Drain: true})
	t.Cleanup(func() { _ = sh.Close() })
	ds, err := sh.Pending(t.Context(), "crm", 0, 10)
	require.NoError(t, err)
	require.Len(t, ds, 1) // handed for its first attempt

	found := make(chan bool, 1)
	go func() {
		_, ok, err := sh.Entry(t.Context(), "crm", ds[0].Seq) // the retry, due before the verdict is in
		assert.NoError(t, err)
		found <- ok
	}()
	d := ds[0]
	d.Attempts, d.FirstTry, d.NextTry, d.LastError = 1, time.Now(), time.Now(), "webhook crm: HTTP 503"
	require.NoError(t, sh.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Retrying}}))
	assert.True(t, <-found, "the retry gets the entry once the failure is recorded")
}
