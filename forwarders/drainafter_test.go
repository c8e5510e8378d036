package forwarders_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

// DrainAfter overlaps delivery with polling: it delivers entries as they are added to an
// outbox that starts empty, does not end while polling goes on, and once polling ends
// delivers what was added just before, even if the store's signal had not come yet.
func TestDispatcherDrainAfterOverlapsPolling(t *testing.T) {
	hook := newSink(t, nil)
	st := openStore(t, filepath.Join(t.TempDir(), "s.db"), "crm")
	defer st.Close()
	delivered := make(chan string, 16)
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{
		{Forwarder: hook.forwarder(t, "crm", time.Second), Retry: fastRetry()},
	}, OnResult: func(dl event.Delivery, res forwarders.Result, _ time.Duration, _ error) {
		if res == forwarders.ResultOK {
			delivered <- dl.Event.ID
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	polling := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- d.DrainAfter(ctx, polling) }()

	all := leads(5)
	_, err := st.Ingest(t.Context(), "bot1", all[:3])
	require.NoError(t, err)
	for range 3 {
		select {
		case <-delivered:
		case <-ctx.Done():
			t.Fatal("entries added while polling were not delivered before polling ended")
		}
	}
	select {
	case err := <-done:
		t.Fatalf("DrainAfter ended (%v) with its lane empty while polling went on", err)
	default:
	}

	_, err = st.Ingest(t.Context(), "bot1", all[3:])
	require.NoError(t, err)
	close(polling)
	require.NoError(t, <-done)
	require.NoError(t, ctx.Err())
	assert.Equal(t, 5, hook.count())
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"])
}
