package natsstore_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// A wall clock jumped a month ahead does not make Ingest judge fresh records stale (they
// would never be taken): the retention horizon follows the server's clock, which the
// seen keys expire by, when the wall clock is ahead of it; a record older than the
// retention by the server's clock is still stale.
func TestIngestHorizonFollowsTheServersClockWhenTheWallClockJumpedAhead(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) {
		o.Retention = 72 * time.Hour
		o.Now = func() time.Time { return time.Now().Add(30 * 24 * time.Hour) }
	})
	fresh := leadtest.Lead(bot, event.KindLead, 1, time.Now().Add(-time.Hour))
	old := leadtest.Lead(bot, event.KindLead, 2, time.Now().Add(-100*time.Hour))
	res, err := s.Ingest(t.Context(), bot, []event.Lead{fresh, old})
	require.NoError(t, err)
	assert.Equal(t, 1, res.New, "the fresh record is taken")
	assert.Equal(t, 1, res.Stale, "the record older than the retention is not")
	require.Len(t, res.Events, 1)
	assert.Equal(t, fresh.ID(), res.Events[0].ID)
}
