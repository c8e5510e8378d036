package dedupe

import (
	"encoding/binary"
	"log/slog"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// maxClockJump is how far the wall clock may run ahead of the time the store can vouch
// for (its clock at the last start plus the monotonic time elapsed since, or the newest
// record time seen) before pruning and the retention horizon stop following it. It is
// below the 48h the config keeps between poll lookback and retention, so a wall clock
// that far ahead still prunes no key the API can return again.
const maxClockJump = 24 * time.Hour

var keyClock = []byte("clock")

// storeClock is the time the store prunes and judges record age by: the wall clock,
// unless it ran implausibly far ahead or fell behind, and never running backwards.
//
// The store vouches for base + (monotonic time since baseMono): base is the clock
// persisted by the last process (refreshed on every write), or the newest record
// CreatedAt seen that was not in the wall clock's future (so a real downtime is
// accepted once a new record proves the time). A wall reading within maxClockJump ahead
// of what the store vouches for is accepted and becomes the new base; a wall clock that
// is behind is ignored (the monotonic clock measures the time that passed).
type storeClock struct {
	now func() time.Time // wall clock
	log *slog.Logger

	mu       sync.Mutex
	base     time.Time // wall time vouched for at baseMono
	baseMono time.Time // a monotonic reading
	last     time.Time // the latest time handed out or loaded; the store's time never goes below it
	clamped  bool      // the wall clock is too far ahead; warned
}

// vouched is the wall time the store can vouch for now. Called with c.mu held.
func (c *storeClock) vouched() time.Time {
	return c.base.Add(time.Since(c.baseMono))
}

// read turns a wall reading into the store's time: the wall reading while it is within
// maxClockJump ahead of what the store vouches for, else the vouched time (the wall clock
// is behind) or the vouched time plus maxClockJump (it is too far ahead); never less
// than a time already handed out or persisted. Concurrent calls are serialised.
func (c *storeClock) read(wall time.Time) time.Time {
	wall = wall.Round(0) // a wall reading; elapsed time is measured on baseMono
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.vouched()
	t := v
	switch limit := v.Add(maxClockJump); {
	case wall.After(limit):
		t = limit
		if !c.clamped {
			c.clamped = true
			c.log.Warn("the wall clock is further ahead than the time elapsed since the store last wrote explains; "+
				"pruning and the retention horizon follow the store's clock until the wall clock agrees or a new record proves the time",
				"wall_clock", wall, "store_clock", t)
		}
	case wall.After(v):
		t = wall
		c.base, c.baseMono = wall, time.Now()
		if c.clamped {
			c.clamped = false
			c.log.Info("the wall clock agrees with the store's clock again", "wall_clock", wall)
		}
	}
	if t.Before(c.last) {
		return c.last
	}
	c.last = t
	return t
}

// observe takes a record's CreatedAt as proof that the time is at least that, unless it
// lies in the wall clock's future.
func (c *storeClock) observe(created, wall time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if created.After(wall) || !created.After(c.vouched()) {
		return
	}
	c.base, c.baseMono = created.Round(0), time.Now()
}

// persist stores what the store vouches for and the latest time it handed out, for the
// next process to start from: it vouches for no more than this one did (a jump cannot
// creep forward by restarts), and its time never goes below this one's.
func (c *storeClock) persist(tx *bolt.Tx) error {
	c.mu.Lock()
	v := c.vouched()
	floor := c.last
	if v.After(floor) {
		floor = v
	}
	c.mu.Unlock()
	b := binary.BigEndian.AppendUint64(nil, uint64(v.UnixNano()))
	return tx.Bucket(bucketMeta).Put(keyClock, binary.BigEndian.AppendUint64(b, uint64(floor.UnixNano())))
}

// loadClock reads the clock a previous process persisted: what it vouched for and the
// latest time it handed out. A store written before the clock was kept starts from its
// chatbots' latest poll; a new store from the wall clock.
func loadClock(tx *bolt.Tx, wall time.Time) (vouched, floor time.Time) {
	if meta := tx.Bucket(bucketMeta); meta != nil {
		if v := meta.Get(keyClock); len(v) == 16 {
			return time.Unix(0, int64(binary.BigEndian.Uint64(v))), time.Unix(0, int64(binary.BigEndian.Uint64(v[8:])))
		}
	}
	var latest time.Time
	if b := tx.Bucket(bucketChatbots); b != nil {
		_ = b.ForEach(func(k, _ []byte) error {
			var st event.ChatbotState
			if _, err := getJSON(b, k, &st); err == nil && st.LastPoll.After(latest) {
				latest = st.LastPoll
			}
			return nil
		})
	}
	if latest.IsZero() {
		latest = wall
	}
	return latest.Round(0), latest.Round(0)
}
