package dedupe

import (
	"bytes"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"

	"github.com/leadbridge/leadbridge/event"
)

// When the event record the newest attempt refers to is missing, or unreadable, the
// attempt shows no event (as leave promises): ActivityEvent answers found=false, logs it
// once, naming the event id and no lead, and does not fail the console's page.
func TestActivityEventWithoutItsRecord(t *testing.T) {
	for name, spoil := range map[string]func(events *bolt.Bucket, key []byte) error{
		"missing":    func(events *bolt.Bucket, key []byte) error { return events.Delete(key) },
		"unreadable": func(events *bolt.Bucket, key []byte) error { return events.Put(key, []byte{0xff}) },
	} {
		t.Run(name, func(t *testing.T) {
			var logs bytes.Buffer
			s, err := Open(Options{Path: filepath.Join(t.TempDir(), "leadbridge.db"), Initial: InitialEmit,
				Route:  func(event.Event) []string { return []string{"bus"} },
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			require.NoError(t, err)
			t.Cleanup(func() { _ = s.Close() })
			l := event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: 7, Name: "Ada Secret",
				Email: "ada@example.com", Content: "call me", CreatedAt: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
			_, err = s.Ingest(t.Context(), "bot", []event.Lead{l})
			require.NoError(t, err)
			ds, err := s.Pending(t.Context(), "bus", 0, 0)
			require.NoError(t, err)
			require.Len(t, ds, 1)
			require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: ds[0], Verdict: event.Acked, At: time.Now()}}))
			_, found, err := s.ActivityEvent(t.Context(), l.ID())
			require.NoError(t, err)
			require.True(t, found, "the attempt refers to the event's record")

			require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
				ref, err := attemptRef(tx, l.ID())
				require.NoError(t, err)
				require.NotZero(t, ref)
				return spoil(tx.Bucket(bucketEvents), seqKey(ref))
			}))
			logs.Reset()
			ev, found, err := s.ActivityEvent(t.Context(), l.ID())
			require.NoError(t, err)
			assert.False(t, found)
			assert.Equal(t, event.Event{}, ev)
			assert.Equal(t, 1, strings.Count(logs.String(), "\n"), "logged once: %s", logs.String())
			assert.Contains(t, logs.String(), l.ID())
			for _, personal := range []string{l.Name, l.Email, l.Content} {
				assert.NotContains(t, logs.String(), personal)
			}
			attempts, err := s.Activity(t.Context(), event.ActivityQuery{EventID: l.ID()})
			require.NoError(t, err)
			assert.Len(t, attempts, 1, "the attempt itself stays in the log")
		})
	}
}
