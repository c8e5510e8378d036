package httpx

import (
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Version is leadbridge's version as UserAgent reports it. main sets it from the version
// stamped at build time.
var Version = "dev"

// UserAgent is the User-Agent of every request leadbridge makes: "leadbridge/<version>".
func UserAgent() string { return "leadbridge/" + Version }

// Code lengths SafeCode accepts, and the shortest part of a private value it still
// recognises inside a code.
const (
	minCode = 3
	maxCode = 64
)

// SafeCode reports whether s may be quoted in an error as a peer's error code: a strict
// token of 3 to 64 letters, digits, "_", "-" and "." holding at least one letter and
// fewer than 7 digits (so no number, email, phone number or sentence), that neither
// contains nor is part of any of private (secrets, header values, a lead's personal
// fields), compared without regard to case.
func SafeCode(s string, private []string) bool {
	if len(s) < minCode || len(s) > maxCode {
		return false
	}
	letters, digits := 0, 0
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
			letters++
		case r >= '0' && r <= '9':
			digits++
		case r == '_', r == '-', r == '.':
		default:
			return false
		}
	}
	if letters == 0 || digits >= 7 {
		return false
	}
	low := strings.ToLower(s)
	for _, p := range private {
		if p == "" {
			continue
		}
		p = strings.ToLower(p)
		if strings.Contains(low, p) || strings.Contains(p, low) {
			return false
		}
	}
	return true
}

// redacted replaces what Redactor hides.
const redacted = "[redacted]"

// minFragment is the shortest word Redactor hides for being part of a secret (a secret
// cut short by a length limit, say).
const minFragment = 8

// Redactor hides secrets in text meant for errors and logs. A word (a run of characters
// other than white space) that contains a secret, as written or as escaped by %q or in a
// URL, is replaced whole by [redacted], so that a longer secret built around a shorter
// one does not show either; so is a word of 8 characters or more that is part of a
// secret. The zero value and a nil *Redactor hide nothing.
type Redactor struct {
	forms   []string // each secret and its escaped forms, longest first
	secrets []string
}

// NewRedactor returns a Redactor for secrets; empty strings are ignored.
func NewRedactor(secrets ...string) *Redactor {
	r := &Redactor{}
	for _, s := range secrets {
		if s == "" {
			continue
		}
		r.secrets = append(r.secrets, s)
		q := strconv.Quote(s)
		r.forms = append(r.forms, s, q[1:len(q)-1], url.QueryEscape(s), url.PathEscape(s))
	}
	slices.SortFunc(r.forms, func(a, b string) int { return len(b) - len(a) })
	r.forms = slices.Compact(r.forms)
	return r
}

// Redact returns s with every word holding a secret replaced by [redacted].
func (r *Redactor) Redact(s string) string {
	if r == nil || len(r.forms) == 0 {
		return s
	}
	hide := make([]bool, len(s))
	for _, f := range r.forms {
		for from := 0; ; {
			i := strings.Index(s[from:], f)
			if i < 0 {
				break
			}
			for j := from + i; j < from+i+len(f); j++ {
				hide[j] = true
			}
			from += i + 1
		}
	}
	// Widen each hidden byte to its whole word, and hide words that are part of a secret.
	for start := 0; start < len(s); {
		if isSpace(s, start) {
			start++
			continue
		}
		end := start
		for end < len(s) && !isSpace(s, end) {
			end++
		}
		if slices.Contains(hide[start:end], true) || r.fragment(s[start:end]) {
			for j := start; j < end; j++ {
				hide[j] = true
			}
		}
		start = end
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if !hide[i] {
			b.WriteByte(s[i])
			continue
		}
		b.WriteString(redacted)
		for i+1 < len(s) && hide[i+1] {
			i++
		}
	}
	return b.String()
}

// fragment reports whether word, without surrounding punctuation, is a long enough part
// of a secret.
func (r *Redactor) fragment(word string) bool {
	core := strings.TrimFunc(word, func(c rune) bool { return unicode.IsPunct(c) || unicode.IsSymbol(c) })
	if len(core) < minFragment {
		return false
	}
	for _, s := range r.secrets {
		if strings.Contains(s, core) {
			return true
		}
	}
	return false
}

// isSpace reports whether the byte at i of s is ASCII white space. Multi-byte characters
// count as part of words, which errs on the side of hiding more.
func isSpace(s string, i int) bool {
	switch s[i] {
	case ' ', '\t', '\n', '\r', '\v', '\f':
		return true
	}
	return false
}
