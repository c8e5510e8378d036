package forwarders_test

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/leadbridge/leadbridge/forwarders"
)

func TestCheckResponse(t *testing.T) {
	cases := []struct {
		status     int
		body       string
		retryAfter string
		want       string
		permanent  bool
		gone       bool
		wait       time.Duration
	}{
		{status: 204},
		{status: 400, body: `{"error":"invalid_payload"}`, want: "HTTP 400: invalid_payload", permanent: true},
		{status: 404, body: "no_service", want: "HTTP 404: no_service", permanent: true},
		{status: 422, body: `{"error":"duplicate contact ada@example.com"}`, want: "HTTP 422", permanent: true},
		{status: 409, body: "Ada Lovelace already exists", want: "HTTP 409", permanent: true},
		{status: 410, want: "HTTP 410", permanent: true, gone: true},
		{status: 429, retryAfter: "7", want: "HTTP 429", wait: 7 * time.Second},
		{status: 503, body: "<html>down</html>", retryAfter: "soon", want: "HTTP 503"},
		{status: 408, want: "HTTP 408"},
		// Hostile targets: a one-word body that is a number, a phone number, a configured
		// secret or header value, part of one, or a word of the lead.
		{status: 422, body: "5551234567", want: "HTTP 422", permanent: true},
		{status: 422, body: "555-123-4567", want: "HTTP 422", permanent: true},
		{status: 422, body: "ext5551234567", want: "HTTP 422", permanent: true},
		{status: 401, body: "hdr-SECRET-value", want: "HTTP 401", permanent: true},
		{status: 401, body: `{"error":"HDR-secret-VALUE"}`, want: "HTTP 401", permanent: true},
		{status: 401, body: "SECRET-val", want: "HTTP 401", permanent: true},
		{status: 401, body: "x-hdr-SECRET-value-y", want: "HTTP 401", permanent: true},
		{status: 422, body: `{"code":"Ada"}`, want: "HTTP 422", permanent: true},
		{status: 422, body: "ab", want: "HTTP 422", permanent: true},
		{status: 422, body: "validation.failed", want: "HTTP 422: validation.failed", permanent: true},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		if tc.retryAfter != "" {
			rec.Header().Set("Retry-After", tc.retryAfter)
		}
		rec.WriteHeader(tc.status)
		_, _ = rec.WriteString(tc.body)
		err := forwarders.CheckResponse(rec.Result(), forwarders.SafeCode([]string{"hdr-SECRET-value", "Ada Lovelace"}))
		if tc.want == "" {
			assert.NoError(t, err)
			continue
		}
		if assert.Error(t, err, tc.status) {
			assert.Equal(t, tc.want, err.Error(), "free text from the body never reaches the error")
			assert.Equal(t, tc.permanent, forwarders.IsPermanent(err), tc.status)
			assert.Equal(t, tc.gone, forwarders.IsGone(err), tc.status)
			assert.Equal(t, tc.wait, forwarders.RetryAfterOf(err), tc.status)
		}
	}
}
