package poller

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
)

// idlePoll sets up a Loop, logging at info to logs, whose chatbot's answer (both doc
// records) a real store has taken whole, and returns a poll of it that checks the poll
// found both records known.
func idlePoll(t *testing.T) (poll func(), logs *logSink) {
	t.Helper()
	srv := newLeadListServer(t)
	bot := event.Chatbot{Serial: "SN-IDLE"}
	srv.setRecords(bot.Serial, docLead, docAppointment)
	logs = &logSink{}
	l := &Loop{
		Client: srv.client(0),
		Store:  openStore(t, dedupe.Options{}),
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Now:    func() time.Time { return pollNow },
	}
	for range 2 { // the first takes the records, the second is remembered whole
		_, err := l.PollOnce(t.Context(), bot)
		require.NoError(t, err)
	}
	logs.Reset() // the first poll's baseline line; the polls measured log nothing
	return func() {
		res, err := l.PollOnce(t.Context(), bot)
		require.NoError(t, err)
		require.Equal(t, 2, res.Duplicate)
	}, logs
}

// maxIdlePollAllocs bounds the allocations of one poll whose answer the store took
// whole before (client and the test's LeadList server together, in this process): an
// idle daemon makes one such poll per chatbot and interval, and what they allocate is
// collected by the GC it wakes. It was 162 while the call went through http.Client.Do
// (which copies the headers and forks the request on every call) and the debug "polled"
// line was built at info; 149 since.
const maxIdlePollAllocs = 155

func TestIdlePollAllocations(t *testing.T) {
	if raceBuild {
		t.Skip("the race detector allocates on its own: the count is checked without it")
	}
	poll, logs := idlePoll(t)
	allocs := testing.AllocsPerRun(100, poll)
	assert.LessOrEqual(t, allocs, float64(maxIdlePollAllocs), "allocations per idle poll")
	assert.Empty(t, logs.String(), "an idle poll logs nothing at info")
}
