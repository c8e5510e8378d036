package config

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestDecodeRulesBeyondYAMLv3 pins rules of our decoder that yaml.v3's own strict
// decoding (Decoder.KnownFields) does not keep: it takes yes/on/no/off for a bool and a
// whole float for an integer, drops a list item that is null or fails to decode (so a
// stray "-" passes unseen and later items lose their index), stops at a duplicate key
// without decoding the rest of that mapping, and names no key path. A decoder that
// replaces ours must pass these as well as TestParseErrors.
func TestDecodeRulesBeyondYAMLv3(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string // each must be one of the error's lines
	}{
		{"bool given as yes", head + hook + "dedupe:\n  emit_updates: yes\n",
			[]string{`dedupe.emit_updates: expected true or false, got "yes" (line 11)`}},
		{"integer given as a float", head + hook + "    concurrency: 2.0\n",
			[]string{`forwarders[0].concurrency: expected an integer, got "2.0" (line 10)`}},
		{"stray dash in chatbots", "neoagent:\n  api_key: k\n  chatbots:\n    - serial: bot1\n    -\n" + hook,
			[]string{"neoagent.chatbots[1].serial: required (line 5)"}},
		{"stray dash in forwarders", head + "forwarders:\n  -\n  - name: crm\n    type: webhook\n    url: https://crm.example.com/hook\n",
			[]string{"forwarders[0].name: required (line 7)", "forwarders[0].type: required (line 7)"}},
		{"items after a bad item keep their index", head + hook + "    chatbots: [[a], bot9]\n",
			[]string{"forwarders[0].chatbots[0]: expected a string, got a list (line 10)",
				`forwarders[0].chatbots[1]: unknown chatbot "bot9" (not a serial in neoagent.chatbots or neoagent.accounts[].chatbots) (line 10)`}},
		{"keys after a duplicate are still checked", head + hook + "poll: {interval: 1m, interval: 2m, jitter: lots}\n",
			[]string{"poll.interval: duplicate key (line 10)", `poll.jitter: expected a number, got "lots" (line 10)`}},
		{"key that is not a string", head + hook + "poll:\n  [a]: 1\n",
			[]string{"poll: a key must be a string, got a list (line 11)"}},
		{"nested flow list where a mapping belongs", head + hook + "nats_server: [[1]]\n",
			[]string{"nats_server: expected a mapping, got a list (line 10)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "test.yaml")
			require.Error(t, err)
			lines := strings.Split(err.Error(), "\n")
			for _, w := range tt.want {
				assert.Contains(t, lines, w)
			}
		})
	}
}

// TestNullForwarderItemReportsOnlyWhatIsMissing: a null item in forwarders (a stray "-"
// or ~) is an entry with every key left out, so it gets the forwarder defaults and its
// only problems are the required keys, not a concurrency or retry of 0.
func TestNullForwarderItemReportsOnlyWhatIsMissing(t *testing.T) {
	for name, tt := range map[string]struct {
		list string
		line int
	}{
		"stray dash": {"forwarders:\n  -\n", 7},
		"tilde":      {"forwarders: [~]\n", 6},
		"null":       {"forwarders:\n  - null\n", 7},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(head+tt.list), "test.yaml")
			var verr *ValidationError
			require.ErrorAs(t, err, &verr)
			var paths []string
			for _, p := range verr.Problems {
				paths = append(paths, p.Path)
			}
			assert.ElementsMatch(t, []string{"forwarders[0].name", "forwarders[0].type"}, paths, err.Error())
			for _, p := range verr.Problems {
				assert.Equal(t, tt.line, p.Line, p.String())
			}
		})
	}
}
