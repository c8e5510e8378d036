package event

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// adds records every call TakePage makes to add: the number of leads and last.
type adds struct {
	calls []string
	fail  bool
}

func (a *adds) add(leads []Lead, last bool) (Ingested, error) {
	a.calls = append(a.calls, map[bool]string{true: "last", false: "part"}[last])
	if a.fail {
		return Ingested{}, errors.New("store failed")
	}
	return Ingested{New: len(leads)}, nil
}

func TestTakePage(t *testing.T) {
	two := []Lead{{}, {}}
	t.Run("parts then last", func(t *testing.T) {
		var a adds
		err := TakePage(func(take func([]Lead, bool) (Ingested, error)) error {
			res, err := take(two, false)
			require.NoError(t, err)
			assert.Equal(t, 2, res.New)
			_, err = take(two, true)
			return err
		}, a.add)
		require.NoError(t, err)
		assert.Equal(t, []string{"part", "last"}, a.calls)
	})
	t.Run("no part marked last is completed by an empty last part", func(t *testing.T) {
		var a adds
		require.NoError(t, TakePage(func(take func([]Lead, bool) (Ingested, error)) error {
			_, err := take(two, false)
			return err
		}, a.add))
		assert.Equal(t, []string{"part", "last"}, a.calls)
	})
	t.Run("nothing handed over touches nothing", func(t *testing.T) {
		var a adds
		require.NoError(t, TakePage(func(func([]Lead, bool) (Ingested, error)) error { return nil }, a.add))
		assert.Empty(t, a.calls)
	})
	t.Run("a part after the last is refused", func(t *testing.T) {
		var a adds
		var late error
		require.NoError(t, TakePage(func(take func([]Lead, bool) (Ingested, error)) error {
			_, _ = take(two, true)
			_, late = take(two, false)
			return nil
		}, a.add))
		assert.ErrorIs(t, late, ErrPartAfterEnd)
		assert.Equal(t, []string{"last"}, a.calls)
	})
	t.Run("a read that goes on after a failed part", func(t *testing.T) {
		a := adds{fail: true}
		err := TakePage(func(take func([]Lead, bool) (Ingested, error)) error {
			_, _ = take(two, false) // the failure is ignored
			return nil
		}, a.add)
		assert.ErrorIs(t, err, ErrReadAfterFailed)
		assert.Equal(t, []string{"part"}, a.calls, "no completing part after a failure")
	})
}
