package poller

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// An ordinary answer stays in memory; a large one moves to a file in the spool's
// directory, reads back whole, and the file is gone after Close.
func TestSpoolKeepsSmallBodiesInMemoryAndLargeOnesOnDisk(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   int
		onDisk bool
	}{
		{"small", 20 << 10, false},
		{"large", memSpool + 5000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			want := bytes.Repeat([]byte("0123456789abcdef"), tc.size/16+1)[:tc.size]
			sp := &spool{dir: dir}
			for rest := want; len(rest) > 0; {
				n := min(len(rest), 32<<10)
				_, err := sp.Write(rest[:n])
				require.NoError(t, err)
				rest = rest[n:]
			}
			entries, err := os.ReadDir(dir)
			require.NoError(t, err)
			assert.Equal(t, tc.onDisk, len(entries) == 1)
			got, err := io.ReadAll(io.NewSectionReader(sp, 0, int64(tc.size)))
			require.NoError(t, err)
			assert.Equal(t, want, got)
			require.NoError(t, sp.Close())
			entries, err = os.ReadDir(dir)
			require.NoError(t, err)
			assert.Empty(t, entries)
		})
	}
}
