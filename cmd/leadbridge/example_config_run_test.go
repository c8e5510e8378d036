package main

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// TestShippedConfigChecksAndSendsTests runs the repository's config.yaml as a new user
// would: `config check` accepts it, and `send-test bus` reaches a fresh JetStream server
// that has no stream yet (the config names one, which the forwarder creates).
func TestShippedConfigChecksAndSendsTests(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	url := ns.URL()

	t.Setenv("NEOAGENT_API_KEY", "example-key-123456")
	t.Setenv("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T000/B000/XXXXXXXX")
	t.Setenv("CRM_SECRET", "whsec_ZXhhbXBsZS1zZWNyZXQtMTIzNDU2Nzg=")
	t.Setenv("NATS_URL", url)
	cfgPath, err := filepath.Abs("../../config.yaml")
	require.NoError(t, err)
	t.Chdir(t.TempDir()) // the config's relative store path must not land in the source tree

	code, stdout, stderr := runMain(t, "config", "check", "--config", cfgPath)
	require.Equal(t, 0, code, "config check of the shipped config.yaml: %s", stderr)
	assert.Contains(t, stdout, "ok")

	code, stdout, stderr = runMain(t, "send-test", "bus", "--config", cfgPath, "--kind", "lead")
	require.Equal(t, 0, code, "send-test bus with the shipped config.yaml against a JetStream server without streams: %s", stderr)
	assert.Contains(t, stdout, `ok: forwarder "bus"`)

	nc, js := ns.Connect()
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "NEOAGENT")
	require.NoError(t, err, "the stream the shipped config names")
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs, "messages in the stream")
	assert.Equal(t, []string{"neoagent.>"}, info.Config.Subjects)
}
