package forwarders_test

import (
	"context"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/forwarders"
)

// running runs d until the test ends and fails the test if Run does not return then.
func running(t *testing.T, d *forwarders.Dispatcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			assert.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
}

// waitClosed fails the test unless c is closed within 10s.
func waitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(10 * time.Second):
		t.Fatal(what)
	}
}

// isClosed reports whether c is closed now.
func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// once asserts that ids holds want distinct ids, each once.
func once(t *testing.T, ids []string, want int) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range ids {
		seen[id]++
	}
	assert.Len(t, seen, want)
	for id, n := range seen {
		assert.Equal(t, 1, n, "event %s delivered %d times", id, n)
	}
}

func depthOf(t *testing.T, st *dedupe.Store, forwarder string) int {
	t.Helper()
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	return depth[forwarder]
}

func TestAddRouteStartsALaneWithWhatTheOutboxHolds(t *testing.T) {
	crm, added := newSink(t, nil), newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm", "added")
	defer st.Close()
	all := leads(8)
	_, err := st.Ingest(t.Context(), "bot1", all[:5])
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: crm.forwarder(t, "crm", time.Second), Retry: fastRetry()}}}
	running(t, d)
	require.Eventually(t, func() bool { return crm.count() == 5 }, 10*time.Second, 5*time.Millisecond)

	require.NoError(t, d.AddRoute(forwarders.Route{Forwarder: added.forwarder(t, "added", time.Second), Retry: fastRetry()}))
	require.Error(t, d.AddRoute(forwarders.Route{Forwarder: added.forwarder(t, "added", time.Second)}), "a name is added once")
	require.Eventually(t, func() bool { return added.count() == 5 }, 10*time.Second, 5*time.Millisecond,
		"the added lane delivers what waited for it")
	_, err = st.Ingest(t.Context(), "bot1", all[5:])
	require.NoError(t, err)
	require.Eventually(t, func() bool { return added.count() == 8 && crm.count() == 8 }, 10*time.Second, 5*time.Millisecond,
		"the added lane is woken by new entries")
	once(t, added.ids(), 8)
	once(t, crm.ids(), 8)
	require.Eventually(t, func() bool { return depthOf(t, st, "added")+depthOf(t, st, "crm") == 0 }, 10*time.Second, 5*time.Millisecond)
}

func TestRemoveRouteLetsAttemptsInFlightFinishAndKeepsThePending(t *testing.T) {
	target := newSink(t, nil)
	target.Hold()
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	all := leads(4)
	_, err := st.Ingest(t.Context(), "bot1", all[:1])
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: target.forwarder(t, "crm", 10*time.Second), Retry: fastRetry()}}}
	running(t, d)
	require.Eventually(t, func() bool { return target.count() == 1 }, 10*time.Second, time.Millisecond)

	stopped, ok := d.RemoveRoute("crm")
	require.True(t, ok)
	assert.False(t, isClosed(stopped), "an attempt is in flight")
	_, ok = d.RemoveRoute("crm")
	assert.False(t, ok, "removed already")
	assert.False(t, d.Resume("crm"), "a removed forwarder is not the dispatcher's")
	_, err = st.Ingest(t.Context(), "bot1", all[1:])
	require.NoError(t, err)
	target.Release()
	waitClosed(t, stopped, "the removed lane stops once its attempt finished")

	assert.Equal(t, 3, depthOf(t, st, "crm"), "the attempt in flight is recorded by the time the lane stopped; the rest wait")
	assert.Equal(t, []string{all[0].ID()}, target.ids(), "nothing was attempted after the removal")
}

