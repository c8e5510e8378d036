package config

import (
	"bytes"
	"strings"
)

// expandEnv replaces ${VAR} and ${VAR:-default} with values from lookup, and $$ with $.
// A $ followed by anything else is kept. It also returns the values taken from the
// environment, so that messages can hide them. Malformed references are reported with
// their line but without their text, which may hold a secret.
func expandEnv(data []byte, lookup func(string) string) ([]byte, []string, []Problem) {
	var (
		out    bytes.Buffer
		values []string
		probs  []Problem
		line   = 1
	)
	out.Grow(len(data))
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\n' {
			line++
		}
		if c != '$' || i+1 >= len(data) {
			out.WriteByte(c)
			continue
		}
		switch data[i+1] {
		case '$':
			out.WriteByte('$')
			i++
			continue
		case '{':
		default:
			out.WriteByte(c)
			continue
		}
		end := bytes.IndexByte(data[i+2:], '}')
		if nl := bytes.IndexByte(data[i+2:], '\n'); end < 0 || (nl >= 0 && nl < end) {
			probs = append(probs, Problem{Msg: "unterminated ${ (write $$ for a literal $)", Line: line})
			out.WriteString("${")
			i++
			continue
		}
		ref := string(data[i+2 : i+2+end])
		name, def, hasDef := strings.Cut(ref, ":-")
		i += 2 + end
		if !validVarName(name) {
			probs = append(probs, Problem{Msg: "malformed ${...} reference: want ${NAME} or ${NAME:-default}", Line: line})
			continue
		}
		switch val := lookup(name); {
		case val != "":
			values = append(values, val)
			out.WriteString(val)
		case hasDef:
			out.WriteString(def)
		}
	}
	return out.Bytes(), values, probs
}

// validVarName reports whether s is a shell-style variable name.
func validVarName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_', r >= 'A' && r <= 'Z', r >= 'a' && r <= 'z':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
