package main

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/ops"
)

// renameForwarder renames forwarder old to new in the rig's config.
func (r *rig) renameForwarder(t *testing.T, old, new string) {
	t.Helper()
	b, err := os.ReadFile(r.cfg)
	require.NoError(t, err)
	renamed := strings.Replace(string(b), "{name: "+old+",", "{name: "+new+",", 1)
	require.NotEqual(t, string(b), renamed)
	require.NoError(t, os.WriteFile(r.cfg, []byte(renamed), 0o600))
}

func TestRenamedForwarderDeliveriesAreStrandedUntilMoved(t *testing.T) {
	r := newRig(t, http.StatusServiceUnavailable, "")
	r.api.Generate(testSerial, time.Now().Add(-time.Minute))
	code, _, _ := runMain(t, "once", "--config", r.cfg, "--max-wait", "300ms")
	require.Equal(t, 1, code, "bad keeps its delivery pending")

	// bad becomes bad-v2; a config check with the store names what this strands.
	r.renameForwarder(t, "bad", "bad-v2")
	code, stdout, stderr := runMain(t, "config", "check", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "ok")
	assert.Contains(t, stderr, `warning: store `)
	assert.Contains(t, stderr, `forwarder "bad" is not in this config but has 1 pending deliveries`)
	assert.Contains(t, stderr, "outbox move --from bad --to NEW")

	r.bad.AnswerAll(0)
	startDaemon(t, r.cfg, r.addr)
	code, body := readyz(t, r.addr)
	assert.Equal(t, http.StatusServiceUnavailable, code, "stranded deliveries: not ready")
	assert.Contains(t, body, "1 delivery stranded: forwarder bad is not in the config")
	code, stdout, stderr = runMain(t, "status", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, "bad +unconfigured +1 +0 +STRANDED", stdout)

	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"outbox", "move", "--from", "good", "--to", "bad-v2"}, `--from "good" is a forwarder in`},
		{[]string{"outbox", "move", "--from", "bad", "--to", "crm"}, `--to "crm" is not a forwarder in`},
		{[]string{"outbox", "move", "--to", "bad-v2"}, "needs --from"},
		{[]string{"outbox", "drop", "--forwarder", "good"}, `--forwarder "good" is a forwarder in`},
		{[]string{"outbox", "drop"}, "needs --forwarder"},
		{[]string{"outbox", "list"}, "usage: leadbridge outbox move"},
	} {
		code, _, stderr := runMain(t, append(c.args, "--config", r.cfg)...)
		assert.Equal(t, 2, code, "%v", c.args)
		assert.Contains(t, stderr, c.want, "%v", c.args)
	}

	code, stdout, stderr = runMain(t, "outbox", "move", "--from", "bad", "--to", "bad-v2", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `moved 1 pending deliveries from "bad" to "bad-v2"`)
	assert.Contains(t, stdout, "the running daemon delivers them now")
	require.Eventually(t, func() bool { return len(r.bad.IDs()) >= 2 }, 10*time.Second, 20*time.Millisecond,
		"the running daemon's bad-v2 lane picks the moved delivery up")
	ids := r.bad.IDs()
	assert.Equal(t, ids[0], ids[len(ids)-1], "the same event id")

	require.Eventually(t, func() bool {
		code, _ := readyz(t, r.addr)
		return code == http.StatusOK
	}, 10*time.Second, 50*time.Millisecond, "ready once nothing is stranded")
	code, stdout, _ = runMain(t, "status", "--config", r.cfg, "--json")
	require.Equal(t, 0, code)
	var s ops.Status
	require.NoError(t, json.Unmarshal([]byte(stdout), &s))
	for _, f := range s.Forwarders {
		assert.NotEqual(t, "bad", f.Name, "the old forwarder is gone from the status")
	}
}

func TestRemovedForwarderDeliveriesDroppedWithoutADaemon(t *testing.T) {
	r := newRig(t, http.StatusServiceUnavailable, "")
	r.api.Generate(testSerial, time.Now().Add(-time.Minute))
	r.api.Generate(testSerial, time.Now().Add(-2*time.Minute))
	code, _, _ := runMain(t, "once", "--config", r.cfg, "--max-wait", "300ms")
	require.Equal(t, 1, code)
	r.renameForwarder(t, "bad", "other")

	code, stdout, stderr := runMain(t, "outbox", "drop", "--forwarder", "bad", "--config", r.cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, `dropped 2 pending deliveries of forwarder "bad"`)
	code, _, stderr = runMain(t, "config", "check", "--config", r.cfg)
	require.Equal(t, 0, code)
	assert.NotContains(t, stderr, "warning")
}

func TestSecretPrintsAWebhookSecretTheConfigAccepts(t *testing.T) {
	code, stdout, stderr := runMain(t, "secret")
	require.Equal(t, 0, code, stderr)
	secret := strings.TrimSpace(stdout)
	require.Regexp(t, `^whsec_[A-Za-z0-9+/]{43}=$`, secret, "whsec_ and the base64 of 32 bytes")
	_, again, _ := runMain(t, "secret")
	assert.NotEqual(t, stdout, again, "fresh each time")

	dir := t.TempDir()
	t.Setenv("LB_TEST_SECRET", secret)
	cfg := writeConfig(t, dir, "http://127.0.0.1:1", "http://127.0.0.1:2",
		`  - {name: signed, type: webhook, url: "https://crm.example.com/hook", secret: "${LB_TEST_SECRET}"}`)
	code, stdout, stderr = runMain(t, "config", "check", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Contains(t, stdout, "ok (1 chatbots, 2 forwarders)")
	assert.NotContains(t, stdout+stderr, secret)

	code, _, _ = runMain(t, "secret", "extra")
	assert.Equal(t, 2, code)
}
