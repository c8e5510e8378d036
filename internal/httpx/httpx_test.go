package httpx_test

import (
	"bufio"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/httpx"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://hooks.slack.com/services/T0/B0/SECRET": "https://hooks.slack.com/[redacted]",
		"https://user:pass@crm.example.com":             "https://crm.example.com/[redacted]",
		"https://crm.example.com/?token=abc":            "https://crm.example.com/[redacted]",
		"https://crm.example.com":                       "https://crm.example.com",
		"::not a url":                                   "[redacted-url]",
	} {
		assert.Equal(t, want, httpx.RedactURL(in), in)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Mon, 23 Nov 2026 12:00:30 GMT": 30 * time.Second,
		"Mon, 23 Nov 2026 11:00:00 GMT": 0,
		// Too long for a Duration: as long as can be (callers cap it), never wrapped
		// around to a short or negative wait.
		"10000000000":           math.MaxInt64,
		"18446744074":           math.MaxInt64,
		"99999999999999999999":  math.MaxInt64,
		"-99999999999999999999": 0,
	} {
		assert.Equal(t, want, httpx.ParseRetryAfter(in, now), in)
	}
}

func TestTransportErrorHidesTheURL(t *testing.T) {
	err := httpx.TransportError("https://hooks.example.com/T0/SECRET?k=v",
		&url.Error{Op: "Post", URL: "https://hooks.example.com/T0/SECRET?k=v", Err: errors.New("connection refused")})
	assert.NotContains(t, err.Error(), "SECRET")
	assert.Contains(t, err.Error(), "hooks.example.com")
	assert.Contains(t, err.Error(), "connection refused")
}

func TestCheckURL(t *testing.T) {
	for in, wantErr := range map[string]string{
		"https://crm.example.com/hooks?token=SECRET": "",
		"http://127.0.0.1:8080/x":                    "",
		"":                                           "must not be empty",
		"ftp://crm.example.com/SECRET":               "scheme must be http or https",
		"https:///SECRET":                            "must have a host",
		"::bad SECRET":                               "not a valid URL",
	} {
		err := httpx.CheckURL(in)
		if wantErr == "" {
			assert.NoError(t, err, in)
			continue
		}
		if assert.Error(t, err, in) {
			assert.Equal(t, wantErr, err.Error())
			assert.NotContains(t, err.Error(), "SECRET", "the URL is never quoted")
		}
	}
}

func TestSafeCode(t *testing.T) {
	private := []string{"hdr-SECRET-value", "Ada Lovelace", "ada@example.com", ""}
	for code, want := range map[string]bool{
		"invalid_payload": true, "validation.failed": true, "ERR-42": true, "E1234": true,
		"":           false,                                              // nothing
		"ok":         false,                                              // too short to say anything, or initials
		"5551234567": false, "555-123-4567": false, "x5551234567": false, // numbers, phones
		"ada@example.com": false, "two words": false, "<html>": false, // email, text, markup
		"hdr-SECRET-value": false, "HDR-secret-VALUE": false, // a secret, in any case
		"x-hdr-SECRET-value-y": false, "SECRET-val": false, // around one, part of one
		"Ada": false, "lovelace": false, // a word of the lead
		strings.Repeat("a", 65): false,
	} {
		assert.Equal(t, want, httpx.SafeCode(code, private), "%q", code)
	}
}

func TestRedactor(t *testing.T) {
	r := httpx.NewRedactor("sk-live-7f3c9e2a1b5d", "Bearer tok en", "", `q"uote\d`)
	for in, want := range map[string]string{
		"key sk-live-7f3c9e2a1b5d bad":                  "key [redacted] bad",
		"key=xsk-live-7f3c9e2a1b5dy, next":              "[redacted] next",
		"auth: Bearer tok en!":                          "auth: [redacted]",
		"cut short: `sk-live-7f3...`":                   "cut short: [redacted]",
		`quoted "q\"uote\\d"`:                           "quoted [redacted]",
		"url u:sk-live-7f3c9e2a1b5d@h":                  "url [redacted]",
		"no secret here, live-7f short ok":              "no secret here, live-7f short ok",
		"two sk-live-7f3c9e2a1b5d sk-live-7f3c9e2a1b5d": "two [redacted] [redacted]",
	} {
		assert.Equal(t, want, r.Redact(in), in)
	}
	assert.Equal(t, "as is", (*httpx.Redactor)(nil).Redact("as is"))
	assert.Equal(t, "as is", httpx.NewRedactor("").Redact("as is"))
}

func TestNewClientNamesLeadbridge(t *testing.T) {
	got := make(chan string, 2)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("User-Agent")
	}))
	t.Cleanup(srv.Close)
	client, _ := httpx.NewClient(time.Second, false, 0)
	for _, ua := range []string{"", "custom/1"} {
		req, err := http.NewRequest(http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		if ua != "" {
			req.Header.Set("User-Agent", ua)
		}
		resp, err := client.Do(req)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
	}
	assert.Equal(t, "leadbridge/"+httpx.Version, <-got)
	assert.Equal(t, "custom/1", <-got, "a request's own User-Agent is kept")
}

// A target that answers something other than HTTP gets its first line quoted by net/http
// ("malformed HTTP response \"...\""); that line may echo the lead or a secret.
func TestTransportErrorQuotesNoAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				_, _ = io.Copy(io.Discard, req.Body)
			}
			_, _ = io.WriteString(c, "HELLO Ada Lovelace 5551234567\r\nX: y\r\n\r\n")
			_ = c.Close()
		}
	}()
	target := "http://" + ln.Addr().String() + "/hook"
	client, _ := httpx.NewClient(time.Second, false, 0)
	_, err = client.Post(target, "text/plain", strings.NewReader("x"))
	require.Error(t, err)
	msg := httpx.TransportError(target, err).Error()
	t.Log(msg)
	assert.Contains(t, msg, "malformed HTTP")
	assert.NotContains(t, msg, "Ada")
	assert.NotContains(t, msg, "5551234567")
}

// A client's CloseIdleConnections reaches the transport under the User-Agent wrapper:
// the connection kept open to the target is closed.
func TestNewClientClosesIdleConnections(t *testing.T) {
	closed := make(chan struct{}, 1)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	client, _ := httpx.NewClient(5*time.Second, false, 2)
	resp, err := client.Get(srv.URL)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	require.NoError(t, resp.Body.Close())

	client.CloseIdleConnections()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the idle connection was not closed")
	}
}
