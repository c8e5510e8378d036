package forwarders_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/forwarders"
)

// BenchmarkDispatchWebhook measures the whole delivery path for one forwarder: events
// taken into a real bbolt outbox, delivered to an httptest webhook target (204), and
// acknowledged. One op is one event delivered and acked.
func BenchmarkDispatchWebhook(b *testing.B) {
	for _, conc := range []int{1, 4, 16} {
		b.Run(fmt.Sprintf("concurrency=%d", conc), func(b *testing.B) {
			target := newSink(b, nil)
			st := openStore(b, filepath.Join(b.TempDir(), "s.db"), "crm")
			defer st.Close()
			f := target.forwarder(b, "crm", 5*time.Second)
			_, err := st.Ingest(b.Context(), "bot1", leads(b.N))
			require.NoError(b, err)
			d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: f, Retry: fastRetry(), Concurrency: conc}}}
			b.ResetTimer()
			require.NoError(b, d.Drain(context.Background()))
			b.StopTimer()
			depth, err := st.Depth(b.Context())
			require.NoError(b, err)
			require.Zero(b, depth["crm"])
			require.Equal(b, b.N, target.count())
		})
	}
}
