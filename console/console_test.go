package console_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/console"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const (
	bot   = "3254a9d0424c4806b9ea3d0763ccf001"
	token = "s3cret-admin-token-0123456789"
)

// rig is a console over a real store holding: two leads of account "agency" delivered
// to "bus" (each attempt took 42ms), one dead letter of "crm" (an appointment of
// "agency"), a paused "slack", and a failing chatbot of the default account.
type rig struct {
	store   *dedupe.Store
	srv     *httptest.Server
	leads   []event.Lead
	deadID  string
	resumed []string
	local   *ops.Local // the console's operator
}

func newRig(t *testing.T, tok string) *rig {
	t.Helper()
	now := time.Now()
	r := &rig{}
	r.store = leadtest.OpenStore(t, dedupe.Options{Initial: dedupe.InitialEmit, Route: func(ev event.Event) []string {
		if ev.Kind() == event.KindAppointment {
			return []string{"crm"}
		}
		return []string{"bus"}
	}})
	ctx := t.Context()
	r.leads = []event.Lead{
		leadtest.Lead(bot, event.KindLead, 1, now.Add(-time.Hour)),
		leadtest.Lead(bot, event.KindLead, 2, now.Add(-time.Hour+time.Second)),
		leadtest.Lead(bot, event.KindAppointment, 3, now.Add(-time.Hour+2*time.Second)),
	}
	for i := range r.leads {
		r.leads[i].Account = "agency"
	}
	_, err := r.store.Ingest(ctx, bot, r.leads)
	require.NoError(t, err)
	var outcomes []event.Outcome
	for _, d := range leadtest.Pending(t, r.store, "bus") {
		outcomes = append(outcomes, event.Outcome{Delivery: d, Verdict: event.Acked, Took: 42 * time.Millisecond})
	}
	dead := leadtest.Pending(t, r.store, "crm")[0]
	dead.Attempts, dead.LastError = 1, "webhook crm: 400 Bad Request"
	outcomes = append(outcomes, event.Outcome{Delivery: dead, Verdict: event.Dead, At: now})
	require.NoError(t, r.store.Record(ctx, outcomes))
	r.deadID = dead.Event.ID
	require.NoError(t, r.store.Pause(ctx, "slack", "slack: channel_not_found", "hash"))
	require.NoError(t, r.store.RecordPoll(ctx, "c0ffee00000000000000000000000002", now, errors.New("leadlist: 401 Unauthorized")))
	require.NoError(t, r.store.FlushPolls(ctx))

	r.local = &ops.Local{Store: r.store, Resumer: func(name string) bool { r.resumed = append(r.resumed, name); return true },
		Chatbots: []event.Chatbot{{Serial: bot, Name: "Main site", Account: "agency"},
			{Serial: "c0ffee00000000000000000000000002", Name: "Broken bot", Account: event.DefaultAccount}},
		Forwarders: []ops.ForwarderInfo{{Name: "bus", Type: "nats"}, {Name: "crm", Type: "webhook"}, {Name: "slack", Type: "slack"}}}
	c := console.New(console.Options{Operator: r.local, Activity: r.store, Token: tok, PollInterval: time.Minute})
	r.srv = httptest.NewServer(ops.WithConsole(http.NotFoundHandler(), c))
	t.Cleanup(r.srv.Close)
	return r
}

