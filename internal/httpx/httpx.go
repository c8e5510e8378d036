// Package httpx holds the small HTTP helpers the LeadList client and the forwarders
// share: reading Retry-After, naming leadbridge in User-Agent, and keeping secrets and
// personal data out of errors (URLs, peers' error codes, text holding a secret).
package httpx

import (
	"crypto/tls"
	"errors"
	"fmt"
	"math"
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
	// A number of seconds too large for a Duration (ParseInt then gives MaxInt64) is
	// the longest wait, for the caller to cap: multiplied, it would wrap around to a
	// short or negative one.
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case secs < 0:
			return 0
		case secs > int64(math.MaxInt64/time.Second):
			return math.MaxInt64
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
// target by its redacted URL instead of the full one net/http would print. When the
// target answered something that is not HTTP, net/http quotes what it got ("malformed
// HTTP status code \"...\""): that part is left out, as it may echo the lead or a
// secret. The original error stays reachable through errors.Is and errors.As.
func TransportError(target string, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	msg := err.Error()
	if i := strings.Index(msg, "malformed "); i >= 0 {
		if j := strings.IndexAny(msg[i:], "\":"); j >= 0 {
			err = &quietError{msg: strings.TrimSpace(msg[:i+j]) + " (answer not quoted)", err: err}
		}
	}
	return fmt.Errorf("request to %s: %w", RedactURL(target), err)
}

// quietError replaces an error's text, keeping the error for errors.Is and errors.As.
type quietError struct {
	msg string
	err error
}

// Error returns the replacement text.
func (e *quietError) Error() string { return e.msg }

// Unwrap returns the original error.
func (e *quietError) Unwrap() error { return e.err }

// CheckURL accepts an absolute http or https URL with a host. Its errors never quote the
// URL, which may carry a token.
func CheckURL(raw string) error {
	if raw == "" {
		return errors.New("must not be empty")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("scheme must be http or https")
	}
	if u.Host == "" {
		return errors.New("must have a host")
	}
	return nil
}

// NewClient returns an HTTP client for a target: TLS 1.2 or later with certificates
// checked unless insecure, the given timeout per request, and redirects not followed (a
// redirect is a failure to report; following it could carry a signed body or a token to
// an address nobody configured). Every request carries UserAgent unless it sets its own.
// It keeps up to idle connections to the target open between requests (at least 2, Go's
// default), so that a forwarder with that many deliveries in flight reuses them instead
// of dialling anew for most requests. The transport is returned too, to close idle
// connections.
func NewClient(timeout time.Duration, insecure bool, idle int) (*http.Client, *http.Transport) {
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	transport.MaxIdleConnsPerHost = max(idle, http.DefaultMaxIdleConnsPerHost)
	transport.MaxIdleConns = max(transport.MaxIdleConns, idle)
	return &http.Client{
		Transport:     userAgent{next: transport},
		Timeout:       timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, transport
}

// userAgent sets UserAgent on requests that carry none (slack-go's, for one).
type userAgent struct{ next http.RoundTripper }

// CloseIdleConnections closes the transport's idle connections, so that the Client's
// CloseIdleConnections reaches them through this wrapper.
func (u userAgent) CloseIdleConnections() {
	if c, ok := u.next.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// RoundTrip sends req, or a copy of it naming leadbridge.
func (u userAgent) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Header.Get("User-Agent") == "" {
		req = req.Clone(req.Context())
		req.Header.Set("User-Agent", UserAgent())
	}
	return u.next.RoundTrip(req)
}
