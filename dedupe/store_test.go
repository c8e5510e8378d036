package dedupe_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

const bot = "3254a9d0424c4806b9ea3d0763ccf001"

var t0 = time.Date(2024, 3, 1, 10, 0, 0, 123456789, time.UTC)

func leads(serial string, from, n int) []event.Lead {
	out := make([]event.Lead, n)
	for i := range out {
		s := from + i
		out[i] = leadtest.Lead(serial, event.KindLead, int64(s), t0.Add(time.Duration(s)*time.Minute))
	}
	return out
}

// routeAll sends every event to "bus", and appointments also to "sales".
func routeAll(ev event.Event) []string {
	if ev.Kind() == event.KindAppointment {
		return []string{"bus", "sales"}
	}
	return []string{"bus"}
}

func open(t testing.TB, path string, mod func(*dedupe.Options)) *dedupe.Store {
	t.Helper()
	// The records of these tests are from t0's day: the store's wall clock is set there.
	opts := dedupe.Options{Path: path, Initial: dedupe.InitialEmit, Route: routeAll, Retention: 24 * time.Hour,
		Now: func() time.Time { return t0.Add(12 * time.Hour) }}
	if mod != nil {
		mod(&opts)
	}
	s, err := dedupe.Open(opts)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func dbPath(t testing.TB) string { return filepath.Join(t.TempDir(), "leadbridge.db") }

func ids(evs []event.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.ID
	}
	return out
}

func pending(t *testing.T, s *dedupe.Store, fwd string) []event.Delivery {
	t.Helper()
	ds, err := s.Pending(t.Context(), fwd, 0, 0)
	require.NoError(t, err)
	return ds
}

func TestOpenLockedFailsFast(t *testing.T) {
	path := dbPath(t)
	open(t, path, nil)

	start := time.Now()
	_, err := dedupe.Open(dedupe.Options{Path: path, OpenTimeout: 100 * time.Millisecond})
	require.Error(t, err)
	assert.ErrorIs(t, err, bolt.ErrTimeout)
	assert.Equal(t, fmt.Sprintf("store %s is locked by another leadbridge process: timeout", path), err.Error())
	assert.Less(t, time.Since(start), 10*time.Second, "the second Open must give up, not hang")
}

func TestOpenRefusesNonBboltFile(t *testing.T) {
	random := make([]byte, 64<<10)
	_, _ = rand.Read(random)
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"short text", []byte("neoagent:\n  api_key: x\n")},
		{"one page of random bytes", random[:4096]},
		{"random bytes", random},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			require.NoError(t, os.WriteFile(path, tc.content, 0o644))

			_, err := dedupe.Open(dedupe.Options{Path: path, OpenTimeout: 100 * time.Millisecond})
			require.Error(t, err)
			assert.Contains(t, err.Error(), path)
			assert.Contains(t, err.Error(), "not a bbolt database")

			got, err := os.ReadFile(path)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(tc.content, got), "file content changed")
			info, err := os.Stat(path)
			require.NoError(t, err)
			assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "file mode changed")
		})
	}
}

func TestOpenFileMode(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	require.NoError(t, s.Close())

	require.NoError(t, os.Chmod(path, 0o644))
	var logs bytes.Buffer
	open(t, path, func(o *dedupe.Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	info, err = os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), info.Mode().Perm())
	assert.Contains(t, logs.String(), "level=WARN")
	assert.Contains(t, logs.String(), "0600")
}

func TestOpenValidatesOptions(t *testing.T) {
	_, err := dedupe.Open(dedupe.Options{})
	require.Error(t, err)
	_, err = dedupe.Open(dedupe.Options{Path: dbPath(t), Initial: "flood"})
	require.ErrorContains(t, err, `initial "flood"`)
	_, err = dedupe.Open(dedupe.Options{Path: filepath.Join(t.TempDir(), "missing", "dir", "x.db")})
	require.ErrorContains(t, err, "missing/dir/x.db")
}

func TestClosedStoreErrorsNameThePath(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	require.NoError(t, s.Close())
	_, err := s.Ingest(t.Context(), bot, leads(bot, 1, 1))
	require.ErrorIs(t, err, bolt.ErrDatabaseNotOpen)
	assert.Contains(t, err.Error(), path)
}

func TestOpenReadOnlyRefusesMissingOrEmptyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "leadbridge.db")
	_, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.EqualError(t, err, fmt.Sprintf("store %s does not exist", path))
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	assert.Empty(t, entries, "a read-only open created something")

	require.NoError(t, os.WriteFile(path, nil, 0o600))
	_, err = dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.ErrorContains(t, err, path)
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.Zero(t, info.Size(), "a read-only open initialized the file")
}

