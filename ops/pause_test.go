package ops_test

import (
	"bytes"
	"log/slog"
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/forwarders/webhook"
	"github.com/leadbridge/leadbridge/ops"
)

// route is a route to a webhook forwarder named name (it connects nowhere until it
// delivers) whose settings fingerprint is hash.
func route(t *testing.T, name, hash string) forwarders.Route {
	t.Helper()
	f, err := webhook.New(webhook.Config{Name: name, URL: "http://127.0.0.1:9/hooks"}, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	return forwarders.Route{Forwarder: f, ConfigHash: hash}
}

func TestRestorePauses(t *testing.T) {
	s := openStore(t, "same", "changed", "never", "removed")
	require.NoError(t, s.Pause(t.Context(), "same", "HTTP 410 Gone", "hash-same"))
	require.NoError(t, s.Pause(t.Context(), "changed", "HTTP 410 Gone", "hash-old"))
	require.NoError(t, s.Pause(t.Context(), "removed", "HTTP 410 Gone", "hash-removed"))
	routes := []forwarders.Route{route(t, "same", "hash-same"), route(t, "changed", "hash-new"), route(t, "never", "hash-never")}
	var logs bytes.Buffer

	require.NoError(t, ops.RestorePauses(t.Context(), s, routes, slog.New(slog.NewTextHandler(&logs, nil))))

	assert.True(t, routes[0].Paused, "a forwarder paused under the same config starts paused")
	assert.False(t, routes[1].Paused, "a forwarder whose config changed since its pause starts running")
	assert.False(t, routes[2].Paused, "a forwarder never paused starts running")
	paused, err := s.Paused(t.Context())
	require.NoError(t, err)
	assert.ElementsMatch(t, []string{"same", "removed"}, slices.Collect(maps.Keys(paused)),
		"the changed forwarder is resumed in the store too; a forwarder with no route keeps its pause")
	assert.Contains(t, logs.String(), `level=WARN msg="forwarder is paused: its target said it is gone; fix it and run `+
		"`leadbridge forwarder resume`"+`" forwarder=same`)
	assert.Contains(t, logs.String(), `level=INFO msg="forwarder resumed: its config changed since it was paused" forwarder=changed`)
	assert.NotContains(t, logs.String(), "never")
	assert.NotContains(t, logs.String(), "removed")
}

func TestRestorePausesStoreFailure(t *testing.T) {
	s := openStore(t, "a")
	require.NoError(t, s.Close())
	routes := []forwarders.Route{route(t, "a", "hash")}
	err := ops.RestorePauses(t.Context(), s, routes, slog.New(slog.DiscardHandler))
	require.Error(t, err)
	assert.False(t, routes[0].Paused)
}
