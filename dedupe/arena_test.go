package dedupe

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestArenaKeepsEveryValue checks that a value taken from an arena is never changed by
// the values taken after it: small ones sharing a block, ones that start a new block,
// and ones that outgrow the room left and move to memory of their own.
func TestArenaKeepsEveryValue(t *testing.T) {
	var a arena
	var want, got [][]byte
	for i, n := range []int{1, 8, 52, 0, 700, 3000, 5000, arenaMax, 3 * arenaMax, 10, arenaRoom, arenaRoom + 1, 40000, 8} {
		v := bytes.Repeat([]byte{byte('a' + i)}, n)
		want = append(want, v)
		took := a.take(append(a.next(), v...))
		require.Equal(t, v, took, "value %d as taken", i)
		require.Equal(t, len(took), cap(took), "value %d is capped", i)
		got = append(got, took)
		_ = append(took, 'z') // an append to a taken value must not reach the next one
	}
	for i := range want {
		assert.Equal(t, want[i], got[i], "value %d after the others", i)
	}
}

// TestIngestLargeEventsReadBack takes a page whose events are small, larger than an
// arena block and in between, for two forwarders, and reads every one back from the
// outbox after the store is reopened.
func TestIngestLargeEventsReadBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leadbridge.db")
	opts := Options{Path: path, Initial: InitialEmit, Route: func(event.Event) []string { return []string{"a", "b"} }}
	s, err := Open(opts)
	require.NoError(t, err)
	sizes := []int{0, 10, arenaRoom, arenaFirst, arenaMax, 2 * arenaMax, 100}
	page := make([]event.Lead, len(sizes)*300)
	for i := range page {
		page[i] = event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: int64(i),
			Content: strings.Repeat(string(rune('a'+i%26)), sizes[i%len(sizes)]), CreatedAt: time.Date(2024, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	res, err := s.Ingest(context.Background(), "bot", page)
	require.NoError(t, err)
	require.Equal(t, len(page), res.New)
	require.NoError(t, s.Close())

	s, err = Open(opts)
	require.NoError(t, err)
	defer s.Close()
	for _, fwd := range []string{"a", "b"} {
		pending, err := s.Pending(context.Background(), fwd, 0, len(page)+1)
		require.NoError(t, err)
		require.Len(t, pending, len(page), fwd)
		for i, d := range pending {
			assert.Equal(t, event.NewCreated(page[i]), d.Event, "%s: entry %d", fwd, i)
		}
	}
}
