package jqprog

import (
	"context"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCompileErrorsSayWhere(t *testing.T) {
	cases := []struct{ src, want string }{
		{"{a: .b", "syntax error at line 1, column 7: unexpected EOF"},
		{".a |\n  )", `syntax error at line 2, column 3: unexpected token ")"`},
		{".a ^ 2", `syntax error at line 1, column 4: unexpected token "^"`},
		{`"abc\q"`, `syntax error at line 1, column 5: invalid escape sequence "\q" in string literal`},
		{"foo", "function not defined: foo/0"},
		{"$x", "variable not defined: $x"},
		{"  ", "empty program"},
	}
	for _, tc := range cases {
		_, err := Compile(tc.src)
		var ce *CompileError
		require.ErrorAs(t, err, &ce, tc.src)
		assert.Equal(t, tc.want, err.Error(), tc.src)
	}
}

// A program that would run forever is stopped at its time bound, and the reason says so.
func TestRunIsBoundedInTime(t *testing.T) {
	p, err := Compile(`reduce range(1e18) as $i (0; .)`)
	require.NoError(t, err)
	p = p.WithTimeout(20 * time.Millisecond).WithMaxSteps(math.MaxInt)
	_, err = p.Run(t.Context(), nil)
	assert.ErrorIs(t, err, ErrTimeout)

	// The caller's context ending is the caller's error, not the program's.
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err = p.Run(ctx, nil)
	assert.ErrorIs(t, err, context.Canceled)
}

// A run is bounded in steps too: a loop stops at its bound of steps however much time
// is left, so a program's verdict on a record does not depend on how busy the machine
// is; a program within its steps runs to its end; try cannot catch the stop.
func TestRunIsBoundedInSteps(t *testing.T) {
	in, err := Input([]byte(`{"data":{"email":"a@example.com"}}`))
	require.NoError(t, err)
	for _, src := range []string{`reduce range(1e18) as $i (0; .)`, `try (def f: f; f) catch true`, `[range(1e9)] | length`} {
		p, err := Compile(src)
		require.NoError(t, err)
		_, err = p.WithTimeout(time.Minute).WithMaxSteps(10_000).Run(t.Context(), in)
		assert.ErrorIs(t, err, ErrSteps, src)
	}

	p, err := Compile(`.data.email | endswith("@example.com")`)
	require.NoError(t, err)
	ok, err := p.WithTimeout(time.Minute).WithMaxSteps(100).Match(t.Context(), in)
	require.NoError(t, err)
	assert.True(t, ok)
	_, err = p.WithMaxSteps(3).Match(t.Context(), in)
	assert.ErrorIs(t, err, ErrSteps, "a bound below what the program needs stops it")
}

func TestMatch(t *testing.T) {
	in, err := Input([]byte(`{"data":{"email":"a@example.com","session_id":12345678901234567890}}`))
	require.NoError(t, err)
	for src, want := range map[string]any{
		`.data.email | endswith("@example.com")`:       true,
		`.data.email | endswith("@example.com") | not`: false,
		`.data.session_id == 12345678901234567890`:     true, // numbers keep their digits
		`.data.email`:                      ErrNotBoolean,
		`empty`:                            ErrNoOutput,
		`true, true`:                       ErrManyOutputs,
		`.data.email | ascii_downcase + 1`: ErrRuntime,
	} {
		p, err := Compile(src)
		require.NoError(t, err, src)
		got, err := p.Match(t.Context(), in)
		if e, ok := want.(error); ok {
			assert.ErrorIs(t, err, e, src)
			assert.False(t, got, src)
			continue
		}
		require.NoError(t, err, src)
		assert.Equal(t, want, got, src)
	}
}