// client is a browser: a cookie jar, and redirects not followed so that they can be checked.
func client(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	require.NoError(t, err)
	return &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

type answer struct {
	code int
	body string
	resp *http.Response
}

func do(t *testing.T, c *http.Client, method, u string, form url.Values, hdr ...string) answer {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	require.NoError(t, err)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return answer{code: resp.StatusCode, body: string(b), resp: resp}
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([0-9a-f]+)"`)

func csrfOf(t *testing.T, page string) string {
	t.Helper()
	m := csrfRE.FindStringSubmatch(page)
	require.NotNil(t, m, "the page carries a CSRF token")
	return m[1]
}

// login logs c in through the form.
func (r *rig) login(t *testing.T, c *http.Client) {
	t.Helper()
	a := do(t, c, "POST", r.srv.URL+"/ui/login", url.Values{"token": {token}, "next": {"/ui/dead"}})
	require.Equal(t, http.StatusSeeOther, a.code, a.body)
	assert.Equal(t, "/ui/dead", a.resp.Header.Get("Location"))
}

// personal is every piece of personal data of the rig's leads.
func (r *rig) personal() []string {
	var out []string
	for _, l := range r.leads {
		out = append(out, l.Name, l.Email)
	}
	return out
}

func TestEveryPageWantsTheToken(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	for _, path := range []string{"/ui/", "/ui/activity", "/ui/dead", "/ui/events/" + r.deadID, "/ui/nope"} {
		a := do(t, c, "GET", r.srv.URL+path, nil)
		assert.Equal(t, http.StatusSeeOther, a.code, path)
		assert.Equal(t, "/ui/login?next="+url.QueryEscape(path), a.resp.Header.Get("Location"), path)
		for _, p := range append(r.personal(), "Main site", "crm", "Bad Request") {
			assert.NotContains(t, a.body, p, path)
		}
	}
	for _, path := range []string{"/ui/dead/replay", "/ui/dead/drop", "/ui/forwarders/slack/resume", "/ui/logout"} {
		a := do(t, c, "POST", r.srv.URL+path, url.Values{"all": {"crm"}})
		assert.Equal(t, http.StatusUnauthorized, a.code, path)
	}
	for _, h := range []string{"Bearer wrong", token, "Basic " + token, "Bearer " + token + "x"} {
		a := do(t, c, "GET", r.srv.URL+"/ui/", nil, "Authorization", h)
		assert.Equal(t, http.StatusUnauthorized, a.code, h)
		assert.NotContains(t, a.body, "Main site")
	}
	dl, err := r.store.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, dl, 1, "nothing was changed")
	_, err = r.store.Resume(t.Context(), "slack")
	require.NoError(t, err)

	login := do(t, c, "GET", r.srv.URL+"/ui/login", nil)
	assert.Equal(t, http.StatusOK, login.code)
	assert.Contains(t, login.body, `type="password"`)
	for _, p := range append(r.personal(), "Main site") {
		assert.NotContains(t, login.body, p)
	}
}

func TestLoginSetsASessionCookieThatIsNotTheToken(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	wrong := do(t, c, "POST", r.srv.URL+"/ui/login", url.Values{"token": {"guess"}})
	assert.Equal(t, http.StatusUnauthorized, wrong.code)
	assert.Contains(t, wrong.body, "not the daemon")
	assert.Empty(t, wrong.resp.Cookies())

	a := do(t, c, "POST", r.srv.URL+"/ui/login", url.Values{"token": {token}, "next": {"https://evil.example/"}})
	require.Equal(t, http.StatusSeeOther, a.code)
	assert.Equal(t, "/ui/", a.resp.Header.Get("Location"), "never sent to another site")
	cookies := a.resp.Cookies()
	require.Len(t, cookies, 1)
	ck := cookies[0]
	assert.True(t, ck.HttpOnly)
	assert.Equal(t, http.SameSiteStrictMode, ck.SameSite)
	assert.Equal(t, "/ui/", ck.Path)
	assert.NotContains(t, ck.Value, token)
	assert.Len(t, ck.Value, 64)
	assert.False(t, ck.Secure, "plain HTTP: a Secure cookie would not come back")
	proxied := do(t, client(t), "POST", r.srv.URL+"/ui/login", url.Values{"token": {token}}, "X-Forwarded-Proto", "https")
	require.Equal(t, http.StatusSeeOther, proxied.code)
	require.Len(t, proxied.resp.Cookies(), 1)
	assert.True(t, proxied.resp.Cookies()[0].Secure, "behind a reverse proxy that took TLS, the cookie is Secure")

	page := do(t, c, "GET", r.srv.URL+"/ui/", nil)
	require.Equal(t, http.StatusOK, page.code)
	assert.Contains(t, page.body, "Main site")
	assert.Contains(t, page.body, "Log out")
	assert.NotContains(t, page.body, token)

	out := do(t, c, "POST", r.srv.URL+"/ui/logout", url.Values{"csrf": {csrfOf(t, page.body)}})
	assert.Equal(t, http.StatusSeeOther, out.code)
	// The old cookie no longer works, even sent again by hand.
	again := do(t, client(t), "GET", r.srv.URL+"/ui/", nil, "Cookie", ck.Name+"="+ck.Value)
	assert.Equal(t, http.StatusSeeOther, again.code)
}

func TestLoginAttemptsAreRateLimited(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	codes := map[int]int{}
	for range 20 {
		codes[do(t, c, "POST", r.srv.URL+"/ui/login", url.Values{"token": {"guess"}}).code]++
	}
	assert.Positive(t, codes[http.StatusTooManyRequests], "%v", codes)
	assert.LessOrEqual(t, codes[http.StatusUnauthorized], 7, "%v", codes)
}

func TestWithoutATokenOnlyLoopback(t *testing.T) {
	r := newRig(t, "")
	c := console.New(console.Options{Operator: &ops.Local{Store: r.store}, Activity: r.store})
	for name, req := range map[string]func() *http.Request{
		"remote address": func() *http.Request {
			q := httptest.NewRequest("GET", "http://127.0.0.1:9108/ui/", nil)
			q.RemoteAddr = "203.0.113.7:40000"
			return q
		},
		"host name (DNS rebinding)": func() *http.Request {
			q := httptest.NewRequest("GET", "http://evil.example:9108/ui/", nil)
			q.RemoteAddr = "127.0.0.1:40000"
			return q
		},
	} {
		w := httptest.NewRecorder()
		c.ServeHTTP(w, req())
		assert.Equal(t, http.StatusForbidden, w.Code, name)
		assert.Contains(t, w.Body.String(), "only on this machine", name)
		assert.NotContains(t, w.Body.String(), bot, name)
	}

	// On loopback it serves, says so on every page, and still wants the CSRF token.
	b := client(t)
	for _, path := range []string{"/ui/", "/ui/activity", "/ui/dead", "/ui/events/" + r.deadID} {
		a := do(t, b, "GET", r.srv.URL+path, nil)
		require.Equal(t, http.StatusOK, a.code, path)
		assert.Contains(t, a.body, "No <code>http.admin_token</code> is set", path)
	}
	a := do(t, b, "POST", r.srv.URL+"/ui/dead/drop", url.Values{"all": {"crm"}})
	assert.Equal(t, http.StatusForbidden, a.code)
	a = do(t, client(t), "POST", r.srv.URL+"/ui/dead/drop", url.Values{"all": {"crm"}})
	assert.Equal(t, http.StatusForbidden, a.code, "no session at all")
	dl, err := r.store.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, dl, 1)
}

