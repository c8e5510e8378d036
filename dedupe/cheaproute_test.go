package dedupe

import (
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// routedInTx reports whether its caller runs inside a chunk's write transaction: under
// ingestTx.route, not ingestChunk's routing between two runs.
func routedInTx() bool {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(2, pcs)])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, ".(*ingestTx).route") {
			return true
		}
		if !more {
			return false
		}
	}
}

// With CheapRoute saying Route is cheap (no jq filter), a chunk that makes events routes
// them inside its one transaction instead of running twice; without it, or when it says
// no, Route runs with no transaction open. Either way each event is queued once.
func TestCheapRouteTakesAChunkInOneRun(t *testing.T) {
	for name, tc := range map[string]struct {
		cheap  func() bool
		inside bool
	}{
		"cheap":     {func() bool { return true }, true},
		"filtered":  {func() bool { return false }, false},
		"not known": {nil, false},
	} {
		t.Run(name, func(t *testing.T) {
			var calls, inside int
			s, err := Open(Options{Path: t.TempDir() + "/leadbridge.db", Initial: InitialEmit, CheapRoute: tc.cheap,
				Route: func(event.Event) []string {
					calls++
					if routedInTx() {
						inside++
					}
					return []string{"bus", "crm"}
				}})
			require.NoError(t, err)
			defer s.Close()
			page := make([]event.Lead, 3)
			for i := range page {
				page[i] = event.Lead{Chatbot: "bot", Kind: event.KindLead, SessionID: int64(i),
					CreatedAt: time.Date(2024, 1, 1, 0, i, 0, 0, time.UTC)}
			}
			res, err := s.Ingest(t.Context(), "bot", page)
			require.NoError(t, err)
			assert.Equal(t, 3, res.New)
			assert.Equal(t, 3, calls, "each event routed once")
			if tc.inside {
				assert.Equal(t, 3, inside, "routed inside the transaction")
			} else {
				assert.Zero(t, inside, "routed outside the transaction")
			}
			for _, fwd := range []string{"bus", "crm"} {
				ds, err := s.Pending(t.Context(), fwd, 0, 0)
				require.NoError(t, err)
				assert.Len(t, ds, 3, fwd)
			}
		})
	}
}
