package dedupe

import (
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// A full disk is simulated with bbolt's MaxSize: the commit cannot grow the file.
func TestIngestFailedTransactionMarksNothing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leadbridge.db")
	s, err := Open(Options{Path: path, Initial: InitialEmit, Route: func(event.Event) []string { return []string{"bus"} }})
	require.NoError(t, err)
	defer s.Close()

	page := make([]event.Lead, 500)
	for i := range page {
		page[i] = event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: int64(i),
			Content: strings.Repeat("x", 500), CreatedAt: time.Date(2024, 1, 1, 0, i, 0, 0, time.UTC)}
	}
	info, err := os.Stat(path)
	require.NoError(t, err)
	s.db.MaxSize = int(info.Size())

	_, err = s.Ingest(t.Context(), "bot", page)
	require.ErrorIs(t, err, berrors.ErrMaxSizeReached)
	assert.Contains(t, err.Error(), path)

	s.db.MaxSize = 0
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Empty(t, depth)
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Empty(t, bots, "not even the chatbot was marked initialized")

	res, err := s.Ingest(t.Context(), "bot", page)
	require.NoError(t, err)
	assert.Equal(t, len(page), res.New, "once there is room, every record is still new")
}

func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leadbridge.db")
	s, err := Open(Options{Path: path})
	require.NoError(t, err)
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion+1))
	}))
	require.NoError(t, s.Close())

	for _, readOnly := range []bool{false, true} {
		_, err = Open(Options{Path: path, ReadOnly: readOnly})
		require.EqualError(t, err, fmt.Sprintf("store %s: schema version %d, this leadbridge reads versions %d to %d", path, schemaVersion+1, oldestSchemaVersion, schemaVersion), "read-only %t", readOnly)
	}
}

// TestOpenRefusesADamagedStore: a file whose header pages are intact but whose other
// pages are garbage is refused with an error naming it, not a panic, and left unchanged.
func TestOpenRefusesADamagedStore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := Open(Options{Path: path, Initial: InitialEmit, Route: func(event.Event) []string { return []string{"crm"} }})
	require.NoError(t, err)
	leads := make([]event.Lead, 200)
	for i := range leads {
		leads[i] = event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: int64(i), Content: strings.Repeat("x", 200),
			CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	_, err = st.Ingest(t.Context(), "bot", leads)
	require.NoError(t, err)
	require.NoError(t, st.Close())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Greater(t, len(data), 3*8192)
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 8192; i < len(data); i++ {
		data[i] = byte(rng.IntN(256))
	}
	require.NoError(t, os.WriteFile(path, data, 0o600))

	_, err = Open(Options{Path: path})
	require.Error(t, err)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, err.Error(), "damaged")
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.Equal(t, data, after, "the damaged file is left as it was")
}

// TestOpenRefusesAStoreWithAPagePointerPastTheEnd: a branch page pointing past the end of
// the file faults when followed; the check at open turns that into an error.
func TestOpenRefusesAStoreWithAPagePointerPastTheEnd(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	st, err := Open(Options{Path: path, Initial: InitialEmit})
	require.NoError(t, err)
	leads := make([]event.Lead, 3000)
	for i := range leads {
		leads[i] = event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: int64(i),
			CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	_, err = st.Ingest(t.Context(), "bot", leads)
	require.NoError(t, err)
	require.NoError(t, st.Close())

	data, err := os.ReadFile(path)
	require.NoError(t, err)
	size := os.Getpagesize()
	patched := false
	for off := 2 * size; off+32 <= len(data); off += size {
		// A page starts with id (8 bytes), flags (2), count (2), overflow (4); branch
		// pages (flag 0x01) hold elements of pos (4), ksize (4), pgid (8).
		if binary.NativeEndian.Uint16(data[off+8:]) == 0x01 && binary.NativeEndian.Uint16(data[off+10:]) > 0 {
			binary.NativeEndian.PutUint64(data[off+16+8:], 1<<40)
			patched = true
			break
		}
	}
	require.True(t, patched, "the store has a branch page")
	require.NoError(t, os.WriteFile(path, data, 0o600))

	_, err = Open(Options{Path: path})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "damaged")
	_, err = Open(Options{Path: path, ReadOnly: true})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "damaged")
}

