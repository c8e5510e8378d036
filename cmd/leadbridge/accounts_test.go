package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// accounts is the account of each chatbot whose events sink took.
func accounts(sink *leadtest.Sink) map[string]string {
	out := map[string]string{}
	for _, ev := range sink.Events() {
		out[ev.Data.Chatbot] = ev.Data.Account
	}
	return out
}

// One config, two accounts on two hosts with two keys: each chatbot is polled with its
// own account's, every event says which account it came from, a forwarder's accounts
// filter keeps the other account out, and status groups by account.
func TestOnceWithTwoAccounts(t *testing.T) {
	apiA, urlA := leadtest.StartAPI(t, "key-a-123456")
	apiB, urlB := leadtest.StartAPI(t, "key-b-654321")
	all, resellerOnly := leadtest.NewSink(t, nil), leadtest.NewSink(t, nil)
	t.Setenv("LB_KEY_A", "key-a-123456")
	t.Setenv("LB_KEY_B", "key-b-654321")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	require.NoError(t, os.WriteFile(cfg, []byte(fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_KEY_A}
  chatbots:
    - {serial: %s, name: Main site}
  accounts:
    - name: reseller
      base_url: %s
      api_key: ${LB_KEY_B}
      max_rps: 2
      chatbots:
        - {serial: b1, name: Reseller site, interval: 5m}
poll: {interval: 1s, initial: emit}
store: {path: %s}
forwarders:
  - {name: all, type: webhook, url: %s, retry: {initial_interval: 50ms, max_interval: 200ms}}
  - {name: reseller-only, type: webhook, url: %s, accounts: [reseller], retry: {initial_interval: 50ms, max_interval: 200ms}}
http: {listen: ""}
`, urlA, testSerial, urlB, filepath.Join(dir, "lb.db"), all.URL, resellerOnly.URL)), 0o600))

	now := time.Now()
	apiA.Generate(testSerial, now.Add(-time.Hour))
	apiB.Generate("b1", now.Add(-time.Hour))

	code, _, stderr := runMain(t, "once", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Equal(t, map[string]string{testSerial: "default", "b1": "reseller"}, accounts(all))
	assert.Equal(t, map[string]string{"b1": "reseller"}, accounts(resellerOnly))
	assert.Equal(t, 1, apiA.RequestsFor(testSerial))
	assert.Zero(t, apiA.RequestsFor("b1"))
	assert.Equal(t, 1, apiB.RequestsFor("b1"))
	assert.NotContains(t, stderr, "key-a-123456")
	assert.NotContains(t, stderr, "key-b-654321")

	code, out, stderr := runMain(t, "status", "--config", cfg)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `(?m)^default\s+1\s+1\s+0\s+0\s+1\s`, out)
	assert.Regexp(t, `(?m)^reseller\s+1\s+1\s+0\s+0\s+1\s`, out)
	assert.Contains(t, out, "2 chatbots in 2 accounts (0 failing)")

	code, out, stderr = runMain(t, "status", "--config", cfg, "--account", "reseller", "--json")
	require.Equal(t, 0, code, stderr)
	var st struct {
		Chatbots []struct{ Serial, Account string }
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	assert.Equal(t, []struct{ Serial, Account string }{{"b1", "reseller"}}, st.Chatbots)

	code, _, stderr = runMain(t, "status", "--config", cfg, "--account", "nobody")
	assert.Equal(t, 2, code)
	assert.Contains(t, stderr, `no account "nobody" among the chatbots (accounts: default, reseller)`)
}
