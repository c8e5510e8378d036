package ops_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

// StatusWithoutSeen is Status less the seen counts: the same chatbots, poll states,
// forwarders and pauses, read from a bbolt store without counting its seen keys.
func TestStatusWithoutSeenIsStatusLessTheCounts(t *testing.T) {
	store := openStore(t, "bus", "old")
	ingest(t, store, 3)
	require.NoError(t, store.RecordPoll(t.Context(), serialA, time.Now(), errors.New("leadlist: HTTP 503")))
	require.NoError(t, store.Pause(t.Context(), "bus", "webhook bus: HTTP 410 Gone", "hash"))
	local := &ops.Local{Store: store, Chatbots: []event.Chatbot{{Serial: serialA, Name: chatbotName}},
		Forwarders: []ops.ForwarderInfo{{Name: "bus", Type: "webhook"}}, Version: "1.2.3"}

	counted, err := local.Status(t.Context())
	require.NoError(t, err)
	require.Len(t, counted.Chatbots, 1)
	assert.Equal(t, 3, counted.Chatbots[0].Seen, "leadbridge status counts")
	assert.Equal(t, "leadlist: HTTP 503", counted.Chatbots[0].LastError)
	require.Len(t, counted.Forwarders, 2, "bus and the unconfigured old")

	got, err := local.StatusWithoutSeen(t.Context())
	require.NoError(t, err)
	counted.Chatbots[0].Seen = 0
	assert.Equal(t, counted, got)
}
