package forwarders

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// named only names a lane: these tests load and take entries, they attempt none.
type named string

func (n named) Name() string                               { return string(n) }
func (n named) Deliver(context.Context, event.Event) error { return nil }

// mallocs is how many heap allocations fn makes.
func mallocs(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.Mallocs - before.Mallocs
}

// A lane holds the fresh entries it loads where the store's page put them, and takes
// them out of its schedule without boxing: loading and taking a page of entries costs
// the read of the page and a handful of allocations, not one or more per entry.
func TestLaneLoadsAndTakesWithoutCopyingEachEntry(t *testing.T) {
	st := leadtest.OpenStore(t, dedupe.Options{Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit,
		Route: leadtest.RouteTo("crm")})
	const n = 100
	_, err := st.Ingest(t.Context(), "bot1", leadtest.Leads("bot1", 1, n, time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)))
	require.NoError(t, err)

	d := &Dispatcher{Outbox: st}
	l := newLane(d, Route{Forwarder: named("crm"), Concurrency: 4}, nil, slog.New(slog.DiscardHandler), time.Second)
	l.mu.Lock()
	want := l.window()
	l.mu.Unlock()
	require.Greater(t, want, n, "one page holds every entry")
	ctx := t.Context()

	read := mallocs(func() { _, err = st.Pending(ctx, "crm", 0, want) })
	require.NoError(t, err)
	loaded := mallocs(func() { l.load(ctx) })
	require.Len(t, l.queue, n)
	taken := mallocs(func() {
		for range n {
			l.mu.Lock()
			items, _ := l.take(time.Now())
			l.spare = append(l.spare, items[:0]) // as a worker gives it back
			l.mu.Unlock()
		}
	})
	t.Logf("read %d, load %d, take %d", read, loaded, taken)
	assert.LessOrEqual(t, loaded, read+n/10, "load beyond reading the page (%d allocations)", read)
	assert.LessOrEqual(t, taken, uint64(n/10), "taking %d entries one by one", n)
}

// The schedule pops its entries earliest due first, then oldest, as a sort would.
func TestSchedulePopsInOrder(t *testing.T) {
	base := time.Now()
	var s schedule
	var want []item
	for i := range 500 {
		it := item{seq: uint64(i), due: base.Add(time.Duration(rand.IntN(20)) * time.Millisecond)}
		if rand.IntN(4) == 0 {
			it.due = time.Time{} // at once
		}
		want = append(want, it)
		s.push(it)
	}
	slices.SortFunc(want, func(a, b item) int {
		if c := a.due.Compare(b.due); c != 0 {
			return c
		}
		return int(a.seq) - int(b.seq)
	})
	var got []uint64
	for len(s) > 0 {
		got = append(got, s.pop().seq)
	}
	var wantSeqs []uint64
	for _, it := range want {
		wantSeqs = append(wantSeqs, it.seq)
	}
	assert.Equal(t, wantSeqs, got)
}
