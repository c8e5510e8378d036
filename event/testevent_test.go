package event_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/leadbridge/leadbridge/event"
)

func TestNewTestIsMarkedAndFreshEachTime(t *testing.T) {
	bot := event.Chatbot{Serial: "BOT-1", Name: "Main site", Account: "acme"}
	at := time.Date(2026, 6, 1, 12, 0, 0, 0, time.FixedZone("PST", -8*3600))
	ev := event.NewTest(bot, event.KindAppointment, at)
	assert.Equal(t, event.TypeTest, ev.Type)
	assert.Equal(t, event.TestSource, ev.Source)
	assert.Equal(t, event.KindAppointment, ev.Data.Kind)
	assert.Equal(t, "BOT-1", ev.Data.Chatbot)
	assert.Equal(t, "acme", ev.Data.Account)
	assert.Equal(t, time.UTC, ev.Data.CreatedAt.Location())
	assert.True(t, at.Equal(ev.Data.CreatedAt))
	assert.NotEqual(t, ev.ID, event.NewTest(bot, event.KindAppointment, at.Add(time.Millisecond)).ID,
		"a later test is not a repeat")
	assert.Equal(t, ev.ID, event.NewTest(bot, event.KindAppointment, at).ID)
}