func TestRemoteWithTheToken(t *testing.T) {
	r := newRig(t, token)
	c := console.New(console.Options{Operator: &ops.Local{Store: r.store}, Activity: r.store, Token: token})
	q := httptest.NewRequest("GET", "http://leads.example.com/ui/activity", nil)
	q.RemoteAddr = "203.0.113.7:40000"
	q.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	c.ServeHTTP(w, q)
	assert.Equal(t, http.StatusOK, w.Code, "with a token the console may be opened to other machines")
}

func TestPagesShowWhatHappened(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	bearer := []string{"Authorization", "Bearer " + token}

	o := do(t, c, "GET", r.srv.URL+"/ui/", nil, bearer...)
	require.Equal(t, http.StatusOK, o.code)
	for _, want := range []string{"Main site", "Broken bot", "401 Unauthorized", "<b>1</b> of 2 chatbots failing",
		"Resume slack", "channel_not_found", "<svg", "2 delivered", `class="state paused"`, `class="state failing"`} {
		assert.Contains(t, o.body, want)
	}
	assert.Less(t, strings.Index(o.body, "Broken bot"), strings.Index(o.body, "Main site"), "failing chatbots first")
	assert.Less(t, strings.Index(o.body, ">slack</a>"), strings.Index(o.body, ">bus</a>"), "paused forwarders first")
	for _, p := range r.personal() {
		assert.NotContains(t, o.body, p, "the overview shows no lead")
	}

	f := do(t, c, "GET", r.srv.URL+"/ui/?state=never&q=main", nil, bearer...)
	require.Equal(t, http.StatusOK, f.code)
	assert.Contains(t, f.body, "1 of 2 chatbots shown")
	assert.NotContains(t, f.body, "Broken bot")

	act := do(t, c, "GET", r.srv.URL+"/ui/activity", nil, bearer...)
	require.Equal(t, http.StatusOK, act.code)
	assert.Equal(t, 3, strings.Count(act.body, `href="/ui/events/`))
	assert.Contains(t, act.body, "delivered")
	assert.Contains(t, act.body, "400 Bad Request")

	dead := do(t, c, "GET", r.srv.URL+"/ui/activity?outcome=dead&forwarder=crm&kind=appointment&chatbot="+bot, nil, bearer...)
	require.Equal(t, http.StatusOK, dead.code)
	assert.Equal(t, 1, strings.Count(dead.body, `href="/ui/events/`))
	assert.Contains(t, dead.body, r.deadID[:11])
	none := do(t, c, "GET", r.srv.URL+"/ui/activity?chatbot=other", nil, bearer...)
	assert.Contains(t, none.body, "Nothing recorded that matches")
	for _, bad := range []string{"kind=memo", "outcome=great"} {
		a := do(t, c, "GET", r.srv.URL+"/ui/activity?"+bad, nil, bearer...)
		assert.Equal(t, http.StatusBadRequest, a.code, bad)
		assert.Contains(t, a.body, strings.Split(bad, "=")[0]+"=", bad)
	}

	ev := do(t, c, "GET", r.srv.URL+"/ui/events/"+r.deadID, nil, bearer...)
	require.Equal(t, http.StatusOK, ev.code)
	assert.Contains(t, ev.body, "&#34;specversion&#34;: &#34;1.0&#34;")
	assert.Contains(t, ev.body, r.leads[2].Email, "the event page shows the CloudEvent, to those who may see it")
	assert.Contains(t, ev.body, "Replay to crm")
	assert.Contains(t, ev.body, "webhook crm: 400 Bad Request")
	delivered := do(t, c, "GET", r.srv.URL+"/ui/events/"+r.leads[0].ID(), nil, bearer...)
	require.Equal(t, http.StatusOK, delivered.code)
	assert.Contains(t, delivered.body, r.leads[0].Email, "a delivered event's CloudEvent stays readable")
	missing := do(t, c, "GET", r.srv.URL+"/ui/events/0000", nil, bearer...)
	assert.Equal(t, http.StatusNotFound, missing.code)

	dl := do(t, c, "GET", r.srv.URL+"/ui/dead", nil, bearer...)
	require.Equal(t, http.StatusOK, dl.code)
	assert.Contains(t, dl.body, `value="crm/`+r.deadID+`"`)
	assert.Contains(t, dl.body, "Replay all 1 of crm")
	assert.Contains(t, dl.body, "Resume slack")
	assert.Equal(t, "DENY", dl.resp.Header.Get("X-Frame-Options"))
	assert.Contains(t, dl.resp.Header.Get("Content-Security-Policy"), "default-src 'none'")

	for _, asset := range []string{"/ui/style.css", "/ui/app.js"} {
		a := do(t, c, "GET", r.srv.URL+asset, nil)
		assert.Equal(t, http.StatusOK, a.code, asset)
	}
}

