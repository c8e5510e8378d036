package natsstore

import (
	"sync"
	"time"
)

// serverClock is the NATS server's clock as this process last saw it: a time the server
// stamped (a stream's info, a key's write) plus the monotonic time elapsed here since.
// It is the clock the store's TTLs run on, so it is the store's clock: Ingest judges a
// record stale by it when the wall clock is ahead of it. Safe for concurrent use.
type serverClock struct {
	mu   sync.Mutex
	at   time.Time // a time the server stamped, zero if none seen yet
	mono time.Time // a monotonic reading here when at was seen
}

// observe notes that the server's clock read at, in a stamp received just now; an older
// stamp (a key written a while ago) changes nothing.
func (c *serverClock) observe(at time.Time) {
	if at.IsZero() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || at.After(c.at.Add(time.Since(c.mono))) {
		c.at, c.mono = at.Round(0), time.Now()
	}
}

// earlier is wall, or the server's time now if that is earlier (the wall clock jumped
// ahead); wall when no stamp was seen yet.
func (c *serverClock) earlier(wall time.Time) time.Time {
	if server := c.latest(wall); server.Before(wall) {
		return server
	}
	return wall
}

// latest is the server's time now as the last stamp seen shows it (never ahead of the
// server, but for rounding), or wall when no stamp was seen yet.
func (c *serverClock) latest(wall time.Time) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() {
		return wall
	}
	return c.at.Add(time.Since(c.mono))
}
