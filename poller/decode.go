package poller

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// apiResponse is the LeadList envelope. Data stays raw so each record decodes on its own
// and one bad record cannot sink the page.
type apiResponse struct {
	Data    []json.RawMessage
	Success *bool
	Code    json.RawMessage
	Message string
}

// apiRecord is one element of Data. Every field stays raw and is read on its own, so a
// field of the wrong JSON type names itself and, outside the identity fields, costs only
// that field. Unknown fields are ignored.
type apiRecord struct {
	Type        json.RawMessage
	Name        json.RawMessage
	Email       json.RawMessage
	PhoneNumber json.RawMessage
	CreateTime  json.RawMessage
	Content     json.RawMessage
	SessionID   json.RawMessage
	URI         json.RawMessage
	Count       json.RawMessage
}

// wholeRecord is the Field of a RecordError about the record as a whole (not an object).
const wholeRecord = "record"

// createTimeLayouts are the CreateTime forms accepted, tried in order. Parsing accepts a
// fractional second after the seconds whether or not the layout shows one; the forms
// without an offset are read as UTC.
var createTimeLayouts = []string{
	time.RFC3339,
	"2006-01-02T15:04:05Z0700",
	"2006-01-02 15:04:05Z07:00",
	"2006-01-02 15:04:05",
	"2006-01-02T15:04:05",
}

// decode turns a 2xx body into a Page, or an *APIError (Success: false, or a Code outside
// 2xx) or a *DecodeError. Only a body that holds a Data array (an empty one included)
// counts as a page: a poll that is not one must not spend the first start's baseline or
// move the last-success mark.
func (c *Client) decode(bot Chatbot, body []byte) (Page, error) {
	var resp apiResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			err = fmt.Errorf("%w (at byte %d of %d)", err, se.Offset, len(body))
		}
		return Page{}, c.decodeError(bot, body, err)
	}
	if refused(resp.Code) {
		resp.Success = new(false) // a Code outside 2xx is a refusal, whatever Success says
	}
	if resp.Success != nil && !*resp.Success {
		code, _ := parseInt(resp.Code, 32)
		return Page{}, &APIError{Serial: bot.Serial, Code: int(code), Message: c.apiMessage(resp.Message)}
	}
	switch _, codeErr := parseInt(resp.Code, 32); {
	case codeErr != nil:
		return Page{}, c.decodeError(bot, body, fmt.Errorf("field Code: %w", codeErr))
	case resp.Success == nil && resp.Data == nil:
		return Page{}, c.decodeError(bot, body, errors.New("neither Success nor Data present: not a LeadList response"))
	case resp.Data == nil:
		return Page{}, c.decodeError(bot, body, errors.New("field Data: missing or null, want an array (empty when there are no records)"))
	}
	page := Page{Leads: make([]event.Lead, 0, len(resp.Data))}
	for i, raw := range resp.Data {
		l, warns, err := decodeRecord(raw)
		if err != nil {
			page.Skipped = append(page.Skipped, recordError(i, raw, err))
			continue
		}
		for _, w := range warns {
			page.Warned = append(page.Warned, recordError(i, raw, w))
		}
		l.Chatbot, l.ChatbotName = bot.Serial, bot.Name
		page.Leads = append(page.Leads, l)
	}
	return page, nil
}

// fieldError is what is wrong with one field of a record. It never quotes the value.
type fieldError struct {
	field string
	err   error
}

func (e *fieldError) Error() string { return "field " + e.field + ": " + e.err.Error() }

func (e *fieldError) Unwrap() error { return e.err }

// recordError describes record i of Data, fingerprinted by its raw bytes and the field at
// fault, so that the loop can tell a record the API repeats from a new one.
func recordError(i int, raw json.RawMessage, err error) RecordError {
	field := wholeRecord
	if fe, ok := errors.AsType[*fieldError](err); ok {
		field = fe.field
	}
	h := sha256.New()
	h.Write([]byte(field))
	h.Write([]byte{0})
	h.Write(bytes.TrimSpace(raw))
	return RecordError{Index: i, Field: field, Err: err, sum: binary.BigEndian.Uint64(h.Sum(nil))}
}