func TestActionsWantTheCSRFToken(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	r.login(t, c)
	page := do(t, c, "GET", r.srv.URL+"/ui/dead", nil)
	require.Equal(t, http.StatusOK, page.code)
	csrf := csrfOf(t, page.body)

	one := url.Values{"one": {"crm/" + r.deadID}}
	for name, form := range map[string]url.Values{
		"no token":    one,
		"wrong token": {"one": {"crm/" + r.deadID}, "csrf": {strings.Repeat("0", 64)}},
	} {
		a := do(t, c, "POST", r.srv.URL+"/ui/dead/replay", form)
		assert.Equal(t, http.StatusForbidden, a.code, name)
		assert.Contains(t, a.body, "CSRF", name)
	}
	one.Set("csrf", csrf)
	cross := do(t, c, "POST", r.srv.URL+"/ui/dead/replay", one, "Sec-Fetch-Site", "cross-site")
	assert.Equal(t, http.StatusForbidden, cross.code, "a cross-origin form post")
	other := do(t, client(t), "POST", r.srv.URL+"/ui/dead/replay", one)
	assert.Equal(t, http.StatusUnauthorized, other.code, "another browser with a copied CSRF token")
	dl, err := r.store.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, dl, 1, "nothing refused changed anything")
}

func TestReplayDropAndResume(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	r.login(t, c)
	csrf := csrfOf(t, do(t, c, "GET", r.srv.URL+"/ui/dead", nil).body)
	post := func(path string, form url.Values) answer {
		form.Set("csrf", csrf)
		return do(t, c, "POST", r.srv.URL+path, form)
	}
	deadCount := func() int {
		dl, err := r.store.DeadLetters(t.Context(), "")
		require.NoError(t, err)
		return len(dl)
	}

	bad := post("/ui/dead/replay", url.Values{"sel": {"crm/" + r.deadID, "nonsense"}})
	assert.Equal(t, http.StatusBadRequest, bad.code)
	assert.Contains(t, bad.body, "dead letter 2 of the form")
	assert.Equal(t, 1, deadCount(), "a bad selection changes nothing")
	empty := post("/ui/dead/drop", url.Values{})
	assert.Equal(t, http.StatusBadRequest, empty.code)
	assert.Contains(t, empty.body, "Nothing to drop")

	a := post("/ui/dead/replay", url.Values{"one": {"crm/" + r.deadID}})
	require.Equal(t, http.StatusSeeOther, a.code, a.body)
	assert.Equal(t, 0, deadCount())
	p := leadtest.Pending(t, r.store, "crm")
	require.Len(t, p, 1)
	assert.Equal(t, r.deadID, p[0].Event.ID)
	shown := do(t, c, "GET", r.srv.URL+a.resp.Header.Get("Location"), nil)
	assert.Contains(t, shown.body, "Replayed 1 dead letter: back in the outbox")

	// Dead again, then dropped with the selection; then all of a forwarder.
	dead := p[0]
	dead.Attempts, dead.LastError = 1, "webhook crm: 410 Gone"
	require.NoError(t, r.store.Record(t.Context(), []event.Outcome{{Delivery: dead, Verdict: event.Dead, At: time.Now()}}))
	require.Equal(t, 1, deadCount())
	a = post("/ui/dead/drop", url.Values{"sel": {"crm/" + r.deadID}})
	require.Equal(t, http.StatusSeeOther, a.code)
	assert.Equal(t, 0, deadCount())
	assert.Contains(t, do(t, c, "GET", r.srv.URL+a.resp.Header.Get("Location"), nil).body, "Dropped 1 dead letter.")

	_, err := r.store.Ingest(t.Context(), bot, []event.Lead{leadtest.Lead(bot, event.KindAppointment, 9, time.Now())})
	require.NoError(t, err)
	p = leadtest.Pending(t, r.store, "crm")
	require.Len(t, p, 1)
	require.NoError(t, r.store.Record(t.Context(), []event.Outcome{{Delivery: p[0], Verdict: event.Dead, At: time.Now()}}))
	a = post("/ui/dead/replay", url.Values{"all": {"crm"}})
	require.Equal(t, http.StatusSeeOther, a.code)
	assert.Equal(t, 0, deadCount())
	assert.Len(t, leadtest.Pending(t, r.store, "crm"), 1)

	a = post("/ui/forwarders/slack/resume", url.Values{})
	require.Equal(t, http.StatusSeeOther, a.code)
	paused, err := r.store.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
	assert.Equal(t, []string{"slack"}, r.resumed, "the running dispatcher was told")
	assert.Contains(t, do(t, c, "GET", r.srv.URL+a.resp.Header.Get("Location"), nil).body, `Resumed forwarder &#34;slack&#34;`)
	a = post("/ui/forwarders/slack/resume", url.Values{})
	assert.Contains(t, do(t, c, "GET", r.srv.URL+a.resp.Header.Get("Location"), nil).body, "was not paused")
}

