package event

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestInitialEmits(t *testing.T) {
	for in, want := range map[string]bool{"": false, InitialSkip: false, InitialEmit: true} {
		got, err := InitialEmits(in)
		require.NoError(t, err, "%q", in)
		assert.Equal(t, want, got, "%q", in)
	}
	_, err := InitialEmits("flood")
	assert.EqualError(t, err, `initial "flood" is neither "skip" nor "emit"`)
}

func TestCheckMove(t *testing.T) {
	assert.NoError(t, CheckMove("crm", "crm-v2"))
	for _, bad := range [][2]string{{"", "x"}, {"x", ""}, {"", ""}, {"crm", "crm"}} {
		assert.EqualError(t, CheckMove(bad[0], bad[1]), "want two different forwarder names", "%q", bad)
	}
}
