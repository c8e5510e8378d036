// Package jqprog compiles and runs the jq programs of a config (a webhook's transform, a
// forwarder's filter) with gojq, over the CloudEvent JSON of one event.
//
// A program is compiled once, at config load, and run many times, concurrently. Each run
// is bounded in steps (jq instructions), which make its verdict on a record the same
// however busy the machine is, and in time, and must yield exactly one value. Both bounds
// are checked between gojq's steps: one builtin call that makes a huge value (a string
// repeated 10⁸ times, gsub over such a string) is not interrupted, and runs past the
// bounds for as long as making that value takes (gojq caps a repeated string at 2 GiB). The errors of a run are this
// package's own sentences, never gojq's text: gojq quotes the values it failed on, and
// those are a person's name, email or message.
//
// Programs see no environment: $ENV and env are empty, so a program cannot copy a
// secret of the process into a body; input, inputs, debug and stderr do not exist.
package jqprog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"github.com/itchyny/gojq"
)

// DefaultTimeout bounds one run of a program; a program that loops longer is stopped.
const DefaultTimeout = time.Second

// DefaultMaxSteps bounds the jq instructions one run executes: a few tenths of a second
// of a busy loop. A mapping of the recipes takes under a thousand.
const DefaultMaxSteps = 10_000_000

// Errors of a run. Each is a whole reason, safe to log and to keep in a dead letter: it
// holds no value of the input. A run also fails with the context's error when the
// caller's context ends first, which is not the program's fault.
var (
	// ErrRuntime is a jq error at run time (a type error, error(...), halt_error, ...).
	ErrRuntime = errors.New("the jq program failed at run time (the reason is not shown, as jq quotes the record's values)")
	// ErrNoOutput is a run that yielded no value (empty, or select(false)).
	ErrNoOutput = errors.New("the jq program produced no output (one value is required)")
	// ErrManyOutputs is a run that yielded more than one value.
	ErrManyOutputs = errors.New("the jq program produced more than one output (one value is required)")
	// ErrTimeout is a run stopped after its time bound.
	ErrTimeout = errors.New("the jq program ran longer than its time bound and was stopped")
	// ErrSteps is a run stopped after its bound of steps.
	ErrSteps = errors.New("the jq program took more steps than its bound and was stopped")
	// ErrNotBoolean is a filter whose value is not true or false.
	ErrNotBoolean = errors.New("the jq filter produced a value that is not true or false")
)

// Program is a compiled jq program. It is safe for concurrent use.
type Program struct {
	code     *gojq.Code
	timeout  time.Duration
	maxSteps int
}

// CompileError is a program that does not compile, located in its source.
type CompileError struct {
	// Line and Column (from 1, in bytes) locate a syntax error; both are 0 for an error
	// gojq does not locate (an undefined function or variable).
	Line, Column int
	// Msg is gojq's description, which quotes only the program's own text.
	Msg string
}

