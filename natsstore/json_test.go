package natsstore_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// TestEventsCarryTheStoredJSON: an outbox entry's event comes back carrying the JSON the
// store holds, which forwarders send as it is (event.Event.JSON), not an encoding made
// again; a move keeps those bytes too. The stored JSON here has its keys in another
// order than json.Marshal writes them, so that a fresh encoding would differ.
func TestEventsCarryTheStoredJSON(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)

	ev := event.NewCreated(leadtest.Lead(bot, event.KindAppointment, 7, base))
	plain, err := json.Marshal(ev)
	require.NoError(t, err)
	var fields map[string]any
	require.NoError(t, json.Unmarshal(plain, &fields))
	stored, err := json.Marshal(fields) // the same event, its keys sorted
	require.NoError(t, err)
	require.NotEqual(t, string(plain), string(stored))

	d := event.Delivery{Forwarder: "crm", Seq: 1, Event: ev.WithJSON(stored), Enqueued: base}
	require.NoError(t, s.ImportDelivery(t.Context(), "test", d))
	got, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, ev, got[0].Event.WithJSON(nil), "the event's fields")
	body, err := got[0].Event.JSON()
	require.NoError(t, err)
	assert.Equal(t, string(stored), string(body), "the stored bytes")

	moved, _, err := s.MovePending(t.Context(), "crm", "crm2")
	require.NoError(t, err)
	require.Equal(t, 1, moved)
	got, err = s.Pending(t.Context(), "crm2", 0, 0)
	require.NoError(t, err)
	require.Len(t, got, 1)
	body, err = got[0].Event.JSON()
	require.NoError(t, err)
	assert.Equal(t, string(stored), string(body), "the stored bytes, moved")
}
