package poller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/httpx"
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

// stream reads a 2xx body in two passes. The first reads it from body to its end (the
// caller keeps a copy of every byte read, readable through spool) and checks that it is
// one well-formed JSON object whose envelope (Success, Code, Message) says success and
// which holds a Data array; it keeps no record. Only then does the second pass read
// Data's records from spool and hand them to take, DefaultChunkRecords at a time.
//
// Validating first is what lets a bad envelope fail the page wherever it stands: the
// API puts Success and Code after Data, so records read before them cannot be known to
// belong to a successful page. A body whose fields repeat is read as json.Unmarshal
// would: the last Success, Code, Message and Data count. The rules are those of a
// decoder that unmarshals the whole body: a syntax error anywhere fails it, and only a
// body with a Data array (an empty one included) counts as a page, so that a poll that
// is not one never spends the first start's baseline or moves the last-success mark.
func (c *Client) stream(ctx context.Context, bot event.Chatbot, body *bodyReader, spool io.ReaderAt, known func(Sum) bool, take func(Page) error) error {
	var from io.Reader = body
	if known != nil && body.sum != nil {
		// The whole body first, to tell by its sum whether it is an answer taken before:
		// one is not even checked again. A new one is checked from the spool.
		_, _ = io.Copy(io.Discard, body)
		if body.werr == nil && body.err == nil && !body.tooLarge() {
			var sum Sum
			body.sum.Sum(sum[:0])
			if known(sum) {
				return nil
			}
		}
		from = io.NewSectionReader(spool, 0, body.n)
	}
	sc, err := scanBody(from)
	if err != nil {
		_, _ = io.Copy(io.Discard, body) // the rest, for its size and the limit
	}
	switch {
	case body.werr != nil:
		return fmt.Errorf("leadlist chatbot %q: spool the response: %w", bot.Serial, body.werr)
	case body.err != nil:
		return &TransportError{Serial: bot.Serial, Err: httpx.TransportError(c.BaseURL, body.err)}
	case body.tooLarge():
		return c.decodeError(bot, body, fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, body.limit))
	case err != nil:
		return c.decodeError(bot, body, err)
	}
	resp := sc.resp
	if refused(resp.Code) {
		resp.Success = new(false) // a Code outside 2xx is a refusal, whatever Success says
	}
	if resp.Success != nil && !*resp.Success {
		code, _ := parseInt(resp.Code, 32)
		return &APIError{Serial: bot.Serial, Code: int(code), Message: c.apiMessage(resp.Message)}
	}
	switch _, codeErr := parseInt(resp.Code, 32); {
	case codeErr != nil:
		return c.decodeError(bot, body, fmt.Errorf("field Code: %w", codeErr))
	case resp.Success == nil && resp.Data == nil:
		return c.decodeError(bot, body, errors.New("neither Success nor Data present: not a LeadList response"))
	case resp.Data == nil:
		return c.decodeError(bot, body, errors.New("field Data: missing or null, want an array (empty when there are no records)"))
	}
	at, err := sc.dataOffset()
	if err != nil {
		return c.decodeError(bot, body, err)
	}
	return c.records(ctx, bot, io.NewSectionReader(spool, at, body.n-at), take)
}

// records reads the Data array that r starts with, record by record, and hands them to
// take in chunks of DefaultChunkRecords records (Leads, Skipped and Warned alike, with
// their indices in Data), stopping with a *TransportError once ctx is done. The array
// was checked by scanBody, so it is only split (arrayReader), and an array that ends
// short here is a failure to read the spool.
func (c *Client) records(ctx context.Context, bot event.Chatbot, r io.Reader, take func(Page) error) error {
	arr := arrayReader{r: r}
	var (
		chunk Page
		n     int // records in chunk
	)
	for i := 0; ; i++ {
		raw, err := arr.next()
		if err != nil {
			return fmt.Errorf("leadlist chatbot %q: reading the spooled response: %w", bot.Serial, err)
		}
		if raw == nil {
			break
		}
		n++
		l, warns, err := decodeRecord(raw)
		if err != nil {
			chunk.Skipped = append(chunk.Skipped, recordError(i, raw, err))
		} else {
			for _, w := range warns {
				chunk.Warned = append(chunk.Warned, recordError(i, raw, w))
			}
			l.Account, l.Chatbot, l.ChatbotName = bot.Account, bot.Serial, bot.Name
			chunk.Leads = append(chunk.Leads, l)
		}
		if n == DefaultChunkRecords && arr.more() {
			if err := ctx.Err(); err != nil {
				return &TransportError{Serial: bot.Serial, Err: httpx.TransportError(c.BaseURL, err)}
			}
			if err := take(chunk); err != nil {
				return err
			}
			chunk, n = Page{Leads: make([]event.Lead, 0, DefaultChunkRecords)}, 0
		}
	}
	if err := ctx.Err(); err != nil {
		return &TransportError{Serial: bot.Serial, Err: httpx.TransportError(c.BaseURL, err)}
	}
	chunk.last = true // even when empty: it completes the page
	return take(chunk)
}

