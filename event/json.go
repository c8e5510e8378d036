package event

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends the event's JSON to b: byte for byte what json.Marshal(e) makes,
// without reflection. Each forwarder encodes every event it sends, and json.Marshal's
// reflection and its check of time.Time's output were most of that. It fails as
// json.Marshal does, only for a time whose year is outside 0-9999.
func (e Event) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"specversion":`...)
	b = AppendJSONString(b, e.SpecVersion)
	b = append(b, `,"id":`...)
	b = AppendJSONString(b, e.ID)
	b = append(b, `,"source":`...)
	b = AppendJSONString(b, e.Source)
	b = append(b, `,"type":`...)
	b = AppendJSONString(b, e.Type)
	b = append(b, `,"time":`...)
	b, err := appendJSONTime(b, e.Time)
	if err != nil {
		return nil, err
	}
	b = append(b, `,"datacontenttype":`...)
	b = AppendJSONString(b, e.DataContentType)
	b = append(b, `,"subject":`...)
	b = AppendJSONString(b, e.Subject)
	b = append(b, `,"data":`...)
	if b, err = e.Data.AppendJSON(b); err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// AppendJSON appends the lead's JSON to b: byte for byte what json.Marshal(l) makes (see
// Event.AppendJSON).
func (l Lead) AppendJSON(b []byte) ([]byte, error) {
	b = append(b, `{"chatbot":`...)
	b = AppendJSONString(b, l.Chatbot)
	b = append(b, `,"chatbot_name":`...)
	b = AppendJSONString(b, l.ChatbotName)
	b = append(b, `,"account":`...)
	b = AppendJSONString(b, l.Account)
	b = append(b, `,"kind":`...)
	b = AppendJSONString(b, string(l.Kind))
	b = append(b, `,"name":`...)
	b = AppendJSONString(b, l.Name)
	b = append(b, `,"email":`...)
	b = AppendJSONString(b, l.Email)
	b = append(b, `,"phone":`...)
	b = AppendJSONString(b, l.Phone)
	b = append(b, `,"content":`...)
	b = AppendJSONString(b, l.Content)
	b = append(b, `,"session_id":`...)
	b = strconv.AppendInt(b, l.SessionID, 10)
	b = append(b, `,"uri":`...)
	b = AppendJSONString(b, l.URI)
	b = append(b, `,"count":`...)
	b = strconv.AppendInt(b, int64(l.Count), 10)
	b = append(b, `,"created_at":`...)
	b, err := appendJSONTime(b, l.CreatedAt)
	if err != nil {
		return nil, err
	}
	return append(b, '}'), nil
}

// appendJSONTime appends t as time.Time's MarshalJSON does: RFC 3339 with nanoseconds,
// quoted. A time it cannot encode fails with json.Marshal's own error.
func appendJSONTime(b []byte, t time.Time) ([]byte, error) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		_, err = json.Marshal(t)
		return nil, err
	}
	return append(b, '"'), nil
}

// AppendJSONString appends s quoted as encoding/json does by default: '"', '\\' and
// control characters escaped, '<', '>' and '&' as \u003c, \u003e and \u0026, invalid
// UTF-8 as \ufffd, and U+2028 and U+2029 escaped.
func AppendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= ' ' && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
