package faultsuite

import (
	"encoding/json"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// streamName is the JetStream stream the suite creates over neoagent.>.
const streamName = "LEADS"

// streamMsg is one stored message, reduced to what the suite checks.
type streamMsg struct {
	msgID, ceID, subject string
	event                event.Event
	decodeErr            error
}

// readStream returns every message of the suite's stream, in order, decoded.
func readStream(nb *leadtest.NATS) []streamMsg {
	var out []streamMsg
	for _, m := range nb.ReadStream(streamName) {
		sm := streamMsg{msgID: m.Header.Get("Nats-Msg-Id"), ceID: m.Header.Get("Ce-Id"), subject: m.Subject}
		sm.decodeErr = json.Unmarshal(m.Data, &sm.event)
		out = append(out, sm)
	}
	return out
}
