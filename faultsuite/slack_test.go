package faultsuite

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/slack"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// The suite's Slack stand-in takes what the slack forwarder sends, single messages and
// digests, counting every id a digest names once per digest (a repeated digest repeats
// each of its ids).
func TestSlackStandInTakesDigests(t *testing.T) {
	s := newSlackStandIn(t, slackSecret, 1, 0)
	f, err := slack.New(slack.Config{Name: "sales", WebhookURL: s.url(), RateLimit: time.Millisecond}, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = f.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var evs []event.Event
	for i := range 3 {
		evs = append(evs, event.NewCreated(leadtest.Lead(serials[0], event.KindAppointment, int64(900+i),
			time.Date(2026, 11, 30, 9, 0, i, 0, time.UTC))))
	}
	require.Empty(t, f.DeliverBatch(ctx, evs, forwarders.Rest{Due: 4}))
	require.Empty(t, f.DeliverBatch(ctx, evs[:2], forwarders.Rest{}), "the same digest again, shorter")
	require.NoError(t, f.Deliver(ctx, evs[2]))

	assert.Empty(t, s.issues())
	assert.Equal(t, map[string]int{evs[0].ID: 2, evs[1].ID: 2, evs[2].ID: 2}, s.received())
	assert.Equal(t, map[string]string{evs[2].ID: "appointment|902"}, s.described(), "a single message's session read")
	assert.Equal(t, int32(2), s.digests.Load())
	assert.Equal(t, int32(1), s.singles.Load())
}
