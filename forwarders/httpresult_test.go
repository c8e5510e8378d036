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
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		if tc.retryAfter != "" {
			rec.Header().Set("Retry-After", tc.retryAfter)
		}
		rec.WriteHeader(tc.status)
		_, _ = rec.WriteString(tc.body)
		err := forwarders.CheckResponse(rec.Result())
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