// arrayReader reads the elements of a JSON array, one well-formed already (scanBody
// checked it), from r, which starts with the array. It only finds where each element
// ends, without a second syntax check or a copy, and holds no more than the largest
// element and one read.
type arrayReader struct {
	r       io.Reader
	buf     []byte
	pos     int  // the next byte of buf to read
	started bool // the opening bracket is read
	eof     bool // r is exhausted
}

// arrayReadSize is how much arrayReader reads at a time.
const arrayReadSize = 32 << 10

// next returns the next element, valid until the following call, or nil after the last.
func (a *arrayReader) next() ([]byte, error) {
	for {
		i := skipSpace(a.buf, a.pos)
		if i == len(a.buf) {
			if err := a.fill(); err != nil {
				return nil, err
			}
			continue
		}
		switch c := a.buf[i]; {
		case !a.started:
			if c != '[' {
				return nil, fmt.Errorf("at byte %d: want an array", i)
			}
			a.started, a.pos = true, i+1
			continue
		case c == ']':
			a.pos = i
			return nil, nil
		case c == ',':
			a.pos = i + 1
			continue
		}
		// A value that reaches the end of buf may go on past it (a number surely would).
		if end := valueEnd(a.buf, i); end < len(a.buf) || a.eof {
			if end == len(a.buf) {
				return nil, io.ErrUnexpectedEOF
			}
			a.pos = end
			return a.buf[i:end], nil
		}
		a.pos = i
		if err := a.fill(); err != nil {
			return nil, err
		}
	}
}

// more tells whether an element follows.
func (a *arrayReader) more() bool {
	for {
		i := skipSpace(a.buf, a.pos)
		if i < len(a.buf) {
			return a.buf[i] != ']'
		}
		if a.fill() != nil {
			return false
		}
	}
}

// fill drops the bytes of buf already read and reads more after the rest, growing buf
// when the rest fills it. It fails with io.ErrUnexpectedEOF at the end of r.
func (a *arrayReader) fill() error {
	if a.eof {
		return io.ErrUnexpectedEOF
	}
	rest := copy(a.buf, a.buf[a.pos:])
	a.buf, a.pos = a.buf[:rest], 0
	if cap(a.buf)-rest < arrayReadSize/2 {
		a.buf = slices.Grow(a.buf, max(arrayReadSize, rest))
	}
	// Filling buf whole, not taking what one read gives, keeps the rescans of an element
	// that goes on past buf to the doublings of buf.
	n, err := io.ReadFull(a.r, a.buf[rest:cap(a.buf)])
	a.buf = a.buf[:rest+n]
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		a.eof = true
	case err != nil:
		return err
	}
	return nil
}

// scan is what the first pass learnt of a body: its envelope, decoded as json.Unmarshal
// decodes the whole body except that each Data array stands in as [k], k its index in
// arrays; and the offset in the body of each Data array.
type scan struct {
	resp   apiResponse
	arrays []int64
}

// dataOffset is the offset of the Data array that counts (the last one).
func (s scan) dataOffset() (int64, error) {
	if len(s.resp.Data) == 1 {
		if k, err := strconv.Atoi(string(s.resp.Data[0])); err == nil && k >= 0 && k < len(s.arrays) {
			return s.arrays[k], nil
		}
	}
	return 0, errors.New("field Data: could not locate the array") // cannot happen: the stand-in is ours
}

// envelopeFields are the fields of apiResponse; other fields of the body are skipped.
var envelopeFields = []string{"Data", "Success", "Code", "Message"}