// decodeRecord decodes one record. A record whose identity (Type, CreateTime, SessionID)
// cannot be read is an error; any other field that cannot be read is left at its zero
// value and reported in warns. Every record it accepts encodes as an event (its CreatedAt
// is within the years 1 to 9999 in UTC), so the store can always take it. Errors name
// the field at fault and never quote the record's data.
func decodeRecord(raw json.RawMessage) (l event.Lead, warns []error, err error) {
	if t := bytes.TrimSpace(raw); string(t) == "null" {
		return event.Lead{}, nil, errors.New("record is null, want an object")
	}
	var r apiRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return event.Lead{}, nil, fmt.Errorf("record is a JSON %s, want an object", te.Value)
		}
		return event.Lead{}, nil, errors.New("malformed record JSON")
	}
	typ, err := stringField(r.Type)
	if err == nil {
		l.Kind, err = parseKind(typ)
	}
	if err != nil {
		return event.Lead{}, nil, &fieldError{"Type", err}
	}
	created, err := stringField(r.CreateTime)
	if err == nil {
		l.CreatedAt, err = parseCreateTime(created)
	}
	if err != nil {
		return event.Lead{}, nil, &fieldError{"CreateTime", err}
	}
	if l.SessionID, err = parseInt(r.SessionID, 64); err != nil {
		return event.Lead{}, nil, &fieldError{"SessionID", err}
	}

	count, err := parseInt(r.Count, strconv.IntSize)
	if err != nil {
		warns = append(warns, &fieldError{"Count", fmt.Errorf("%w; taken as 0", err)})
	}
	l.Count = int(count)
	for _, f := range []struct {
		name string
		raw  json.RawMessage
		dst  *string
	}{
		{"Name", r.Name, &l.Name}, {"Email", r.Email, &l.Email}, {"PhoneNumber", r.PhoneNumber, &l.Phone},
		{"Content", r.Content, &l.Content}, {"URI", r.URI, &l.URI},
	} {
		if *f.dst, err = stringField(f.raw); err != nil {
			warns = append(warns, &fieldError{f.name, fmt.Errorf("%w; left empty", err)})
		}
	}
	return l, warns, nil
}

// parseKind is event.ParseKind without quoting the value, which may be anything.
func parseKind(s string) (event.Kind, error) {
	if strings.TrimSpace(s) == "" {
		return "", errors.New("missing")
	}
	k, err := event.ParseKind(s)
	if err != nil {
		return "", errors.New("unknown record Type (want Lead or Appointment)")
	}
	return k, nil
}

// stringField reads a text field: a JSON string, or a number kept as written (a phone
// number sent as one, say). Missing and null read as "".
func stringField(raw json.RawMessage) (string, error) {
	s := bytes.TrimSpace(raw)
	if len(s) == 0 || string(s) == "null" {
		return "", nil
	}
	switch c := s[0]; {
	case c == '"':
		var str string
		if err := json.Unmarshal(s, &str); err != nil {
			return "", errors.New("malformed string")
		}
		return str, nil
	case c == '-' || c >= '0' && c <= '9':
		return string(s), nil
	}
	return "", fmt.Errorf("got a JSON %s, want a string", jsonKind(s[0]))
}

// jsonKind names the kind of JSON value that starts with c.
func jsonKind(c byte) string {
	switch c {
	case '{':
		return "object"
	case '[':
		return "array"
	case 't', 'f':
		return "boolean"
	case '"':
		return "string"
	}
	return "number"
}

