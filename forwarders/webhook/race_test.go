//go:build race

package webhook

// raceEnabled is true under the race detector, which makes sync.Pool drop at random
// what is put in it: allocation counts then say nothing.
const raceEnabled = true
