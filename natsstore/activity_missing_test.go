package natsstore_test

import (
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// An attempt whose kept event is gone from P_activity_events (purged) or unreadable
// shows no event: ActivityEvent answers found=false without an error, logging an
// unreadable copy once, by event id and forwarder, naming no lead; another forwarder's
// readable copy of the same event is still found.
func TestActivityEventWithoutItsMessage(t *testing.T) {
	for _, tc := range []struct {
		name      string
		otherCopy bool // crm delivered the event too, and its copy is intact
	}{{"alone", false}, {"beside another forwarder's copy", true}} {
		t.Run(tc.name, func(t *testing.T) {
			ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
			nc, js := ns.Connect()
			t.Cleanup(nc.Close)
			logs := &leadtest.LogBuffer{}
			s := open(t, nc, func(o *natsstore.Options) { o.Logger = slog.New(slog.NewJSONHandler(logs, nil)) })
			l := leadtest.Lead(bot, event.KindLead, 1, base)
			_, err := s.Ingest(t.Context(), bot, []event.Lead{l})
			require.NoError(t, err)
			fwds := []string{"bus"}
			if tc.otherCopy {
				fwds = append(fwds, "crm")
			}
			for _, fwd := range fwds {
				ds, err := s.Pending(t.Context(), fwd, 0, 0)
				require.NoError(t, err)
				require.Len(t, ds, 1, fwd)
				require.NoError(t, s.Record(t.Context(), []event.Outcome{{Delivery: ds[0], Verdict: event.Acked, At: time.Now()}}))
			}
			events, err := js.Stream(t.Context(), natsstore.DefaultPrefix+"_activity_events")
			require.NoError(t, err)
			subject := natsstore.DefaultPrefix + ".activity_event.bus." + l.ID()
			kept, err := events.GetLastMsgForSubject(t.Context(), subject)
			require.NoError(t, err)
			_, found, err := s.ActivityEvent(t.Context(), l.ID())
			require.NoError(t, err)
			require.True(t, found)

			// Unreadable: the same attempt's header over a body that is not an event.
			_, err = js.PublishMsg(t.Context(), &nats.Msg{Subject: subject, Header: kept.Header, Data: []byte("{not json")})
			require.NoError(t, err)
			ev, found, err := s.ActivityEvent(t.Context(), l.ID())
			require.NoError(t, err)
			assert.Equal(t, tc.otherCopy, found)
			if tc.otherCopy {
				assert.Equal(t, l.Email, ev.Data.Email, "crm's copy")
			}
			assert.Equal(t, 1, strings.Count(logs.String(), l.ID()), "logged once: %s", logs.String())
			for _, personal := range []string{l.Name, l.Email, l.Content} {
				assert.NotContains(t, logs.String(), personal)
			}

			// Missing: purged from the stream while the attempt stays in the log.
			require.NoError(t, events.Purge(t.Context(), jetstream.WithPurgeSubject(subject)))
			ev, found, err = s.ActivityEvent(t.Context(), l.ID())
			require.NoError(t, err)
			assert.Equal(t, tc.otherCopy, found)
			if !tc.otherCopy {
				assert.Equal(t, event.Event{}, ev)
			}
			attempts, err := s.Activity(t.Context(), event.ActivityQuery{EventID: l.ID()})
			require.NoError(t, err)
			assert.Len(t, attempts, len(fwds), "the attempts stay in the log")
		})
	}
}
