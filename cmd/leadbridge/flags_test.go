package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
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
