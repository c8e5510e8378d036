package ops

import (
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Paced returns bots with the interval each is really polled at, for readiness: its
// own, or interval when it has none, or longer when its account's chatbots need more
// calls than the account's request budget allows (maxRPS, by account) and take turns,
// each about every chatbots/max_rps. An account without a positive rate adds no wait.
func Paced(bots []event.Chatbot, interval time.Duration, maxRPS map[string]float64) []event.Chatbot {
	count := map[string]int{}
	for _, b := range bots {
		count[b.Account]++
	}
	out := slices.Clone(bots)
	for i := range out {
		if out[i].Interval == 0 {
			out[i].Interval = interval
		}
		if rps := maxRPS[out[i].Account]; rps > 0 {
			out[i].Interval = max(out[i].Interval, time.Duration(float64(count[out[i].Account])/rps*float64(time.Second)))
		}
	}
	return out
}