// Error says what is wrong and where: "syntax error at line 1, column 7: ...".
func (e *CompileError) Error() string {
	if e.Line == 0 {
		return e.Msg
	}
	return fmt.Sprintf("syntax error at line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// Compile parses and compiles src. An empty program is an error; the error is a
// *CompileError.
func Compile(src string) (*Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, &CompileError{Msg: "empty program"}
	}
	q, err := gojq.Parse(src)
	if err != nil {
		ce := &CompileError{Msg: err.Error()}
		var pe *gojq.ParseError
		if errors.As(err, &pe) {
			ce.Line, ce.Column = position(src, pe.Offset-len(pe.Token))
		}
		return nil, ce
	}
	code, err := gojq.Compile(q, gojq.WithEnvironLoader(func() []string { return nil }))
	if err != nil {
		return nil, &CompileError{Msg: err.Error()}
	}
	return &Program{code: code, timeout: DefaultTimeout, maxSteps: DefaultMaxSteps}, nil
}

// position turns a byte offset of src into a line and column, both from 1.
func position(src string, offset int) (line, col int) {
	offset = min(max(offset, 0), len(src))
	before := src[:offset]
	line = strings.Count(before, "\n") + 1
	return line, offset - strings.LastIndexByte(before, '\n')
}

// Input turns an event's JSON (what json.Marshal makes of an event.Event, the body a
// webhook sends in cloudevent mode) into the value programs run over. Numbers keep
// their exact digits.
func Input(eventJSON []byte) (any, error) {
	dec := json.NewDecoder(strings.NewReader(string(eventJSON)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode the event for jq: %w", err)
	}
	return v, nil
}

// WithTimeout is the program with another time bound per run.
func (p *Program) WithTimeout(d time.Duration) *Program {
	c := *p
	c.timeout = d
	return &c
}

// WithMaxSteps is the program with another bound of steps per run.
func (p *Program) WithMaxSteps(n int) *Program {
	c := *p
	c.maxSteps = n
	return &c
}

// Run runs the program over input and returns its one value. It fails with one of the
// Err* reasons of this package, or with ctx's error when ctx ended first.
func (p *Program) Run(ctx context.Context, input any) (any, error) {
	runCtx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	iter := p.code.RunWithContext(&stepBound{Context: runCtx, left: p.maxSteps}, input)
	var (
		out any
		n   int
	)
	for {
		v, ok := iter.Next()
		if !ok {
			break
		}
		if err, isErr := v.(error); isErr {
			return nil, p.runError(ctx, runCtx, err)
		}
		if n++; n > 1 {
			return nil, ErrManyOutputs
		}
		out = v
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if n == 0 {
		return nil, ErrNoOutput
	}
	return out, nil
}

// runError maps an error a run yielded to this package's reasons, dropping gojq's text.
func (p *Program) runError(ctx, runCtx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, ErrSteps):
		return ErrSteps
	case runCtx.Err() != nil || errors.Is(err, context.DeadlineExceeded):
		return ErrTimeout
	}
	return ErrRuntime
}

// stepBound is the context of one run, which counts its steps: gojq polls Done before
// each instruction it executes, and a run that has used up its steps finds Done closed
// and Err saying ErrSteps (which gojq yields, ending the run; try cannot catch it). A
// run is one goroutine's, so the count needs no lock.
type stepBound struct {
	context.Context
	left int
}

// closed is a channel that is closed: the Done of a run out of steps.
var closed = func() chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

func (s *stepBound) Done() <-chan struct{} {
	if s.left <= 0 {
		return closed
	}
	s.left--
	return s.Context.Done()
}

func (s *stepBound) Err() error {
	if s.left <= 0 {
		return ErrSteps
	}
	return s.Context.Err()
}

// Match runs the program as a filter: its one value must be true or false.
func (p *Program) Match(ctx context.Context, input any) (bool, error) {
	v, err := p.Run(ctx, input)
	if err != nil {
		return false, err
	}
	b, ok := v.(bool)
	if !ok {
		return false, ErrNotBoolean
	}
	return b, nil
}

// JSON encodes a program's value as JSON the way jq prints it (NaN as null).
func JSON(v any) []byte {
	b, _ := gojq.Marshal(v) // never fails: it takes every type a program yields
	return b
}

// Form reasons: what is wrong with a value that must become a form.
var (
	// ErrFormNotObject is a value for a form that is not an object.
	ErrFormNotObject = errors.New("the jq program's output is not an object (a form needs an object of strings, numbers and booleans)")
	// ErrFormNotScalar is an object for a form with an array or object as a field value.
	ErrFormNotScalar = errors.New("a field of the jq program's output holds an array or object (a form takes only strings, numbers, booleans and null)")
)

// Form encodes an object of scalars as application/x-www-form-urlencoded, fields in key
// order: a string as it is, a number as jq prints it, a boolean as true or false; a
// null, or NaN (which jq prints as null), leaves the field out. Anything else fails with
// ErrFormNotObject or ErrFormNotScalar.
func Form(v any) ([]byte, error) {
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, ErrFormNotObject
	}
	form := url.Values{}
	for k, val := range obj {
		switch val := val.(type) {
		case nil:
		case string:
			form.Set(k, val)
		case bool, int, float64, *big.Int, json.Number:
			if s := string(JSON(val)); s != "null" {
				form.Set(k, s)
			}
		default:
			return nil, ErrFormNotScalar
		}
	}
	return []byte(form.Encode()), nil
}