// scanBody reads r, a whole body, checking its JSON syntax to the end and keeping only
// the envelope fields; Data's records are checked and dropped one at a time, so memory
// stays bounded by the largest record, not the body. Errors name the failure but never
// quote the body.
func scanBody(r io.Reader) (scan, error) {
	var sc scan
	dec := json.NewDecoder(r)
	dec.UseNumber() // a number token is kept as written: 1e700 is valid JSON, not a float64
	tok, err := dec.Token()
	if err != nil {
		return sc, syntaxError(err, dec)
	}
	if tok != json.Delim('{') {
		// Not an object: a syntax error if the value or what follows is malformed, else
		// the type error (or, for null, the empty envelope) json.Unmarshal gives.
		standIn, err := skipRest(dec, tok)
		if err != nil {
			return sc, err
		}
		if err := trailing(dec); err != nil {
			return sc, err
		}
		return sc, json.Unmarshal([]byte(standIn), &sc.resp)
	}
	env := []byte{'{'}
	var raw json.RawMessage
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return sc, syntaxError(err, dec)
		}
		key, _ := tok.(string) // the decoder only returns a string as a key
		field := ""
		for _, f := range envelopeFields {
			if strings.EqualFold(key, f) {
				field = f
			}
		}
		var value []byte
		switch field {
		case "":
			if err := skipValue(dec); err != nil {
				return sc, err
			}
			continue
		case "Data":
			if value, err = scanData(dec, &sc); err != nil {
				return sc, err
			}
		default:
			raw = raw[:0]
			if err := dec.Decode(&raw); err != nil {
				return sc, syntaxError(err, dec)
			}
			value = raw
		}
		if len(env) > 1 {
			env = append(env, ',')
		}
		k, _ := json.Marshal(key)
		env = append(append(append(env, k...), ':'), value...)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return sc, syntaxError(err, dec)
	}
	if err := trailing(dec); err != nil {
		return sc, err
	}
	env = append(env, '}')
	return sc, json.Unmarshal(env, &sc.resp)
}

// scanData reads the value of a Data field and returns its stand-in in the envelope:
// [k] for an array, noting its offset as arrays[k] and checking each record's syntax;
// null; or a value of the same JSON type as the one read, for its type error.
func scanData(dec *json.Decoder, sc *scan) ([]byte, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, syntaxError(err, dec)
	}
	if tok != json.Delim('[') {
		return skipRest(dec, tok)
	}
	sc.arrays = append(sc.arrays, dec.InputOffset()-1)
	var raw json.RawMessage
	for dec.More() {
		raw = raw[:0]
		if err := dec.Decode(&raw); err != nil {
			return nil, syntaxError(err, dec)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing bracket
		return nil, syntaxError(err, dec)
	}
	return []byte("[" + strconv.Itoa(len(sc.arrays)-1) + "]"), nil
}

// skipRest reads the rest of a value whose first token is tok and returns a small value
// of its JSON type: {} for an object, [] for an array, null, "", 0 or true.
func skipRest(dec *json.Decoder, tok json.Token) ([]byte, error) {
	switch tok := tok.(type) {
	case json.Delim:
		if err := skipNested(dec, 1); err != nil {
			return nil, err
		}
		if tok == '{' {
			return []byte("{}"), nil
		}
		return []byte("[]"), nil
	case nil:
		return []byte("null"), nil
	case string:
		return []byte(`""`), nil
	case bool:
		return []byte("true"), nil
	}
	return []byte("0"), nil
}

// skipValue reads one value, token by token, keeping nothing.
func skipValue(dec *json.Decoder) error {
	return skipNested(dec, 0)
}