func TestOpenReadOnlyReadsStateAndRefusesWrites(t *testing.T) {
	path := dbPath(t)
	failed := time.Date(2024, 3, 3, 0, 0, 0, 0, time.UTC)
	polled := time.Date(2024, 3, 3, 1, 0, 0, 0, time.UTC)
	appts := []event.Lead{leadtest.Lead(bot, event.KindAppointment, 1, t0), leadtest.Lead(bot, event.KindAppointment, 2, t0)}
	daemon := open(t, path, nil)
	_, err := daemon.Ingest(t.Context(), bot, appts)
	require.NoError(t, err)
	d := pending(t, daemon, "sales")[0]
	d.Attempts, d.LastError = 5, "sales: HTTP 400"
	require.NoError(t, daemon.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Dead, At: failed}}))
	require.NoError(t, daemon.Pause(t.Context(), "bus", "bus: HTTP 410 Gone", "hash"))
	require.NoError(t, daemon.RecordPoll(t.Context(), bot, polled, nil))

	// While the daemon holds the store, a read-only open is refused too.
	_, err = dedupe.Open(dedupe.Options{Path: path, ReadOnly: true, OpenTimeout: 100 * time.Millisecond})
	require.ErrorIs(t, err, bolt.ErrTimeout)
	assert.Contains(t, err.Error(), "locked by another leadbridge process")
	require.NoError(t, daemon.Close())

	// Too-open permissions and an old mtime: a read-only session must change neither.
	require.NoError(t, os.Chmod(path, 0o644))
	mtime := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	require.NoError(t, os.Chtimes(path, mtime, mtime))
	before, err := os.ReadFile(path)
	require.NoError(t, err)

	ro, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true, Route: routeAll})
	require.NoError(t, err)
	// Read-only opens share the lock.
	ro2, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true, OpenTimeout: 100 * time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, ro2.Close())

	bots, err := ro.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, 2, bots[bot].Seen)
	assert.True(t, polled.Equal(bots[bot].LastOK))
	depth, err := ro.Depth(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bus": 2, "sales": 1}, depth)
	dead, err := ro.DeadCount(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"sales": 1}, dead)
	letters, err := ro.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	require.Len(t, letters, 1)
	assert.Equal(t, "sales: HTTP 400", letters[0].LastError)
	paused, err := ro.Paused(t.Context())
	require.NoError(t, err)
	assert.Equal(t, "bus: HTTP 410 Gone", paused["bus"].Reason)
	sales, err := ro.Pending(t.Context(), "sales", 0, 0)
	require.NoError(t, err)
	require.Len(t, sales, 1)
	assert.Equal(t, appts[1].ID(), sales[0].Event.ID)

	for name, write := range map[string]func() error{
		"ack": func() error {
			return ro.Record(t.Context(), []event.Outcome{{Delivery: event.Delivery{Forwarder: "sales", Seq: sales[0].Seq}, Verdict: event.Acked}})
		},
		"replay": func() error { _, err := ro.Replay(t.Context(), "", ""); return err },
		"drop":   func() error { _, err := ro.Drop(t.Context(), "", ""); return err },
		"failed": func() error {
			return ro.Record(t.Context(), []event.Outcome{{Delivery: sales[0], Verdict: event.Retrying}})
		},
		"dead-letter": func() error {
			return ro.Record(t.Context(), []event.Outcome{{Delivery: sales[0], Verdict: event.Dead, At: failed}})
		},
		"ingest": func() error { _, err := ro.Ingest(t.Context(), bot, leads(bot, 10, 1)); return err },
		"backfill": func() error {
			_, err := ro.Backfill(t.Context(), bot, appts, event.BackfillOptions{Resend: true})
			return err
		},
		"record poll": func() error { return ro.RecordPoll(t.Context(), bot, time.Now(), nil) },
		"pause":       func() error { return ro.Pause(t.Context(), "sales", "x", "y") },
		"resume":      func() error { _, err := ro.Resume(t.Context(), "bus"); return err },
		"prune":       func() error { _, err := ro.Prune(t.Context(), time.Now().Add(1000*time.Hour)); return err },
	} {
		err := write()
		require.ErrorIs(t, err, dedupe.ErrReadOnly, name)
		assert.Contains(t, err.Error(), path, name)
		assert.Contains(t, err.Error(), "store opened read-only", name)
	}
	letters, err = ro.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, letters, 1, "Replay changed nothing")
	require.NoError(t, ro.Close())

	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.Equal(before, after), "file content changed")
	info, err := os.Stat(path)
	require.NoError(t, err)
	assert.True(t, mtime.Equal(info.ModTime()), "mtime changed to %s", info.ModTime())
	assert.Equal(t, os.FileMode(0o644), info.Mode().Perm(), "file mode changed")
}

// A bbolt file that lacks leadbridge's buckets (none here) reads as an empty store.
func TestOpenReadOnlyMissingBucketsReadEmpty(t *testing.T) {
	path := dbPath(t)
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	require.NoError(t, db.Close())

	s, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	defer s.Close()
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Empty(t, bots)
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth)
	dead, err := s.DeadCount(t.Context())
	require.NoError(t, err)
	assert.Empty(t, dead)
	for _, fwd := range []string{"", "bus"} {
		letters, err := s.DeadLetters(t.Context(), fwd)
		require.NoError(t, err)
		assert.Empty(t, letters)
	}
	paused, err := s.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
	ds, err := s.Pending(t.Context(), "bus", 0, 0)
	require.NoError(t, err)
	assert.Empty(t, ds)
}

// TestCanceledContextTouchesNothing: an operation whose ctx is done when it starts
// returns ctx's error, naming the store and the operation, and writes nothing.
func TestCanceledContextTouchesNothing(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	done, cancel := context.WithCancel(t.Context())
	cancel()

	_, err := s.Ingest(done, bot, leads(bot, 0, 3))
	require.ErrorIs(t, err, context.Canceled)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "ingest "+bot)
	err = s.IngestPage(done, bot, func(func([]event.Lead, bool) (event.Ingested, error)) error {
		t.Fatal("read called although ctx is done")
		return nil
	})
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.RecordPoll(done, bot, t0, nil), context.Canceled)
	_, err = s.Depth(done)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.Pause(done, "bus", "gone", "h"), context.Canceled)

	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth, "no delivery was queued")
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Empty(t, bots, "no chatbot was marked initialized or polled")
	paused, err := s.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
	res, err := s.Ingest(t.Context(), bot, leads(bot, 0, 3))
	require.NoError(t, err)
	assert.Equal(t, 3, res.New, "the records are still new")
}
