package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestShippedConfigChecksAndSendsTests runs the repository's config.yaml as a new user
// would: `config check` accepts it, and `send-test bus` reaches a fresh JetStream server
// that has no stream yet (the config names one, which the forwarder creates).
func TestShippedConfigChecksAndSendsTests(t *testing.T) {
	ns := startNATS(t, -1, t.TempDir())
	t.Cleanup(ns.Shutdown)
	addr, ok := ns.Addr().(*net.TCPAddr)
	require.True(t, ok, "nats-server address %v", ns.Addr())
	url := fmt.Sprintf("nats://127.0.0.1:%d", addr.Port)

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

	nc, err := natsgo.Connect(url)
	require.NoError(t, err)
	defer nc.Close()
	js, err := jetstream.New(nc)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "NEOAGENT")
	require.NoError(t, err, "the stream the shipped config names")
	info, err := s.Info(ctx)
	require.NoError(t, err)
	assert.Equal(t, uint64(1), info.State.Msgs, "messages in the stream")
	assert.Equal(t, []string{"neoagent.>"}, info.Config.Subjects)
}