func TestFlashCannotBeForged(t *testing.T) {
	r := newRig(t, token)
	a := do(t, client(t), "GET", r.srv.URL+"/ui/?done=<script>alert(1)</script>&n=1", nil, "Authorization", "Bearer "+token)
	require.Equal(t, http.StatusOK, a.code)
	assert.NotContains(t, a.body, "<script>alert")
	assert.NotContains(t, a.body, `class="flash"`)
	b := do(t, client(t), "GET", r.srv.URL+"/ui/?done=resumed&f=<b>x</b>", nil, "Authorization", "Bearer "+token)
	assert.NotContains(t, b.body, "<b>x</b>")

	// A link cannot make the console claim an action nobody took, nor put words in its mouth.
	c := client(t)
	r.login(t, c)
	for _, link := range []string{"/ui/dead?done=replay&n=1000", "/ui/?done=resumed&f=crm", "/ui/?done=running&f=call+0800-FRAUD",
		"/ui/dead?done=drop&n=5&sig=" + strings.Repeat("0", 64)} {
		a := do(t, c, "GET", r.srv.URL+link, nil)
		require.Equal(t, http.StatusOK, a.code, link)
		assert.False(t, strings.Contains(a.body, `class="flash"`), link)
	}
	// The redirect after a real action carries the flash, for this session only.
	csrf := csrfOf(t, do(t, c, "GET", r.srv.URL+"/ui/dead", nil).body)
	done := do(t, c, "POST", r.srv.URL+"/ui/forwarders/slack/resume", url.Values{"csrf": {csrf}})
	require.Equal(t, http.StatusSeeOther, done.code)
	loc := done.resp.Header.Get("Location")
	assert.True(t, strings.Contains(do(t, c, "GET", r.srv.URL+loc, nil).body, `class="flash"`))
	other := client(t)
	r.login(t, other)
	assert.False(t, strings.Contains(do(t, other, "GET", r.srv.URL+loc, nil).body, `class="flash"`), "another session")
}