// skipNested reads tokens until depth open objects and arrays are closed (or, from
// depth 0, one whole value).
func skipNested(dec *json.Decoder, depth int) error {
	for {
		tok, err := dec.Token()
		if err != nil {
			return syntaxError(err, dec)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// trailing checks that nothing but white space follows the top-level value.
func trailing(dec *json.Decoder) error {
	switch _, err := dec.Token(); {
	case errors.Is(err, io.EOF):
		return nil
	case err != nil:
		return syntaxError(err, dec)
	}
	return fmt.Errorf("invalid data after the top-level value (at byte %d)", dec.InputOffset())
}

// syntaxError words a decoder's error as json.Unmarshal would, with where it happened.
func syntaxError(err error, dec *json.Decoder) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("unexpected end of JSON input (at byte %d)", dec.InputOffset())
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("%w (at byte %d)", se, se.Offset)
	}
	return err
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

// decodeRecord decodes one record, raw, a well-formed JSON value. A record whose identity (Type, CreateTime, SessionID)
// cannot be read is an error; any other field that cannot be read is left at its zero
// value and reported in warns. Every record it accepts encodes as an event (its CreatedAt
// is within the years 1 to 9999 in UTC), so the store can always take it. Errors name
// the field at fault and never quote the record's data.
func decodeRecord(raw json.RawMessage) (l event.Lead, warns []error, err error) {
	if t := bytes.TrimSpace(raw); string(t) == "null" {
		return event.Lead{}, nil, errors.New("record is null, want an object")
	}
	r, ok := splitRecord(raw)
	if !ok {
		var whole apiRecord
		if err := json.Unmarshal(raw, &whole); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				return event.Lead{}, nil, fmt.Errorf("record is a JSON %s, want an object", te.Value)
			}
			return event.Lead{}, nil, errors.New("malformed record JSON")
		}
		r = whole
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
	l.Name = textField("Name", r.Name, &warns)
	l.Email = textField("Email", r.Email, &warns)
	l.Phone = textField("PhoneNumber", r.PhoneNumber, &warns)
	l.Content = textField("Content", r.Content, &warns)
	l.URI = textField("URI", r.URI, &warns)
	return l, warns, nil
}

// textField reads the text field name, raw, as stringField does; one it cannot read is
// left empty, with a warning added to warns.
func textField(name string, raw json.RawMessage, warns *[]error) string {
	s, err := stringField(raw)
	if err != nil {
		*warns = append(*warns, &fieldError{name, fmt.Errorf("%w; left empty", err)})
	}
	return s
}

// The names of apiRecord's fields, for splitRecord.
var (
	fieldType        = []byte("Type")
	fieldName        = []byte("Name")
	fieldEmail       = []byte("Email")
	fieldPhoneNumber = []byte("PhoneNumber")
	fieldCreateTime  = []byte("CreateTime")
	fieldContent     = []byte("Content")
	fieldSessionID   = []byte("SessionID")
	fieldURI         = []byte("URI")
	fieldCount       = []byte("Count")
)

// splitRecord reads raw, one well-formed JSON value, as json.Unmarshal reads it into an
// apiRecord, without reflection or a second syntax check: each field's value is the
// slice of raw it spans (so r lives no longer than raw), a key matches a field as
// bytes.EqualFold does, and of a repeated field the last counts. It reports false for
// anything but an object, and for an object with an escaped key, which json.Unmarshal
// then reads. The records were checked whole by the decoder that read them, so this
// only finds where values end; it never judges their syntax.
func splitRecord(raw []byte) (r apiRecord, ok bool) {
	i := skipSpace(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return r, false
	}
	i = skipSpace(raw, i+1)
	for i < len(raw) && raw[i] == '"' {
		end := stringEnd(raw, i)
		key := raw[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			return apiRecord{}, false
		}
		i = skipSpace(raw, end)
		i = skipSpace(raw, i+1) // the colon
		vend := valueEnd(raw, i)
		v := json.RawMessage(raw[i:vend])
		switch {
		case bytes.EqualFold(key, fieldType):
			r.Type = v
		case bytes.EqualFold(key, fieldName):
			r.Name = v
		case bytes.EqualFold(key, fieldEmail):
			r.Email = v
		case bytes.EqualFold(key, fieldPhoneNumber):
			r.PhoneNumber = v
		case bytes.EqualFold(key, fieldCreateTime):
			r.CreateTime = v
		case bytes.EqualFold(key, fieldContent):
			r.Content = v
		case bytes.EqualFold(key, fieldSessionID):
			r.SessionID = v
		case bytes.EqualFold(key, fieldURI):
			r.URI = v
		case bytes.EqualFold(key, fieldCount):
			r.Count = v
		}
		i = skipSpace(raw, vend)
		if i < len(raw) && raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	return r, true
}

// skipSpace returns the index of the first byte of b from i on that is not JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// stringEnd returns the index just past the JSON string that starts at b[i].
func stringEnd(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// valueEnd returns the index just past the well-formed JSON value that starts at b[i].
func valueEnd(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return stringEnd(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = stringEnd(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' && b[i] != ' ' && b[i] != '\t' && b[i] != '\n' && b[i] != '\r' {
		i++
	}
	return i
}

// plainString reads s, a well-formed JSON string, without json.Unmarshal when it holds
// no escape and only valid UTF-8 (the usual case): then its text is the bytes between
// the quotes. It reports false otherwise.
func plainString(s []byte) (string, bool) {
	if len(s) < 2 {
		return "", false
	}
	in := s[1 : len(s)-1]
	for _, c := range in {
		if c == '\\' || c == '"' || c < ' ' {
			return "", false
		}
	}
	if !utf8.Valid(in) {
		return "", false
	}
	return string(in), true
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
		if str, ok := plainString(s); ok {
			return str, nil
		}
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
