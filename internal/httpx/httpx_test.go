package httpx_test

import (
	"errors"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

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