// TestPendingSkipsAnUnreadableEntry: one entry that does not decode is skipped (and
// logged), so the entries behind it still go out.
func TestPendingSkipsAnUnreadableEntry(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := Open(Options{Path: path, Initial: InitialEmit, Route: func(event.Event) []string { return []string{"crm"} }})
	require.NoError(t, err)
	page := make([]event.Lead, 3)
	for i := range page {
		page[i] = event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: int64(i), CreatedAt: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC)}
	}
	_, err = s.Ingest(t.Context(), "bot", page)
	require.NoError(t, err)
	all, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, all, 3)
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).Bucket([]byte("crm")).Put(seqKey(all[1].Seq), []byte("{not json"))
	}))
	got, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, got, 2)
	assert.Equal(t, []uint64{all[0].Seq, all[2].Seq}, []uint64{got[0].Seq, got[2-1].Seq})
	require.NoError(t, s.Close())
}

// A dry run through the daemon must not wait for (or hold) the write lock a poll takes.
func TestDryBackfillTakesNoWriteLock(t *testing.T) {
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "leadbridge.db"), Route: func(event.Event) []string { return []string{"bus"} }})
	require.NoError(t, err)
	defer s.Close()
	l := event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: 1, CreatedAt: time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)}

	writer, err := s.db.Begin(true) // a poll's transaction in progress
	require.NoError(t, err)
	type answer struct {
		res event.Ingested
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := s.DryBackfill(t.Context(), "bot", []event.Lead{l}, event.BackfillOptions{})
		done <- answer{res, err}
	}()
	select {
	case a := <-done:
		require.NoError(t, a.err)
		assert.Equal(t, 1, a.res.New)
	case <-time.After(10 * time.Second): // a guard against a hang, not a speed check
		require.NoError(t, writer.Rollback())
		t.Fatal("the dry run waited for the write lock")
	}
	require.NoError(t, writer.Rollback())
}

// A page the poller knew (it hands over no part) touches nothing: not even the write
// lock that a poll of another chatbot may hold.
func TestIngestPageOfNothingTakesNoWriteLock(t *testing.T) {
	s, err := Open(Options{Path: filepath.Join(t.TempDir(), "leadbridge.db")})
	require.NoError(t, err)
	defer s.Close()
	writer, err := s.db.Begin(true) // another chatbot's poll in progress
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- s.IngestPage(t.Context(), "bot", func(func([]event.Lead, bool) (event.Ingested, error)) error { return nil })
	}()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(10 * time.Second): // a guard against a hang, not a speed check
		require.NoError(t, writer.Rollback())
		t.Fatal("a page of nothing waited for the write lock")
	}
	require.NoError(t, writer.Rollback())
}

// A chatbot's Seen is counted from its seen keys, not read from a number stored beside
// them (as an older build kept it, and which drifted), and a serial that starts another
// one's does not take the other's keys.
func TestChatbotsCountsTheSeenKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "leadbridge.db")
	s, err := Open(Options{Path: path, Initial: InitialEmit})
	require.NoError(t, err)
	defer s.Close()
	page := func(serial string, n int) []event.Lead {
		out := make([]event.Lead, n)
		for i := range out {
			out[i] = event.Lead{Chatbot: serial, Kind: event.KindLead, SessionID: int64(i),
				CreatedAt: time.Now().Add(-time.Duration(i) * time.Minute)}
		}
		return out
	}
	for serial, n := range map[string]int{"bot": 3, "bot2": 2, "bo": 1} {
		_, err := s.Ingest(t.Context(), serial, page(serial, n))
		require.NoError(t, err)
	}
	require.NoError(t, s.db.Update(func(tx *bolt.Tx) error {
		return updateChatbotTx(tx, "bot", func(st *event.ChatbotState) { st.Seen = 7 })
	}))

	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, map[string]int{"bot": 3, "bot2": 2, "bo": 1},
		map[string]int{"bot": bots["bot"].Seen, "bot2": bots["bot2"].Seen, "bo": bots["bo"].Seen})

	// PollStates, which readiness and every metrics scrape read, is the same state
	// without the count, which would read every seen key each time.
	polls, err := s.PollStates(t.Context())
	require.NoError(t, err)
	require.Len(t, polls, 3)
	for serial, st := range bots {
		st.Seen = 0
		assert.Equal(t, st, polls[serial], serial)
	}
}
