package ops_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

func TestPacedFollowsTheAccountsBudget(t *testing.T) {
	bots := []event.Chatbot{
		{Serial: "a1", Account: "slow"},
		{Serial: "a2", Account: "slow", Interval: 10 * time.Second},
		{Serial: "a3", Account: "slow", Interval: time.Second},
		{Serial: "b1", Account: "fast"},
		{Serial: "c1", Account: "unbudgeted"},
	}
	got := ops.Paced(bots, 2*time.Second, map[string]float64{"slow": 0.5, "fast": 100, "unbudgeted": 0})
	want := []time.Duration{
		6 * time.Second,  // 3 chatbots at 0.5 calls/s take turns every 6 s
		10 * time.Second, // its own interval is longer than its turn
		6 * time.Second,  // its own interval is shorter than its turn
		2 * time.Second,  // poll.interval: the budget leaves room
		2 * time.Second,  // no rate: no turn to wait for
	}
	for i, b := range got {
		assert.Equal(t, want[i], b.Interval, b.Serial)
	}
	assert.Zero(t, bots[0].Interval, "the chatbots given are left as they were")
}
