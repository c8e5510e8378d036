package dedupe

import (
	"time"

	bolt "go.etcd.io/bbolt"
)

// Elapse makes the store's monotonic clock count d more elapsed time, as if d had passed
// since it was opened: what a test does when it moves its injected wall clock honestly.
func Elapse(s *Store, d time.Duration) {
	s.clock.mu.Lock()
	defer s.clock.mu.Unlock()
	s.clock.baseMono = s.clock.baseMono.Add(-d)
}

// OpenWithFlushTicks opens a store whose poll bookkeeping is flushed at each value sent
// on the returned channel instead of on a timer. The channel is unbuffered, so a send
// returns once the flusher took the tick, and a second send only after the first
// flush finished.
func OpenWithFlushTicks(opts Options) (*Store, chan<- time.Time, error) {
	s, err := open(opts)
	if err != nil {
		return nil, nil, err
	}
	tick := make(chan time.Time)
	s.startFlush(tick, func() {})
	return s, tick, nil
}

// CrashCopy writes to path what a crash of s at this instant would leave on disk: its
// committed transactions.
func CrashCopy(s *Store, path string) error {
	return s.db.View(func(tx *bolt.Tx) error { return tx.CopyFile(path, 0o600) })
}

// CommittedTx is the id of the last transaction s committed to its file.
func CommittedTx(s *Store) int {
	var id int
	_ = s.db.View(func(tx *bolt.Tx) error { id = tx.ID(); return nil })
	return id
}

// CloseFile closes s's bbolt file behind its back, so that its next write fails.
func CloseFile(s *Store) error { return s.db.Close() }
