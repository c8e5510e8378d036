package webhook

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A new secret is one the forwarder reads as a whsec_ key of 32 bytes, fresh each time.
func TestNewSecretIsAValidFreshKey(t *testing.T) {
	s := NewSecret()
	assert.Regexp(t, `^whsec_[A-Za-z0-9+/]{43}=$`, s)
	key, err := signingKey(s)
	require.NoError(t, err)
	assert.Len(t, key, 32)
	assert.NotEqual(t, s, NewSecret())
}
