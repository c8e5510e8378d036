package dedupe_test

import (
	"bytes"
	"errors"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	berrors "go.etcd.io/bbolt/errors"
)

// openFlushTicks opens a store at path whose poll bookkeeping is flushed at each tick
// the test sends.
func openFlushTicks(t *testing.T, path string) (*dedupe.Store, chan<- time.Time) {
	t.Helper()
	s, tick, err := dedupe.OpenWithFlushTicks(dedupe.Options{Path: path, Initial: dedupe.InitialEmit, Route: routeAll,
		Retention: 24 * time.Hour, Now: func() time.Time { return t0.Add(12 * time.Hour) }})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s, tick
}

// crashState is what a crash of s at this instant leaves for the next start: the state
// of each chatbot in its committed file.
func crashState(t *testing.T, s *dedupe.Store) map[string]event.ChatbotState {
	t.Helper()
	path := filepath.Join(t.TempDir(), "crashed.db")
	require.NoError(t, dedupe.CrashCopy(s, path))
	after, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	defer after.Close()
	bots, err := after.Chatbots(t.Context())
	require.NoError(t, err)
	return bots
}

// flushed sends two ticks: the second is only taken once the flush of the first is done.
func flushed(tick chan<- time.Time) {
	tick <- time.Time{}
	tick <- time.Time{}
}

// TestIdlePollWritesNothing: a poll that finds only known records, with its bookkeeping,
// commits no transaction (so costs no fsync); the bookkeeping is written by the flush.
func TestIdlePollWritesNothing(t *testing.T) {
	s := open(t, dbPath(t), nil)
	page := leads(bot, 0, 20)
	_, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.NoError(t, s.RecordPoll(t.Context(), bot, t0, nil))
	require.NoError(t, s.FlushPolls(t.Context()))
	before := dedupe.CommittedTx(s)

	for i := range 10 {
		res, err := s.Ingest(t.Context(), bot, page)
		require.NoError(t, err)
		require.Equal(t, 20, res.Duplicate)
		require.NoError(t, s.RecordPoll(t.Context(), bot, t0.Add(time.Duration(i+1)*time.Minute), nil))
	}
	assert.Equal(t, before, dedupe.CommittedTx(s), "ten idle polls committed transactions")

	require.NoError(t, s.FlushPolls(t.Context()))
	assert.Equal(t, before+1, dedupe.CommittedTx(s), "the flush writes ten polls' bookkeeping in one transaction")
	require.NoError(t, s.FlushPolls(t.Context()))
	assert.Equal(t, before+1, dedupe.CommittedTx(s), "a flush with nothing noted writes nothing")
}

// TestRecordPollReadersSeeMemory: Chatbots shows a poll at once, merged with what Ingest
// wrote, before the file has it; and neither write undoes the other.
func TestRecordPollReadersSeeMemory(t *testing.T) {
	s, tick := openFlushTicks(t, dbPath(t))
	at1 := t0.Add(time.Hour)
	_, err := s.Ingest(t.Context(), bot, leads(bot, 0, 2))
	require.NoError(t, err)
	require.NoError(t, s.RecordPoll(t.Context(), bot, at1, errors.New("leadlist: HTTP 503")))
	_, err = s.Ingest(t.Context(), bot, leads(bot, 2, 1)) // Ingest rewrites the chatbot's state in the file meanwhile
	require.NoError(t, err)

	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	want := event.ChatbotState{Initialized: true, Seen: 3, LastPoll: at1, LastError: "leadlist: HTTP 503"}
	assert.Equal(t, want, bots[bot])
	assert.Equal(t, event.ChatbotState{Initialized: true, Seen: 3}, crashState(t, s)[bot], "not flushed yet")

	flushed(tick)
	assert.Equal(t, want, crashState(t, s)[bot], "the flush kept what Ingest wrote")
	bots, err = s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, want, bots[bot], "readers see the same state once it is flushed")
}

