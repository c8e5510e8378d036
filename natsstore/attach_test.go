package natsstore_test

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// Replicas started together each create the forwarders' shared consumers where they
// open the store: every Attach succeeds, and the consumers exist before any Dispatcher
// asked for an entry.
func TestSharedAttachCreatesTheConsumersAtOpen(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	shared := make([]*natsstore.Shared, 3)
	for i := range shared {
		nc, _ := ns.Connect()
		t.Cleanup(nc.Close)
		shared[i] = open(t, nc, nil).Shared(natsstore.SharedOptions{})
		t.Cleanup(func() { _ = shared[i].Close() })
	}
	errs := make([]error, len(shared))
	var wg sync.WaitGroup
	for i, sh := range shared {
		wg.Go(func() { errs[i] = sh.Attach(t.Context(), "bus", "crm") })
	}
	wg.Wait()
	for i, err := range errs {
		require.NoError(t, err, "replica %d", i)
	}
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	for _, f := range []string{"bus", "crm"} {
		info, err := js.Consumer(t.Context(), "leadbridge_outbox", "leadbridge_"+f)
		require.NoError(t, err, "the consumer of %s", f)
		require.Equal(t, "leadbridge.outbox."+f, info.CachedInfo().Config.FilterSubject)
	}
	require.ErrorContains(t, shared[0].Attach(t.Context(), "no good"), `forwarder name "no good"`)
}
