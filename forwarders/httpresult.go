package forwarders

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
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
		return RetryAfter(err, ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now()))
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

// ParseRetryAfter reads a Retry-After header, in seconds or as an HTTP date, as a wait
// from now. It returns 0 when the header is absent or unreadable.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// RedactURL keeps a URL's scheme and host and hides everything else (user info, path,
// query), where tokens hide in webhook URLs.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "[redacted-url]"
	}
	out := u.Scheme + "://" + u.Host
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		out += "/[redacted]"
	}
	return out
}

// TransportError turns a failed http.Client.Do into a retryable error that names the
// target by its redacted URL instead of the full one net/http would print.
func TransportError(target string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return fmt.Errorf("request to %s: %w", RedactURL(target), err)
}