func TestRemoveThenAddTheSameNameNeverRunsAnEntryTwice(t *testing.T) {
	target := newSink(t, nil)
	target.Hold()
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(3))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: target.forwarder(t, "crm", 10*time.Second), Retry: fastRetry(), Concurrency: 1},
	}}
	running(t, d)
	require.Eventually(t, func() bool { return target.count() == 1 }, 10*time.Second, time.Millisecond)

	stopped, ok := d.RemoveRoute("crm")
	require.True(t, ok)
	require.NoError(t, d.AddRoute(forwarders.Route{Forwarder: target.forwarder(t, "crm", 10*time.Second), Retry: fastRetry(), Concurrency: 4}))
	target.Release()
	waitClosed(t, stopped, "the removed lane stops")
	require.Eventually(t, func() bool { return depthOf(t, st, "crm") == 0 }, 10*time.Second, 5*time.Millisecond)
	once(t, target.ids(), 3)
}

func TestReplaceRouteAppliesToTheNextAttempt(t *testing.T) {
	old := newSink(t, func(int, string) int { return http.StatusServiceUnavailable })
	fixed := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(3))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: old.forwarder(t, "crm", time.Second), Retry: fastRetry(), Concurrency: 1, ConfigHash: "h1"},
	}}
	running(t, d)
	require.Eventually(t, func() bool { return old.count() >= 2 }, 10*time.Second, time.Millisecond)

	retired, err := d.ReplaceRoute(forwarders.Route{Forwarder: fixed.forwarder(t, "crm", time.Second), Retry: fastRetry(),
		Concurrency: 2, ConfigHash: "h2"})
	require.NoError(t, err)
	waitClosed(t, retired, "the old forwarder's attempts finish")
	oldCount := old.count()
	require.Eventually(t, func() bool { return depthOf(t, st, "crm") == 0 }, 10*time.Second, 5*time.Millisecond)
	once(t, fixed.ids(), 3)
	assert.Equal(t, oldCount, old.count(), "no attempt used the old forwarder once it was retired")

	_, err = d.ReplaceRoute(forwarders.Route{Forwarder: fixed.forwarder(t, "other", time.Second)})
	assert.Error(t, err, "only a forwarder the dispatcher has can be replaced")
}

func TestRoutesChangedBeforeRunTakeEffectWhenItStarts(t *testing.T) {
	crm, added := newSink(t, nil), newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm", "added")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(2))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: crm.forwarder(t, "crm", time.Second), Retry: fastRetry()}}}
	require.NoError(t, d.AddRoute(forwarders.Route{Forwarder: added.forwarder(t, "added", time.Second), Retry: fastRetry()}))
	stopped, ok := d.RemoveRoute("crm")
	require.True(t, ok)
	assert.True(t, isClosed(stopped), "nothing runs yet")
	drain(t, d)
	assert.Zero(t, crm.count())
	once(t, added.ids(), 2)
}

// A lane's attempts run on workers it keeps; a ReplaceRoute that raises the concurrency
// gets the new slots at once, beside the old route's attempt still in flight, whatever
// number of workers the lane had.
func TestReplaceRouteRaisesTheConcurrency(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	inFlight := 0
	hold := func(int, string) int {
		mu.Lock()
		inFlight++
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
		return http.StatusOK
	}
	old, wide := newSink(t, hold), newSink(t, hold)
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	_, err := st.Ingest(t.Context(), "bot1", leads(6))
	require.NoError(t, err)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: old.forwarder(t, "crm", 10*time.Second), Retry: fastRetry(), Concurrency: 1},
	}}
	running(t, d)
	flying := func() int { mu.Lock(); defer mu.Unlock(); return inFlight }
	require.Eventually(t, func() bool { return flying() == 1 }, 10*time.Second, time.Millisecond)

	retired, err := d.ReplaceRoute(forwarders.Route{Forwarder: wide.forwarder(t, "crm", 10*time.Second), Retry: fastRetry(),
		Concurrency: 3})
	require.NoError(t, err)
	require.Eventually(t, func() bool { return flying() == 4 }, 10*time.Second, time.Millisecond,
		"three attempts of the new route beside the old one's")
	close(release)
	waitClosed(t, retired, "the old forwarder's attempt finishes")
	require.Eventually(t, func() bool { return depthOf(t, st, "crm") == 0 }, 10*time.Second, 5*time.Millisecond)
	once(t, append(old.ids(), wide.ids()...), 6)
}
