package dedupe

import "time"

// Elapse makes the store's monotonic clock count d more elapsed time, as if d had passed
// since it was opened: what a test does when it moves its injected wall clock honestly.
func Elapse(s *Store, d time.Duration) {
	s.clock.mu.Lock()
	defer s.clock.mu.Unlock()
	s.clock.baseMono = s.clock.baseMono.Add(-d)
}
