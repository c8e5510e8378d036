package dedupe_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

func TestDropPending(t *testing.T) {
	s := open(t, dbPath(t), nil)
	_, err := s.Ingest(t.Context(), bot, append(leads(bot, 0, 2), leadtest.Lead(bot, event.KindAppointment, 9, t0)))
	require.NoError(t, err)
	n, err := s.DropPending(t.Context(), "sales")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Empty(t, pending(t, s, "sales"))
	assert.Len(t, pending(t, s, "bus"), 3, "other forwarders keep theirs")
	n, err = s.DropPending(t.Context(), "sales")
	require.NoError(t, err)
	assert.Zero(t, n)
	_, err = s.DropPending(t.Context(), "")
	require.Error(t, err)
}

func TestMoveAndDropRefusedReadOnly(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	_, err := s.Ingest(t.Context(), bot, leads(bot, 0, 1))
	require.NoError(t, err)
	require.NoError(t, s.Close())
	ro := open(t, path, func(o *dedupe.Options) { o.ReadOnly = true })
	_, _, err = ro.MovePending(t.Context(), "bus", "bus2")
	require.ErrorIs(t, err, dedupe.ErrReadOnly)
	_, err = ro.DropPending(t.Context(), "bus")
	require.ErrorIs(t, err, dedupe.ErrReadOnly)
}
