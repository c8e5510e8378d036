package console

import (
	"fmt"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// The chart of a forwarder: one bar per hour of the last chartHours, its deliveries in
// green with its failed attempts (retrying or dead) stacked above in red, drawn on the
// server as inline SVG.
const (
	chartHours  = 24
	barWidth    = 10
	barGap      = 2
	chartHeight = 48
)

// chart is one forwarder's bars, in SVG coordinates.
type chart struct {
	Forwarder string
	Width     int
	Height    int
	Bars      []bar
	Max       int // the tallest hour's attempts
	Delivered int
	Failed    int
}

// bar is one hour: its delivered and failed attempts and their rectangles.
type bar struct {
	Hour           time.Time
	OK, Bad        int
	X              int
	OKY, OKH       int
	BadY, BadH     int
	Label          string
	HasOK, HasFail bool
}

// hours is one forwarder's delivered and failed attempts per hour.
type hours [chartHours][2]int

// chartStart is where the chart of now begins: chartHours before the end of now's hour.
func chartStart(now time.Time) time.Time {
	return now.Truncate(time.Hour).Add(time.Hour - chartHours*time.Hour)
}

// hourly counts, per forwarder, the attempts recorded within the chart of now.
func hourly(attempts []event.Attempt, now time.Time) map[string]*hours {
	start := chartStart(now)
	out := map[string]*hours{}
	for _, a := range attempts {
		i := int(a.At.Sub(start) / time.Hour)
		if a.At.Before(start) || i >= chartHours {
			continue
		}
		h := out[a.Forwarder]
		if h == nil {
			h = &hours{}
			out[a.Forwarder] = h
		}
		if a.Verdict == event.Acked {
			h[i][0]++
		} else {
			h[i][1]++
		}
	}
	return out
}

// draw makes the chart of forwarder's hours (nil: none) ending with now's hour.
func draw(forwarder string, hs *hours, now time.Time) chart {
	if hs == nil {
		hs = &hours{}
	}
	start := chartStart(now)
	ch := chart{Forwarder: forwarder, Width: chartHours*(barWidth+barGap) - barGap, Height: chartHeight}
	for _, h := range hs {
		ch.Max = max(ch.Max, h[0]+h[1])
	}
	for i, h := range hs {
		b := bar{Hour: start.Add(time.Duration(i) * time.Hour), OK: h[0], Bad: h[1], X: i * (barWidth + barGap)}
		if ch.Max > 0 {
			b.OKH, b.BadH = scale(h[0], ch.Max), scale(h[1], ch.Max)
		}
		b.OKY = chartHeight - b.OKH
		b.BadY = b.OKY - b.BadH
		b.HasOK, b.HasFail = b.OKH > 0, b.BadH > 0
		b.Label = fmt.Sprintf("%s: %d delivered, %d failed", b.Hour.UTC().Format("15:04Z"), h[0], h[1])
		ch.Delivered += h[0]
		ch.Failed += h[1]
		ch.Bars = append(ch.Bars, b)
	}
	return ch
}

// scale is n of most in pixels of the chart's height, at least 1 for any n > 0.
func scale(n, most int) int {
	if n == 0 {
		return 0
	}
	return max(1, n*chartHeight/most)
}
