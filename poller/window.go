package poller

import "time"

// Chunks splits w into consecutive windows of at most days UTC days (at least 1), oldest
// first, each ending on the day the next one starts, the last ending at w.End; a window
// no wider than days comes back whole. Reading a long range chunk by chunk never sends
// one giant request; a record on a boundary day is read twice, and the store takes it
// once.
func (w Window) Chunks(days int) []Window {
	days = max(days, 1)
	var out []Window
	for start := w.Start; ; {
		end := start.AddDate(0, 0, days)
		if !end.Before(w.End) {
			return append(out, Window{Start: start, End: w.End})
		}
		out = append(out, Window{Start: start, End: end})
		start = end
	}
}

// chunks splits a catch-up window into pieces no wider than the plain window of a
// chatbot whose lookback is lookback, so that catching up after a long gap never sends a
// request that a regular poll would not.
func chunks(w Window, lookback time.Duration) []Window {
	return w.Chunks(int(lookback / (24 * time.Hour)))
}
