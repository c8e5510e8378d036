package console_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/internal/leadtest"
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

// A dead letter of a forwarder no longer in the config cannot be replayed from the
// console: it would only move to an outbox nobody delivers, under "delivered shortly".
// The pages offer to drop it instead, and say why.
func TestReplayToARemovedForwarderIsRefused(t *testing.T) {
	r := newRig(t, token)
	// The rig's dead letter is of crm, which this config no longer has.
	local := &ops.Local{Store: r.store, Forwarders: []ops.ForwarderInfo{{Name: "bus", Type: "nats"}, {Name: "slack", Type: "slack"}}}
	c := console.New(console.Options{Operator: local, Activity: r.store, Token: token})
	bearer := []string{"Authorization", "Bearer " + token}
	for _, form := range []url.Values{{"one": {"crm/" + r.deadID}}, {"sel": {"crm/" + r.deadID}}, {"all": {"crm"}}} {
		w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/dead/replay", form, bearer...)
		assert.Equal(t, http.StatusBadRequest, w.Code, "%v", form)
		assert.Contains(t, w.Body.String(), "crm", "%v", form)
		assert.Contains(t, w.Body.String(), "no longer configured", "%v", form)
	}
	dl, err := r.store.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, dl, 1, "the dead letter stays")
	assert.Empty(t, leadtest.Pending(t, r.store, "crm"), "nothing stranded in the outbox")

	for _, path := range []string{"/ui/dead", "/ui/events/" + r.deadID} {
		page := from(c, "127.0.0.1:1", "GET", "http://127.0.0.1"+path, nil, bearer...)
		require.Equal(t, http.StatusOK, page.Code, path)
		body := page.Body.String()
		assert.NotContains(t, body, `formaction="/ui/dead/replay" name="one" value="crm/`, path)
		assert.Contains(t, body, `formaction="/ui/dead/drop" name="one" value="crm/`, path)
		assert.Contains(t, body, "no longer configured", path)
	}
	assert.NotContains(t, from(c, "127.0.0.1:1", "GET", "http://127.0.0.1/ui/dead", nil, bearer...).Body.String(), "Replay all 1 of crm")

	w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/dead/drop", url.Values{"one": {"crm/" + r.deadID}}, bearer...)
	assert.Equal(t, http.StatusSeeOther, w.Code, "dropping it is fine")
}

// Two clicks of the same Replay button (a double submit, or two operators at once)
// queue the delivery once, and the second click says that it found nothing to replay.
func TestDoubleSubmittedReplayQueuesOnce(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	r.login(t, c)
	csrf := csrfOf(t, do(t, c, "GET", r.srv.URL+"/ui/dead", nil).body)
	form := url.Values{"one": {"crm/" + r.deadID}, "csrf": {csrf}}
	answers := make(chan answer, 2)
	for range 2 {
		go func() { answers <- do(t, c, "POST", r.srv.URL+"/ui/dead/replay", form) }()
	}
	var flashes []string
	for range 2 {
		a := <-answers
		require.Equal(t, http.StatusSeeOther, a.code, a.body)
		flashes = append(flashes, do(t, c, "GET", r.srv.URL+a.resp.Header.Get("Location"), nil).body)
	}
	assert.Len(t, leadtest.Pending(t, r.store, "crm"), 1, "queued once")
	joined := strings.Join(flashes, "\n")
	assert.Contains(t, joined, "Replayed 1 dead letter: back in the outbox")
	assert.Contains(t, joined, "Nothing was replayed: already replayed or dropped")
	assert.NotContains(t, joined, "Replayed 0 dead letters")

	drop := do(t, c, "POST", r.srv.URL+"/ui/dead/drop", form)
	require.Equal(t, http.StatusSeeOther, drop.code)
	assert.Contains(t, do(t, c, "GET", r.srv.URL+drop.resp.Header.Get("Location"), nil).body,
		"Nothing was dropped: already replayed or dropped")
}

// A selection holds at most one page of dead letters, all the dead-letter page can tick:
// each is its own store transaction that reads the forwarder's dead letters (0.1 s each
// at 10,000 of them), so a forged form of thousands would hold the store for minutes.
func TestASelectionIsOnePageAtMost(t *testing.T) {
	r := newRig(t, token)
	c := console.New(console.Options{Operator: &ops.Local{Store: r.store, Forwarders: []ops.ForwarderInfo{{Name: "crm", Type: "webhook"}}},
		Activity: r.store, Token: token})
	sel := url.Values{"sel": {"crm/" + r.deadID}}
	for i := range 50 {
		sel.Add("sel", fmt.Sprintf("crm/%064x", i))
	}
	for _, op := range []string{"replay", "drop"} {
		w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/dead/"+op, sel, "Authorization", "Bearer "+token)
		assert.Equal(t, http.StatusBadRequest, w.Code, op)
		assert.Contains(t, w.Body.String(), "51 dead letters ticked: at most 50", op)
	}
	dl, err := r.store.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, dl, 1, "nothing changed")

	w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/dead/drop", url.Values{"sel": sel["sel"][:50]}, "Authorization", "Bearer "+token)
	assert.Equal(t, http.StatusSeeOther, w.Code, "a page's worth is fine")
}

// After the login the console goes only to a page of its own, however next is dressed.
func TestLoginNextStaysInTheConsole(t *testing.T) {
	r := newRig(t, token)
	c := console.New(console.Options{Operator: &ops.Local{Store: r.store}, Activity: r.store, Token: token})
	for _, next := range []string{"https://evil.example/", "//evil.example/", "/\\evil.example", "/ui/..//evil.example",
		"/ui/../\t/evil.example", "/ui/../..\t//evil.example", "/ui/.%2e//evil.example", "/ui/../admin/reload",
		"/ui/\x00//x", "/ui/\r\nSet-Cookie: x=1", "/ui/./dead", "/ui/login?next=//evil.example", "/ui/%2e%2e/admin/status"} {
		w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/login", url.Values{"token": {token}, "next": {next}})
		require.Equal(t, http.StatusSeeOther, w.Code, "%q", next)
		assert.Equal(t, "/ui/", w.Header().Get("Location"), "%q", next)
	}
	for _, next := range []string{"/ui/", "/ui/dead?forwarder=crm&page=2", "/ui/activity?chatbot=x%20y", "/ui/events/" + r.deadID} {
		w := from(c, "127.0.0.1:1", "POST", "http://127.0.0.1/ui/login", url.Values{"token": {token}, "next": {next}})
		assert.Equal(t, next, w.Header().Get("Location"), "a page of the console is kept")
	}
}