// TestRecordPollCrashLosesAtMostOneInterval: at any instant the file holds every poll
// noted before the last flush, and a chatbot's first success at once; a crash loses
// only what came after.
func TestRecordPollCrashLosesAtMostOneInterval(t *testing.T) {
	path := dbPath(t)
	s, tick := openFlushTicks(t, path)
	const other = "3254a9d0424c4806b9ea3d0763ccf002"
	at0, at1, at2 := t0.Add(time.Hour), t0.Add(time.Hour+time.Minute), t0.Add(time.Hour+2*time.Minute)

	require.NoError(t, s.RecordPoll(t.Context(), bot, at0, nil))
	assert.Equal(t, event.ChatbotState{LastPoll: at0, LastOK: at0}, crashState(t, s)[bot],
		"a first success is written at once: without any mark, the next start would not catch up a long downtime")
	require.NoError(t, s.RecordPoll(t.Context(), other, at1, errors.New("leadlist: HTTP 500")))
	require.NoError(t, s.RecordPoll(t.Context(), bot, at1, nil))
	crashed := crashState(t, s)
	assert.Equal(t, event.ChatbotState{LastPoll: at0, LastOK: at0}, crashed[bot], "later marks wait for the flush")
	assert.NotContains(t, crashed, other, "a failure is no first success: it waits for the flush")

	flushed(tick)
	require.NoError(t, s.RecordPoll(t.Context(), bot, at2, errors.New("leadlist: HTTP 503")))
	crashed = crashState(t, s)
	assert.Equal(t, event.ChatbotState{LastPoll: at1, LastOK: at1}, crashed[bot], "the flushed mark survives a crash; only the later one is lost")
	assert.Equal(t, event.ChatbotState{LastPoll: at1, LastError: "leadlist: HTTP 500"}, crashed[other])
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, event.ChatbotState{LastPoll: at2, LastOK: at1, LastError: "leadlist: HTTP 503"}, bots[bot])

	flushed(tick)
	assert.Equal(t, bots[bot], crashState(t, s)[bot], "the next flush writes the later mark")

	// The next process knows the file holds a success: its first one waits for the flush.
	require.NoError(t, s.Close())
	s, _ = openFlushTicks(t, path)
	require.NoError(t, s.RecordPoll(t.Context(), bot, at2.Add(time.Minute), nil))
	assert.Equal(t, event.ChatbotState{LastPoll: at2, LastOK: at1, LastError: "leadlist: HTTP 503"}, crashState(t, s)[bot])
}

// TestRecordPollSurvivesClose: Close writes what was not flushed yet, and the next
// process (or an operator command on the stopped daemon's file) reads it.
func TestRecordPollSurvivesClose(t *testing.T) {
	path := dbPath(t)
	s, _ := openFlushTicks(t, path) // never ticks: only Close writes
	at := t0.Add(time.Hour)
	require.NoError(t, s.RecordPoll(t.Context(), bot, at, nil))
	require.NoError(t, s.RecordPoll(t.Context(), bot, at.Add(time.Minute), errors.New("leadlist: HTTP 503")))
	require.NoError(t, s.Close())
	err := s.RecordPoll(t.Context(), bot, at.Add(2*time.Minute), nil)
	require.ErrorIs(t, err, berrors.ErrDatabaseNotOpen, "a poll noted after Close would never reach the file")
	assert.Contains(t, err.Error(), bot)
	require.NoError(t, s.Close(), "closing twice")

	ro, err := dedupe.Open(dedupe.Options{Path: path, ReadOnly: true})
	require.NoError(t, err)
	defer ro.Close()
	require.ErrorIs(t, ro.RecordPoll(t.Context(), bot, at, nil), dedupe.ErrReadOnly)
	bots, err := ro.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Equal(t, event.ChatbotState{LastPoll: at.Add(time.Minute), LastOK: at, LastError: "leadlist: HTTP 503"}, bots[bot])
}

// TestRecordPollFlushFailureAtClose: a flush that fails at Close is returned and logged
// (Close is often deferred with its error dropped), naming the store and not the marks.
func TestRecordPollFlushFailureAtClose(t *testing.T) {
	var logs bytes.Buffer
	path := dbPath(t)
	s, _, err := dedupe.OpenWithFlushTicks(dedupe.Options{Path: path, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	require.NoError(t, s.RecordPoll(t.Context(), bot, t0, errors.New("leadlist: HTTP 503 from secret-host")))
	require.NoError(t, dedupe.CloseFile(s))

	err = s.Close()
	require.ErrorIs(t, err, berrors.ErrDatabaseNotOpen)
	assert.Contains(t, err.Error(), path)
	assert.Contains(t, logs.String(), "writing the poll bookkeeping at close failed")
	assert.NotContains(t, logs.String(), "secret-host", "a poll's error text stays out of the log")
}

// TestLastOK: the last success is this process's latest as it was given (monotonic
// reading and all), a failure does not move it, and after a restart it is the stored one.
func TestLastOK(t *testing.T) {
	path := dbPath(t)
	s, err := dedupe.Open(dedupe.Options{Path: path})
	require.NoError(t, err)
	got, err := s.LastOK(t.Context(), bot)
	require.NoError(t, err)
	assert.True(t, got.IsZero(), "never polled")

	at := time.Now() // carries a monotonic reading
	require.NoError(t, s.RecordPoll(t.Context(), bot, at, nil))
	require.NoError(t, s.RecordPoll(t.Context(), bot, at.Add(time.Minute), errors.New("leadlist: HTTP 503")))
	got, err = s.LastOK(t.Context(), bot)
	require.NoError(t, err)
	assert.True(t, got == at, "the success as given, monotonic reading included: %v", got)
	require.NoError(t, s.Close())

	s, err = dedupe.Open(dedupe.Options{Path: path})
	require.NoError(t, err)
	defer s.Close()
	got, err = s.LastOK(t.Context(), bot)
	require.NoError(t, err)
	assert.True(t, got.Equal(at), "the stored success: %v, want %v", got, at)
}
