package poller

import (
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestWindowChunks(t *testing.T) {
	// Days of June 2026; the 30th is followed by July's.
	day := func(d int) Window { return Window{Start: date(2026, 6, d), End: date(2026, 6, d)} }
	span := func(from, to int) Window { return Window{Start: date(2026, 6, from), End: date(2026, 6, to)} }
	for _, tc := range []struct {
		name string
		w    Window
		days int
		want []Window
	}{
		{"exact multiple", span(1, 15), 7, []Window{span(1, 8), span(8, 15)}},
		{"remainder in a short last chunk", span(1, 17), 7, []Window{span(1, 8), span(8, 15), span(15, 17)}},
		{"narrower than a chunk comes back whole", span(1, 4), 7, []Window{span(1, 4)}},
		{"one day", span(1, 2), 1, []Window{span(1, 2)}},
		{"across a month end", span(25, 35), 7, []Window{span(25, 32), span(32, 35)}},
		{"empty window comes back whole", day(3), 7, []Window{day(3)}},
		{"days below 1 count as 1", span(1, 4), 0, []Window{span(1, 2), span(2, 3), span(3, 4)}},
		{"negative days count as 1", span(1, 3), -5, []Window{span(1, 2), span(2, 3)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.w.Chunks(tc.days))
		})
	}
}
