package nats

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// fullAfter creates stream LEADS over neoagent.> that refuses every message after the
// first n (discard new), so that a batch is only partly taken.
func fullAfter(t *testing.T, ns *leadtest.NATS, n int64) {
	t.Helper()
	js, err := jetstream.New(connect(t, ns.URL()))
	require.NoError(t, err)
	_, err = js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "LEADS", Subjects: []string{"neoagent.>"},
		MaxMsgs: n, Discard: jetstream.DiscardNew})
	require.NoError(t, err)
}

// storedIDs is the Nats-Msg-Id of every message of stream LEADS.
func storedIDs(ns *leadtest.NATS) []string {
	var ids []string
	for _, m := range ns.ReadStream("LEADS") {
		ids = append(ids, m.Header.Get("Nats-Msg-Id"))
	}
	return ids
}

func sampleEvents(n int) []event.Event {
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = sampleEvent(i + 1)
	}
	return evs
}

func deliverBatch(f *Forwarder, evs []event.Event) []error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return f.DeliverBatch(ctx, evs, forwarders.Rest{})
}

// Each event of a pipelined batch counts as taken only on its own ack: the stream
// takes 25 of 40 and refuses the rest, and exactly those 25 come back without error.
func TestJetStreamBatchTakesEachEventOnItsOwnAck(t *testing.T) {
	ns := startServer(t, nil)
	fullAfter(t, ns, 25)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})
	evs := sampleEvents(40)

	errs := deliverBatch(f, evs)
	require.Len(t, errs, 40)
	var taken []string
	for i, err := range errs {
		if err == nil {
			taken = append(taken, evs[i].ID)
			continue
		}
		assert.False(t, forwarders.IsPermanent(err), "a full stream may drain: %v", err)
		assert.Contains(t, err.Error(), `"bus"`)
		assert.Contains(t, err.Error(), "maximum messages exceeded")
	}
	assert.Len(t, taken, 25)
	assert.ElementsMatch(t, taken, storedIDs(ns), "taken means stored, and nothing else was")

	again := deliverBatch(f, evs[:25])
	assert.Equal(t, make([]error, 25), again, "a repeat is acked as a duplicate")
	assert.Len(t, storedIDs(ns), 25)
}

// A batch that no stream acks is not taken: a plain subscriber hears every message,
// and still each event fails once the timeout passed without its ack.
func TestJetStreamBatchWithoutAcks(t *testing.T) {
	ns := startServer(t, nil)
	heard := subscribe(t, connect(t, ns.URL()), "neoagent.>")
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Timeout: time.Second})
	errs := deliverBatch(f, sampleEvents(3))
	for range 3 {
		receive(t, heard)
	}
	require.Len(t, errs, 3)
	for _, err := range errs {
		require.Error(t, err)
		assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
		assert.Contains(t, err.Error(), "no JetStream ack within the timeout (1s)")
	}
}

func TestJetStreamBatchNoStreamCaptures(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true})
	for _, err := range deliverBatch(f, sampleEvents(2)) {
		require.Error(t, err)
		assert.False(t, forwarders.IsPermanent(err), "an operator may create the stream: %v", err)
		assert.Contains(t, err.Error(), "no JetStream stream captures the subject")
	}
}

// A bad event fails alone (permanently); the rest of the batch is published and
// confirmed by one flush in core mode.
func TestCoreBatch(t *testing.T) {
	ns := startServer(t, nil)
	heard := subscribe(t, connect(t, ns.URL()), "leads.>")
	f := newForwarder(t, Config{URL: ns.URL(), Subject: "leads.{{.ChatbotName}}"})
	evs := sampleEvents(4)
	for i, ev := range evs {
		l := ev.Data
		l.ChatbotName = "Main"
		if i == 2 {
			l.ChatbotName = "Main site" // a space: not a valid subject
		}
		evs[i] = event.NewCreated(l)
	}

	errs := deliverBatch(f, evs)
	require.Len(t, errs, 4)
	for i, err := range errs {
		if i == 2 {
			require.Error(t, err)
			assert.True(t, forwarders.IsPermanent(err), "an invalid subject cannot be retried into a valid one: %v", err)
			continue
		}
		require.NoError(t, err)
		requireCloudEvent(t, evs[i], receive(t, heard))
	}
}

func TestBatchWhileDisconnected(t *testing.T) {
	for _, jetStream := range []bool{false, true} {
		ns := startServer(t, nil)
		f := newForwarder(t, Config{URL: ns.URL(), JetStream: jetStream})
		ns.Stop()
		require.Eventually(t, func() bool { return f.nc.Status() != natsgo.CONNECTED }, 5*time.Second, 10*time.Millisecond)
		for _, err := range deliverBatch(f, sampleEvents(2)) {
			require.Error(t, err)
			assert.False(t, forwarders.IsPermanent(err), "the connection comes back: %v", err)
			assert.Contains(t, err.Error(), "not connected to NATS")
		}
	}
}

