package ops_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

// An impostor on the admin address answers the challenge with a redirect to a real
// daemon of the same token on another address, hoping the client checks the proof
// against the address it was redirected to and then sends its one-time authorization to
// the impostor, who would spend it on the real daemon and read its dead letters. The
// client follows no redirect and sends the authorized request only to the address that
// proved itself.
func TestImpostorRedirectingTheChallengeToARealDaemonGetsNothing(t *testing.T) {
	const token = "adm-token-redirect"
	store := openStore(t, "bus")
	ingest(t, store, 1)
	deadLetter(t, store, leadtest.Pending(t, store, "bus")[0], 1)
	real := httptest.NewServer(ops.NewServer(ops.NewMetrics("1", store), ops.NewHealth(store, nil, nil, time.Minute, nil),
		&ops.Local{Store: store}, token, nil))
	t.Cleanup(real.Close)

	var mu sync.Mutex
	var stolen []byte
	im := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		case "/admin/challenge":
			http.Redirect(w, r, real.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
		default: // spend the client's one-time authorization on the real daemon
			req, _ := http.NewRequest(r.Method, real.URL+r.URL.RequestURI(), nil)
			req.Header.Set("Authorization", r.Header.Get("Authorization"))
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				mu.Lock()
				if resp.StatusCode == http.StatusOK {
					stolen = b
				}
				mu.Unlock()
			}
			_, _ = w.Write([]byte(`[]`))
		}
	}))
	t.Cleanup(im.Close)

	c, err := ops.Dial(t.Context(), im.Listener.Addr().String(), token)
	if err == nil {
		var dls []event.DeadLetter
		dls, err = c.DeadLetters(t.Context(), "")
		_ = dls
	}
	mu.Lock()
	defer mu.Unlock()
	require.Empty(t, string(stolen), "the impostor read the real daemon's dead letters")
	require.ErrorIs(t, err, ops.ErrUnproven)
}
