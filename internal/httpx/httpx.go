// Package httpx holds the small HTTP helpers the LeadList client and the forwarders
// share: reading Retry-After, and keeping secrets in URLs out of errors.
package httpx

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

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