// parseCreateTime reads CreateTime in any of createTimeLayouts and returns it in UTC. The
// UTC time must fall in the years 1 to 9999, the range an event's JSON can carry.
func parseCreateTime(s string) (time.Time, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	for _, layout := range createTimeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			if t.IsZero() {
				return time.Time{}, errors.New("zero time")
			}
			t = t.UTC()
			if y := t.Year(); y < 1 || y > 9999 {
				return time.Time{}, errors.New("outside the years 1 to 9999 in UTC")
			}
			return t, nil
		}
	}
	return time.Time{}, errors.New("not a recognised timestamp (want RFC 3339)")
}

var (
	errNotInteger = errors.New("want an integer or a numeric string")
	errFraction   = errors.New("not a whole number")
	errRange      = errors.New("out of range")
)

// parseInt reads a JSON number or numeric string holding an integer that fits in bits,
// exactly: 9007199254740993, "9007199254740993" and 9007199254740993.0 are the same
// number, and a fraction (2.5) or a value that does not fit is an error. Missing, null
// and "" read as 0.
func parseInt(raw json.RawMessage, bits int) (int64, error) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, nil
	}
	if s[0] == '"' {
		var str string
		if err := json.Unmarshal(raw, &str); err != nil {
			return 0, errNotInteger
		}
		if s = strings.TrimSpace(str); s == "" {
			return 0, nil
		}
	}
	return exactInt(s, bits)
}

// maxExponent bounds the exponent exactInt reads; any nonzero integer with a larger one
// is out of range, any with a smaller negative one is a fraction.
const maxExponent = 400

// exactInt reads s, a decimal number (sign, digits, fraction, exponent), as an integer
// without going through float64, which would round it.
func exactInt(s string, bits int) (int64, error) {
	sign := ""
	if s[0] == '-' || s[0] == '+' {
		sign, s = s[:1], s[1:]
	}
	intPart, s := leadingDigits(s)
	var frac string
	if rest, ok := strings.CutPrefix(s, "."); ok {
		frac, s = leadingDigits(rest)
	}
	if intPart == "" && frac == "" {
		return 0, errNotInteger
	}
	exp := 0
	if len(s) > 0 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		expSign := 1
		if len(s) > 0 && (s[0] == '-' || s[0] == '+') {
			if s[0] == '-' {
				expSign = -1
			}
			s = s[1:]
		}
		var e string
		if e, s = leadingDigits(s); e == "" {
			return 0, errNotInteger
		}
		e = strings.TrimLeft(e, "0")
		if len(e) > 3 {
			exp = expSign * (maxExponent + 1)
		} else {
			n, _ := strconv.Atoi("0" + e)
			exp = expSign * min(n, maxExponent+1)
		}
	}
	if s != "" {
		return 0, errNotInteger
	}
	// digits × 10^(point-len(digits)), with no leading zero in digits.
	digits, point := intPart+frac, len(intPart)+exp
	for len(digits) > 0 && digits[0] == '0' {
		digits, point = digits[1:], point-1
	}
	if digits == "" {
		return 0, nil
	}
	switch {
	case point <= 0 || strings.Trim(digits[min(point, len(digits)):], "0") != "":
		return 0, errFraction
	case point > 19:
		return 0, errRange
	case point > len(digits):
		digits += strings.Repeat("0", point-len(digits))
	}
	n, err := strconv.ParseInt(sign+digits[:point], 10, bits)
	if err != nil {
		return 0, errRange
	}
	return n, nil
}

// leadingDigits splits s after its leading ASCII digits.
func leadingDigits(s string) (digits, rest string) {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i], s[i:]
}

// refused tells whether the envelope's Code is set to an integer outside 2xx. A missing,
// null or empty Code says nothing; one that is not an integer is left to decode.
func refused(raw json.RawMessage) bool {
	code, err := parseInt(raw, 32)
	s := strings.TrimSpace(string(raw))
	set := s != "" && s != "null" && strings.Trim(s, `" `) != ""
	return err == nil && set && (code < 200 || code > 299)
}
