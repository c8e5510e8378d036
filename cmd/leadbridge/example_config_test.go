package main

import (
	"log/slog"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/forwarders"
)

// TestExampleConfigBuilds checks that every forwarder in the repository's config.yaml is
// accepted by its constructor, not only by the config loader.
func TestExampleConfigBuilds(t *testing.T) {
	t.Setenv("NEOAGENT_API_KEY", "example-key-123456")
	t.Setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXXXXXX")
	t.Setenv("CRM_SECRET", "whsec_ZXhhbXBsZS1zZWNyZXQtMTIzNDU2Nzg=")
	cfg, err := config.Load("../../config.yaml")
	require.NoError(t, err)
	require.Len(t, cfg.Forwarders, 3)
	for _, fc := range cfg.Forwarders {
		f, err := buildForwarder(fc, slog.New(slog.DiscardHandler))
		require.NoError(t, err, fc.Name)
		require.Equal(t, fc.Name, f.Name())
		if c, ok := f.(forwarders.Closer); ok {
			require.NoError(t, c.Close())
		}
	}
}
