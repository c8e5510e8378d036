package ops_test

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/natsserver"
	"github.com/leadbridge/leadbridge/ops"
)

func TestReadyzFollowsTheEmbeddedNATSServer(t *testing.T) {
	s := openStore(t)
	srv, err := natsserver.Start(natsserver.Config{Listen: "127.0.0.1:0", StoreDir: t.TempDir()}, nil)
	require.NoError(t, err)
	t.Cleanup(srv.Shutdown)
	h := ops.NewHealth(s, bots, nil, time.Minute, nil)
	h.AddComponent("nats_server", srv.Ready)
	web := httptest.NewServer(ops.NewServer(ops.NewMetrics("test", s), h, nil, "", nil))
	t.Cleanup(web.Close)

	code, r := ready(t, web.URL)
	assert.Equal(t, http.StatusOK, code)
	assert.Equal(t, []ops.ComponentReadiness{{Name: "nats_server", OK: true}}, r.Components)

	srv.Shutdown()
	code, r = ready(t, web.URL)
	assert.Equal(t, http.StatusServiceUnavailable, code, "a stopped embedded server makes leadbridge not ready")
	require.Len(t, r.Components, 1)
	assert.False(t, r.Components[0].OK)
	assert.Contains(t, r.Components[0].Error, "embedded NATS server")
	require.NotEmpty(t, r.Reasons)
	assert.Contains(t, r.Reasons[len(r.Reasons)-1], "nats_server is not ready: embedded NATS server")
}