// Through the Dispatcher, a burst goes out as one pipelined attempt; the entries the
// stream acked leave the outbox, and the ones it refused stay with their failure
// recorded, to be retried on their own schedule.
func TestDispatcherPipelinesJetStreamAndAcksOnlyWhatWasAcked(t *testing.T) {
	ns := startServer(t, nil)
	fullAfter(t, ns, 25)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})
	st := leadtest.OpenStore(t, dedupe.Options{Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit,
		Route: leadtest.RouteTo("bus")})
	_, err := st.Ingest(t.Context(), "bot1", leadtest.Leads("bot1", 1000, 40, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)))
	require.NoError(t, err)

	var mu sync.Mutex
	results := map[forwarders.Result]int{}
	attempts := map[time.Duration]bool{} // the entries of one attempt share its duration
	settled := make(chan struct{})
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: f,
		Retry: forwarders.RetryPolicy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsed: 24 * time.Hour}}},
		OnResult: func(_ event.Delivery, r forwarders.Result, took time.Duration, _ error) {
			mu.Lock()
			defer mu.Unlock()
			results[r]++
			attempts[took] = true
			if results[forwarders.ResultOK]+results[forwarders.ResultRetry] == 40 {
				close(settled)
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-settled:
	case <-time.After(20 * time.Second):
		require.FailNow(t, "the burst was not settled")
	}
	cancel()
	require.NoError(t, <-done)

	mu.Lock()
	assert.Equal(t, map[forwarders.Result]int{forwarders.ResultOK: 25, forwarders.ResultRetry: 15}, results)
	assert.Len(t, attempts, 1, "one pipelined attempt for the burst")
	mu.Unlock()
	pending := leadtest.Pending(t, st, "bus")
	require.Len(t, pending, 15)
	stored := storedIDs(ns)
	for _, p := range pending {
		assert.Equal(t, 1, p.Attempts)
		assert.Contains(t, p.LastError, "maximum messages exceeded")
		assert.NotContains(t, stored, p.Event.ID, "an entry left pending was not stored")
	}
	assert.Len(t, stored, 25)
}

// A lane with a batch path keeps at most a window of entries in flight (768 for 256
// slots), however many slots and batches of 256 it has: while acks do not come, the rest
// of a big outbox waits in the store, not in memory. Here no ack ever comes, so each wave
// of publishes ends at the timeout; published minus settled never exceeds the entries in
// flight plus those settled but not yet reported, each at most a window.
func TestDispatcherBoundsEntriesInFlight(t *testing.T) {
	const total, window = 4000, 2*256 + 1024/4
	ns := startServer(t, nil)
	var heard atomic.Int64
	_, err := connect(t, ns.URL()).Subscribe("neoagent.>", func(*natsgo.Msg) { heard.Add(1) })
	require.NoError(t, err)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Timeout: time.Second}) // no stream: no acks
	st := leadtest.OpenStore(t, dedupe.Options{Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit,
		Route: leadtest.RouteTo("bus")})
	_, err = st.Ingest(t.Context(), "bot1", leadtest.Leads("bot1", 1000, total, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)))
	require.NoError(t, err)

	var mu sync.Mutex
	settled, most := int64(0), int64(0)
	twoWaves := make(chan struct{})
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: f, Concurrency: 256,
		Retry: forwarders.RetryPolicy{InitialInterval: time.Hour, MaxInterval: time.Hour, MaxElapsed: 24 * time.Hour}}},
		OnResult: func(event.Delivery, forwarders.Result, time.Duration, error) {
			mu.Lock()
			defer mu.Unlock()
			settled++
			most = max(most, heard.Load()-settled)
			if settled == 2*window {
				close(twoWaves)
			}
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	select {
	case <-twoWaves:
	case <-time.After(60 * time.Second):
		require.FailNow(t, "two waves were not settled")
	}
	cancel()
	require.NoError(t, <-done)
	mu.Lock()
	defer mu.Unlock()
	assert.LessOrEqual(t, most, int64(2*window), "published and not settled, of %d", total)
}

// Batches on a fresh server come several at once (one per concurrency slot): one
// creates the stream, and none may see it half-known and fail, as on the single path.
func TestJetStreamFirstBatchesAtOnceCreateTheStreamOnce(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true, Stream: "LEADS"})
	const batches, size = 16, 4
	errs := make(chan []error, batches)
	start := make(chan struct{})
	for b := range batches {
		go func() {
			<-start
			evs := make([]event.Event, size)
			for i := range evs {
				evs[i] = sampleEvent(b*size + i)
			}
			errs <- deliverBatch(f, evs)
		}()
	}
	close(start)
	for range batches {
		assert.Equal(t, make([]error, size), <-errs)
	}
	assert.Len(t, ns.ReadStream("LEADS"), batches*size)
}

// A batch's bodies share a buffer sized from its first event, but never by more than a
// bounded amount: a batch whose first lead is very large (a hostile or broken API) does
// not make room for every other event at that size.
func TestBatchBodiesRoomIsBounded(t *testing.T) {
	ns := startServer(t, nil)
	f := newForwarder(t, Config{URL: ns.URL(), JetStream: true})
	evs := sampleEvents(256)
	l := evs[0].Data
	l.Content = strings.Repeat("x", 1<<20) // over max_payload: refused, after the bodies are made
	evs[0] = event.NewCreated(l)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	errs := deliverBatch(f, evs)
	runtime.ReadMemStats(&after)
	require.Error(t, errs[0], "a body over max_payload is refused")
	allocated := after.TotalAlloc - before.TotalAlloc
	assert.Less(t, allocated, uint64(64<<20), "%d MiB allocated for one batch", allocated>>20)
}