func TestOverviewPagesAThousandChatbotsFailingFirst(t *testing.T) {
	store := leadtest.OpenStore(t, dedupe.Options{})
	var bots []event.Chatbot
	for i := range 1000 {
		serial := fmt.Sprintf("%032x", i)
		bots = append(bots, event.Chatbot{Serial: serial, Name: fmt.Sprintf("bot %04d", i)})
		if i%100 == 7 { // the rest were never polled (a success would cost an fsync each)
			require.NoError(t, store.RecordPoll(t.Context(), serial, time.Now(), errors.New("leadlist: 500")))
		}
	}
	c := console.New(console.Options{Operator: &ops.Local{Store: store, Chatbots: bots}, Activity: store, Token: token})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	bearer := []string{"Authorization", "Bearer " + token}

	first := do(t, client(t), "GET", srv.URL+"/ui/", nil, bearer...)
	require.Equal(t, http.StatusOK, first.code)
	assert.Contains(t, first.body, "<b>10</b> of 1000 chatbots failing")
	assert.Contains(t, first.body, "990 not polled yet")
	assert.Equal(t, 50, strings.Count(first.body, `href="/ui/activity?chatbot=`))
	assert.Contains(t, first.body, "bot 0007")
	assert.Contains(t, first.body, "bot 0907", "the ten failing ones come first")
	assert.Contains(t, first.body, "page 1 of 20")
	assert.Contains(t, first.body, `href="/ui/?page=2"`)

	last := do(t, client(t), "GET", srv.URL+"/ui/?page=20", nil, bearer...)
	assert.Contains(t, last.body, "bot 0999")
	assert.Contains(t, last.body, "page 20 of 20")
	failing := do(t, client(t), "GET", srv.URL+"/ui/?state=failing&q=bot+09", nil, bearer...)
	assert.Contains(t, failing.body, "1 of 1000 chatbots shown")
	beyond := do(t, client(t), "GET", srv.URL+"/ui/?page=99", nil, bearer...)
	assert.Equal(t, http.StatusOK, beyond.code)
	assert.Contains(t, beyond.body, "No chatbot matches.")
}

func TestHostilePageNumbersAndForms(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	bearer := []string{"Authorization", "Bearer " + token}
	for _, path := range []string{"/ui/", "/ui/activity", "/ui/dead"} {
		for _, page := range []string{"9223372036854775807", "184467440737095517", "-3", "x"} {
			a := do(t, c, "GET", r.srv.URL+path+"?page="+page, nil, bearer...)
			assert.Equal(t, http.StatusOK, a.code, "%s page %s", path, page)
		}
	}
	// A form too large to be a real selection is refused, and changes nothing.
	huge := url.Values{"sel": {strings.Repeat("x", 2<<20) + "/id"}}
	a := do(t, c, "POST", r.srv.URL+"/ui/dead/drop", huge, bearer...)
	assert.Equal(t, http.StatusBadRequest, a.code)
	dl, err := r.store.DeadLetters(t.Context(), "")
	require.NoError(t, err)
	assert.Len(t, dl, 1)
	// A script resuming with the bearer token is sent where it asked.
	a = do(t, c, "POST", r.srv.URL+"/ui/forwarders/slack/resume", url.Values{"back": {"dead"}}, bearer...)
	assert.Equal(t, http.StatusSeeOther, a.code)
	assert.True(t, strings.HasPrefix(a.resp.Header.Get("Location"), "/ui/dead?"), a.resp.Header.Get("Location"))
}

// table is the body of the page's table with id id, to look at one table alone.
func table(t *testing.T, page, id string) string {
	t.Helper()
	i := strings.Index(page, `<table id="`+id+`">`)
	require.GreaterOrEqual(t, i, 0, "the page has table %s", id)
	j := strings.Index(page[i:], "</table>")
	require.Positive(t, j)
	return page[i : i+j]
}

