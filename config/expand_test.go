package config

import (
	"maps"
	"slices"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestExpandEnv(t *testing.T) {
	env := map[string]string{"A": "alpha", "B": "beta", "EMPTY": "", "PW": "pa$word"}
	lookup := func(k string) string { return env[k] }

	tests := []struct {
		name, in, want string
	}{
		{"plain", "key: value", "key: value"},
		{"braced", "k: ${A}", "k: alpha"},
		{"two in a row", "${A}${B}", "alphabeta"},
		{"unset is empty", "k: ${UNSET}", "k: "},
		{"default when unset", "k: ${UNSET:-dflt}", "k: dflt"},
		{"default when empty", "k: ${EMPTY:-dflt}", "k: dflt"},
		{"default ignored when set", "k: ${A:-dflt}", "k: alpha"},
		{"empty default", "k: ${UNSET:-}", "k: "},
		{"default with symbols", "u: ${UNSET:-nats://127.0.0.1:4222}", "u: nats://127.0.0.1:4222"},
		{"double dollar", "price: $$5", "price: $5"},
		{"double dollar before brace", "t: $${A}", "t: ${A}"},
		{"bare word kept", "password: pa$word", "password: pa$word"},
		{"bare braceless var kept", "x: $A", "x: $A"},
		{"trailing dollar", "x: abc$", "x: abc$"},
		{"value with dollar not re-expanded", "p: ${PW}", "p: pa$word"},
		{"multi line", "a: ${A}\nb: ${B}\n", "a: alpha\nb: beta\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, values, probs := expandEnv([]byte(tt.in), lookup)
			require.Empty(t, probs)
			assert.Equal(t, tt.want, string(got))
			for _, v := range values {
				assert.Contains(t, slices.Collect(maps.Values(env)), v, "only values from the environment are returned")
			}
		})
	}
}

func TestExpandEnvMalformed(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		msg      string
	}{
		{"unterminated", "a: 1\nb: ${A", 2, "unterminated ${"},
		{"brace on next line", "a: ${A\n}", 1, "unterminated ${"},
		{"empty name", "a: 1\nb: 2\nc: ${}", 3, "malformed ${...} reference"},
		{"leading digit", "a: ${1A}", 1, "malformed ${...} reference"},
		{"space in name", "a: ${A B}", 1, "malformed ${...} reference"},
		{"dash default", "a: ${A-x}", 1, "malformed ${...} reference"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, probs := expandEnv([]byte(tt.in), func(string) string { return "" })
			require.Len(t, probs, 1)
			assert.Contains(t, probs[0].Msg, tt.msg)
			assert.Equal(t, tt.line, probs[0].Line)
		})
	}
}

func TestParseReportsExpansionProblems(t *testing.T) {
	_, err := Parse([]byte("neoagent:\n  api_key: ${NEOAGENT_API_KEY\n"), "x.yaml")
	var ve *ValidationError
	require.ErrorAs(t, err, &ve)
	assert.Equal(t, "x.yaml", ve.Source)
	assert.Equal(t, "unterminated ${ (write $$ for a literal $) (line 2)", err.Error())
}
