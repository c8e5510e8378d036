package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDurationFlagsOutOfRangeAreUsageErrors(t *testing.T) {
	cfg := writeConfig(t, t.TempDir(), "http://127.0.0.1:1", "http://127.0.0.1:2", "")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"once", "--max-wait", "-5s"}, "--max-wait: want a duration of 0 or more, got -5s"},
		{[]string{"once", "--max-wait", "0"}, "--max-wait: want a positive duration, got 0s"},
		{[]string{"backfill", "--since", "2026-06-01", "--max-wait", "-1m"}, "--max-wait: want a duration of 0 or more, got -1m0s"},
		{[]string{"send-test", "crm", "--timeout", "-1s"}, "--timeout: want a duration of 0 or more"},
		{[]string{"send-test", "crm", "--timeout", "0s"}, "--timeout: want a positive duration"},
		{[]string{"demo", "--duration", "-1s"}, "--duration: want a duration of 0 or more"},
		{[]string{"demo", "--interval", "0"}, "--interval: want a positive duration"},
		{[]string{"demo", "--every", "-3s"}, "--every: want a duration of 0 or more"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			args := c.args
			if args[0] != "demo" {
				args = append(args, "--config", cfg)
			}
			code, _, stderr := runMain(t, args...)
			assert.Equal(t, 2, code, stderr)
			assert.Contains(t, stderr, c.want)
		})
	}
}

// A config with problems is refused with all of them, one indented line each, and the
// count, in the singular for one.
func TestConfigProblemsAreListedIndented(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.yaml")
	require.NoError(t, os.WriteFile(path, []byte("neoagent:\n  api_key: k\n  chatbots: [{serial: b1}]\nforwarders: [~]\n"), 0o600))
	code, _, stderr := runMain(t, "config", "check", "--config", path)
	assert.Equal(t, exitUsage, code)
	assert.Equal(t, "leadbridge: config "+path+": 2 problems:\n"+
		"  forwarders[0].name: required (line 4)\n"+
		"  forwarders[0].type: required (line 4)\n", stderr)

	require.NoError(t, os.WriteFile(path, []byte("neoagent:\n  api_key: k\n  chatbots: [{serial: b1}]\nforwarders: [{name: a, type: carrier-pigeon}]\n"), 0o600))
	code, _, stderr = runMain(t, "config", "check", "--config", path)
	assert.Equal(t, exitUsage, code)
	assert.Contains(t, stderr, ": 1 problem:\n  forwarders[0].type: ")
}