func TestOverviewSumsUpAThousandChatbotsOverTwentyAccounts(t *testing.T) {
	store := leadtest.OpenStore(t, dedupe.Options{})
	var bots []event.Chatbot
	for i := range 1000 {
		serial := fmt.Sprintf("%032x", i)
		cb := event.Chatbot{Serial: serial, Name: fmt.Sprintf("bot %04d", i), Account: fmt.Sprintf("acct-%02d", i%20)}
		if i == 3 {
			cb.Interval = time.Hour // its own schedule
		}
		bots = append(bots, cb)
		// Every chatbot of acct-17 fails, one of acct-05 too; bot 0003 polled fine; the
		// rest were never polled.
		switch {
		case i%20 == 17:
			require.NoError(t, store.RecordPoll(t.Context(), serial, time.Now(), errors.New("leadlist: 401 Unauthorized")))
		case i == 5:
			require.NoError(t, store.RecordPoll(t.Context(), serial, time.Now(), errors.New("leadlist: 500")))
		case i == 3:
			require.NoError(t, store.RecordPoll(t.Context(), serial, time.Now(), nil))
		}
	}
	require.NoError(t, store.FlushPolls(t.Context()))
	c := console.New(console.Options{Operator: &ops.Local{Store: store, Chatbots: bots}, Activity: store, Token: token, PollInterval: time.Minute})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	bearer := []string{"Authorization", "Bearer " + token}

	o := do(t, client(t), "GET", srv.URL+"/ui/", nil, bearer...)
	require.Equal(t, http.StatusOK, o.code)
	assert.True(t, strings.Contains(o.body, "<b>51</b> of 1000 chatbots failing"))
	accounts := table(t, o.body, "accounts")
	assert.Equal(t, 20, strings.Count(accounts, "<tr class="), "a row per account")
	i17, i05, i00 := strings.Index(accounts, ">acct-17<"), strings.Index(accounts, ">acct-05<"), strings.Index(accounts, ">acct-00<")
	assert.True(t, 0 < i17 && i17 < i05 && i05 < i00, "the most failing account first, then the others failing, then the rest by name")
	assert.True(t, strings.Contains(accounts, `href="/ui/?account=acct-17&amp;state=failing"><span class="state failing">50 failing</span>`))
	chatbots := table(t, o.body, "chatbots")
	assert.Equal(t, perPageRows, strings.Count(chatbots, "<tr class="))
	assert.True(t, strings.Contains(chatbots, `<a href="/ui/?account=acct-05">acct-05</a>`), "each chatbot names its account")
	assert.True(t, strings.Contains(o.body, "page 1 of 20"))

	one := do(t, client(t), "GET", srv.URL+"/ui/?account=acct-03", nil, bearer...)
	require.Equal(t, http.StatusOK, one.code)
	assert.True(t, strings.Contains(one.body, "50 of 1000 chatbots shown (account acct-03)"))
	assert.False(t, strings.Contains(one.body, "page 1 of"), "one page")
	rows := table(t, one.body, "chatbots")
	assert.Equal(t, 50, strings.Count(rows, "<tr class="))
	assert.Equal(t, 50, strings.Count(rows, ">acct-03</a>"))
	assert.True(t, strings.Contains(rows, "in 59m"), "bot 0003 polls hourly, its own interval")
	assert.True(t, strings.Contains(one.body, `<option value="acct-03" selected>`))

	failing := do(t, client(t), "GET", srv.URL+"/ui/?account=acct-17&state=failing&page=2", nil, bearer...)
	assert.True(t, strings.Contains(failing.body, "50 of 1000 chatbots shown (account acct-17)"))
	assert.Equal(t, 0, strings.Count(table(t, failing.body, "chatbots"), "<tr class="), "50 fit on page 1")

	for bad, want := range map[string]string{
		"account=acct-99":                      `account=&#34;acct-99&#34;: no configured chatbot`,
		"account=" + strings.Repeat("x", 5000): `account=&#34;xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…&#34;`,
		"state=broken":                         `state=&#34;broken&#34;: want failing, never or ok`,
	} {
		a := do(t, client(t), "GET", srv.URL+"/ui/?"+bad, nil, bearer...)
		assert.Equal(t, http.StatusBadRequest, a.code, bad)
		assert.True(t, strings.Contains(a.body, want), "%s: %s", cut(bad), cut(a.body))
	}
}

// perPageRows is how many rows a console table shows on a page.
const perPageRows = 50

func cut(s string) string { return s[:min(len(s), 200)] }

func TestActivityByAccountWithEachAttemptsDuration(t *testing.T) {
	r := newRig(t, token)
	c := client(t)
	bearer := []string{"Authorization", "Bearer " + token}

	all := do(t, c, "GET", r.srv.URL+"/ui/activity", nil, bearer...)
	require.Equal(t, http.StatusOK, all.code)
	rows := table(t, all.body, "activity")
	assert.Equal(t, 2, strings.Count(rows, "<td>42ms</td>"), "the delivered attempts took 42ms")
	assert.Equal(t, 3, strings.Count(rows, "<td>agency</td>"))
	assert.True(t, strings.Contains(all.body, `<option value="default" >default</option>`), "every account to filter by")

	agency := do(t, c, "GET", r.srv.URL+"/ui/activity?account=agency&outcome=delivered", nil, bearer...)
	require.Equal(t, http.StatusOK, agency.code)
	assert.Equal(t, 2, strings.Count(table(t, agency.body, "activity"), `href="/ui/events/`))
	none := do(t, c, "GET", r.srv.URL+"/ui/activity?account=default", nil, bearer...)
	assert.True(t, strings.Contains(none.body, "Nothing recorded that matches"))
	gone := do(t, c, "GET", r.srv.URL+"/ui/activity?account=removed-from-config", nil, bearer...)
	require.Equal(t, http.StatusOK, gone.code, "an account no longer configured may still have attempts in the log")
	assert.True(t, strings.Contains(gone.body, `<option value="removed-from-config" selected>`))

	ev := do(t, c, "GET", r.srv.URL+"/ui/events/"+r.leads[0].ID(), nil, bearer...)
	require.Equal(t, http.StatusOK, ev.code)
	assert.True(t, strings.Contains(ev.body, `of account <a href="/ui/activity?account=agency">agency</a>`))
	assert.True(t, strings.Contains(table(t, ev.body, "attempts"), "<td>42ms</td>"))
}

