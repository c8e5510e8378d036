package forwarders

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// maxErrorBody bounds how much of a failed response body is read for its error code.
const maxErrorBody = 512

// CodeFunc picks, from a failed response body, the target's error code if it is one that
// is safe to quote in an error (see SafeCode), or returns "".
type CodeFunc func(body []byte) string

// CheckResponse classifies an HTTP response the same way for every target (see
// ClassifyStatus); a 2xx is success (nil). It drains and closes the body. The error names
// the status and, when code finds one, the target's error code: never the request URL and
// never free text from the body, which may echo the lead's personal data or a secret into
// logs and dead letters.
func CheckResponse(resp *http.Response, code CodeFunc) error {
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	return ClassifyStatus(resp.StatusCode, resp.Header, StatusText(resp.StatusCode, code(body)))
}

// StatusText is the error for a status and an error code already checked as safe:
// "HTTP 422" or "HTTP 422: invalid_payload".
func StatusText(status int, code string) error {
	if code == "" {
		return fmt.Errorf("HTTP %d", status)
	}
	return fmt.Errorf("HTTP %d: %s", status, code)
}

// ClassifyStatus marks err, the failure of an answer with the given status, the way every
// target agrees on: 408, 429 and 5xx are retryable, honouring the Retry-After of header;
// 410 is Gone; every other status is permanent.
func ClassifyStatus(status int, header http.Header, err error) error {
	switch {
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return RetryAfter(err, httpx.ParseRetryAfter(header.Get("Retry-After"), time.Now()))
	case status == http.StatusGone:
		return Gone(err)
	default:
		return Permanent(err)
	}
}

// BodyCode returns what a failed response body offers as its error code, unchecked: the
// whole body when it is one word ("no_service", as Slack answers), or else the "error",
// "code" or "error_code" string of a JSON object.
func BodyCode(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) > 0 && !bytes.ContainsAny(body, " \t\r\n{}[]\"") {
		return string(body)
	}
	var obj map[string]any
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	for _, k := range []string{"error", "code", "error_code"} {
		if v, ok := obj[k].(string); ok {
			return v
		}
	}
	return ""
}

// SafeCode is the CodeFunc of a target whose error vocabulary is unknown: the BodyCode,
// kept only when it passes httpx.SafeCode against private (the target's secrets and
// header values, the lead's personal fields).
func SafeCode(private []string) CodeFunc {
	return func(body []byte) string {
		if c := BodyCode(body); httpx.SafeCode(c, private) {
			return c
		}
		return ""
	}
}

// PersonalData lists the fields of ev's lead that may identify a person, for SafeCode to
// keep out of errors.
func PersonalData(ev event.Event) []string {
	l := ev.Data
	return []string{l.Name, l.Email, l.Phone, l.Content, l.URI, strconv.FormatInt(l.SessionID, 10)}
}
