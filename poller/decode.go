package poller

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
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

// apiRecord is one element of Data. Missing and null fields decode as zero values,
// unknown fields are ignored; the numbers stay raw to accept numeric strings.
type apiRecord struct {
	Type        string
	Name        string
	Email       string
	PhoneNumber string
	CreateTime  string
	Content     string
	SessionID   json.RawMessage
	URI         string
	Count       json.RawMessage
}

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

// decode turns a 2xx body into a Page, or an *APIError (Success: false) or a *DecodeError.
func (c *Client) decode(bot Chatbot, body []byte) (Page, error) {
	var resp apiResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			err = fmt.Errorf("%w (at byte %d of %d)", err, se.Offset, len(body))
		}
		return Page{}, c.decodeError(bot, body, err)
	}
	if resp.Success != nil && !*resp.Success {
		code, _ := parseInt(resp.Code, 32)
		return Page{}, &APIError{Serial: bot.Serial, Code: int(code), Message: c.apiMessage(resp.Message)}
	}
	if resp.Success == nil && resp.Data == nil {
		return Page{}, c.decodeError(bot, body, errors.New("neither Success nor Data present: not a LeadList response"))
	}
	page := Page{Leads: make([]event.Lead, 0, len(resp.Data))}
	for i, raw := range resp.Data {
		l, err := decodeRecord(raw)
		if err != nil {
			page.Skipped = append(page.Skipped, RecordError{Index: i, Err: err})
			continue
		}
		l.Chatbot, l.ChatbotName = bot.Serial, bot.Name
		page.Leads = append(page.Leads, l)
	}
	return page, nil
}

// decodeRecord decodes one record. Its errors name the field at fault and never quote
// the record's personal data.
func decodeRecord(raw json.RawMessage) (event.Lead, error) {
	var r apiRecord
	if err := json.Unmarshal(raw, &r); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field == "":
			return event.Lead{}, fmt.Errorf("record is a JSON %s, want an object", te.Value)
		case errors.As(err, &te):
			return event.Lead{}, fmt.Errorf("field %s: got a JSON %s, want %s", te.Field, te.Value, te.Type)
		}
		return event.Lead{}, errors.New("malformed record JSON")
	}
	kind, err := event.ParseKind(r.Type)
	if err != nil {
		return event.Lead{}, err
	}
	created, err := parseCreateTime(r.CreateTime)
	if err != nil {
		return event.Lead{}, fmt.Errorf("field CreateTime: %w", err)
	}
	session, err := parseInt(r.SessionID, 64)
	if err != nil {
		return event.Lead{}, fmt.Errorf("field SessionID: %w", err)
	}
	count, err := parseInt(r.Count, strconv.IntSize)
	if err != nil {
		return event.Lead{}, fmt.Errorf("field Count: %w", err)
	}
	return event.Lead{
		Kind:      kind,
		Name:      r.Name,
		Email:     r.Email,
		Phone:     r.PhoneNumber,
		Content:   r.Content,
		SessionID: session,
		URI:       r.URI,
		Count:     int(count),
		CreatedAt: created,
	}, nil
}

// parseCreateTime reads CreateTime in any of createTimeLayouts and returns it in UTC.
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
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not a recognised timestamp (want RFC 3339)")
}

var errNotInteger = errors.New("want an integer or a numeric string")

// parseInt reads a JSON number or numeric string holding an integer that fits in bits.
// Missing, null and "" read as 0; an integral float such as 2.0 is accepted.
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
	if n, err := strconv.ParseInt(s, 10, bits); err == nil {
		return n, nil
	}
	f, err := strconv.ParseFloat(s, 64)
	limit := math.Ldexp(1, bits-1)
	if err != nil || f != math.Trunc(f) || f < -limit || f >= limit {
		return 0, errNotInteger
	}
	return int64(f), nil
}