func TestHostileLeadDataAndIDsStayText(t *testing.T) {
	store := leadtest.OpenStore(t, dedupe.Options{Initial: dedupe.InitialEmit, Route: leadtest.RouteTo("crm")})
	const account = `"><script>alert(3)</script>`
	l := leadtest.Lead(bot, event.KindLead, 1, time.Now().Add(-time.Minute))
	l.Name, l.Content, l.URI = "<script>alert(1)</script>", `" onmouseover="alert(1)`, "javascript:alert(1)"
	l.ChatbotName, l.Email, l.Account = "<img src=x onerror=alert(1)>", `x@y.z"><svg onload=alert(1)>`, account
	_, err := store.Ingest(t.Context(), bot, []event.Lead{l})
	require.NoError(t, err)
	d := leadtest.Pending(t, store, "crm")[0]
	d.Attempts, d.LastError = 1, "webhook crm: 400: <script>alert(4)</script>"
	require.NoError(t, store.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Dead, At: time.Now()}}))
	require.NoError(t, store.Pause(t.Context(), "slack", `<svg onload=alert(5)>`, "hash"))
	require.NoError(t, store.RecordPoll(t.Context(), bot, time.Now(), errors.New(`<b onmouseover=alert(6)>`)))
	require.NoError(t, store.FlushPolls(t.Context()))
	c := console.New(console.Options{Token: token, Activity: store, Operator: &ops.Local{Store: store,
		Chatbots:   []event.Chatbot{{Serial: bot, Name: "<img src=x onerror=alert(2)>", Account: account}},
		Forwarders: []ops.ForwarderInfo{{Name: "crm", Type: "webhook"}, {Name: "slack", Type: "slack"}}}})
	srv := httptest.NewServer(c)
	t.Cleanup(srv.Close)
	bearer := []string{"Authorization", "Bearer " + token}

	for _, path := range []string{"/ui/", "/ui/activity", "/ui/dead", "/ui/events/" + l.ID(),
		"/ui/activity?account=" + url.QueryEscape(account), "/ui/?account=" + url.QueryEscape(account)} {
		a := do(t, client(t), "GET", srv.URL+path, nil, bearer...)
		require.Equal(t, http.StatusOK, a.code, path)
		for _, raw := range []string{"<script>alert", "<img src=x", "<svg onload", "<b onmouseover", `" onmouseover="`,
			`href="javascript:`, `"><script>`} {
			assert.False(t, strings.Contains(a.body, raw), "%s shows %s unescaped", path, raw)
		}
	}
	ev := do(t, client(t), "GET", srv.URL+"/ui/events/"+l.ID(), nil, bearer...)
	assert.True(t, strings.Contains(ev.body, "&#34;uri&#34;: &#34;javascript:alert(1)&#34;"), "the uri is shown as text, not as a link")

	for _, id := range []string{"..%2F..%2Fdead", "%3Cscript%3Ealert(1)%3C%2Fscript%3E", strings.Repeat("a", 100_000), l.ID() + "%00"} {
		a := do(t, client(t), "GET", srv.URL+"/ui/events/"+id, nil, bearer...)
		assert.Equal(t, http.StatusNotFound, a.code, cut(id))
		assert.False(t, strings.Contains(a.body, "<script>alert"), cut(id))
		assert.Less(t, len(a.body), 10_000, "the id is not echoed back")
	}
	huge := do(t, client(t), "GET", srv.URL+"/ui/?q="+strings.Repeat("%3Cscript%3E", 20_000), nil, bearer...)
	assert.Equal(t, http.StatusOK, huge.code)
	assert.True(t, strings.Contains(huge.body, "No chatbot matches."))
	assert.False(t, strings.Contains(huge.body, "<script>"))
}
