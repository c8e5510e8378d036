package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeakRSSIsTheChildsOwn: a small program started by a large benchmark process is
// reported with its own peak RSS, not the benchmark's (which rusage would report).
func TestPeakRSSIsTheChildsOwn(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	sleep, err := exec.LookPath("sleep")
	require.NoError(t, err)
	ballast := make([]byte, 128<<20)
	for i := range ballast { // resident, so the parent's peak is at least this
		ballast[i] = byte(i)
	}
	_, parentHWM, err := procMemory(os.Getpid())
	require.NoError(t, err)
	require.Greater(t, parentHWM, int64(128<<20))

	u, err := runToEnd(sleep, []string{"0.2"}, nil, filepath.Join(t.TempDir(), "sleep.log"))
	require.NoError(t, err)
	runtime.KeepAlive(ballast)
	assert.Positive(t, u.peakRSS)
	assert.Less(t, u.peakRSS, int64(32<<20), "sleep's peak RSS; the benchmark process's was %d MB", parentHWM>>20)
}
