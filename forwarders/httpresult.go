package forwarders

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/leadbridge/leadbridge/internal/httpx"
)

// maxErrorBody bounds how much of a failed response body goes into an error.
const maxErrorBody = 512

// CheckResponse classifies an HTTP response the same way for every target: 2xx is
// success (nil); 408, 429 and 5xx are retryable, honouring Retry-After; 410 is Gone;
// every other status is permanent. It drains and closes the body. The error names the
// status and the target's error code when the body holds one (see errorCode), never the
// request URL, and never free text from the body, which may echo the lead's personal
// data into logs and dead letters.
func CheckResponse(resp *http.Response) error {
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		return nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	err := fmt.Errorf("HTTP %d", resp.StatusCode)
	if code := errorCode(snippet); code != "" {
		err = fmt.Errorf("HTTP %d: %s", resp.StatusCode, code)
	}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout,
		resp.StatusCode == http.StatusTooManyRequests,
		resp.StatusCode >= 500:
		return RetryAfter(err, httpx.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
	case resp.StatusCode == http.StatusGone:
		return Gone(err)
	default:
		return Permanent(err)
	}
}

// errorCode returns the machine-readable error code of a failed response body: the whole
// body when it is one ("no_service", as Slack answers), or the "error" or "code" field of
// a JSON object when that is one. A code is a short run of letters, digits, "_", "-" and
// "."; anything else (free text, an email) is not returned.
func errorCode(body []byte) string {
	body = bytes.TrimSpace(body)
	if isCode(string(body)) {
		return string(body)
	}
	var obj map[string]any
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	for _, k := range []string{"error", "code", "error_code"} {
		if v, ok := obj[k].(string); ok && isCode(v) {
			return v
		}
	}
	return ""
}

func isCode(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-' || r == '.') {
			return false
		}
	}
	return true
}
