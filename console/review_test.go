package console_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// from sends a request to c as if from addr, and returns the answer.
func from(c http.Handler, addr, method, target string, form url.Values, hdr ...string) *httptest.ResponseRecorder {
	var req *http.Request
	if form != nil {
		req = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	req.RemoteAddr = addr
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	c.ServeHTTP(w, req)
	return w
}

// An attacker guessing the token gets slowed down, but cannot lock the operator out:
// neither the login form nor the bearer header of another address is refused.
func TestGuessingTheTokenDoesNotLockTheOperatorOut(t *testing.T) {
	r := newRig(t, token)
	c := console.New(console.Options{Operator: &ops.Local{Store: r.store}, Activity: r.store, Token: token})
	const attacker, operator = "203.0.113.7:40000", "198.51.100.4:50000"
	codes := map[int]int{}
	for range 20 {
		codes[from(c, attacker, "POST", "http://leads.example.com/ui/login", url.Values{"token": {"guess"}}).Code]++
	}
	require.Positive(t, codes[http.StatusTooManyRequests], "the attacker is slowed down: %v", codes)

	w := from(c, operator, "POST", "http://leads.example.com/ui/login", url.Values{"token": {token}})
	assert.Equal(t, http.StatusSeeOther, w.Code, "the operator logs in from another address: %s", w.Body)
	w = from(c, operator, "GET", "http://leads.example.com/ui/", nil, "Authorization", "Bearer "+token)
	assert.Equal(t, http.StatusOK, w.Code, "and scripts with the bearer header still work")
	// An IPv6 attacker does not get a fresh allowance from each address of its /64.
	codes = map[int]int{}
	for i := range 20 {
		addr := fmt.Sprintf("[2001:db8:1:2::%x]:40000", i+1)
		codes[from(c, addr, "POST", "http://leads.example.com/ui/login", url.Values{"token": {"guess"}}).Code]++
	}
	assert.Positive(t, codes[http.StatusTooManyRequests], "one /64 is one client: %v", codes)
}

// Guessing through the bearer header is slowed down as through the form, and a right
// token is not refused for the wrong guesses of others.
func TestGuessingTheBearerTokenIsRateLimited(t *testing.T) {
	r := newRig(t, token)
	c := console.New(console.Options{Operator: &ops.Local{Store: r.store}, Activity: r.store, Token: token})
	codes := map[int]int{}
	for range 20 {
		codes[from(c, "203.0.113.7:40000", "GET", "http://leads.example.com/ui/", nil, "Authorization", "Bearer guess").Code]++
	}
	assert.Positive(t, codes[http.StatusTooManyRequests], "%v", codes)
	assert.LessOrEqual(t, codes[http.StatusUnauthorized], 7, "%v", codes)
	for range 20 {
		w := from(c, "198.51.100.4:50000", "GET", "http://leads.example.com/ui/", nil, "Authorization", "Bearer "+token)
		require.Equal(t, http.StatusOK, w.Code, "a right token is never counted as a guess")
	}
}
