package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/ops"
	"golang.org/x/time/rate"
)

// How the console knows who is asking:
//
//   - Without a token configured it answers only same-machine requests to a loopback host
//     name (ops.FromLoopback), as the admin API does; the first page sets a session
//     cookie that only serves the CSRF token.
//   - With a token it answers any address, but only to a request carrying
//     "Authorization: Bearer <token>" or the session cookie the login form sets once the
//     token was typed. The cookie holds a random session id, never the token; the
//     console keeps the ids' SHA-256, so a lookup reveals nothing by its timing.
//
// Wrong tokens, typed in the form or sent in the bearer header, are answered at most one
// a second (bursts of 5) per client address (an IPv6 /64), and beyond that refused with
// 429 before the token is even compared, so that it cannot be guessed by trying. The
// allowance is per address so that an attacker cannot lock the operator out by guessing
// from elsewhere; a right token never uses it up. Behind a reverse proxy every client
// has the proxy's address, so the allowance is shared.
//
// Every POST but the login must carry the CSRF token of its session (a hidden form
// field, an HMAC of the session id under a key made at start), unless it authenticated
// with the bearer header, which a browser never sends by itself. Cross-origin browser
// requests are refused outright (http.CrossOriginProtection), as by the admin API.
const (
	cookieName  = "leadbridge_console"
	sessionTTL  = 12 * time.Hour
	maxSessions = 1024
	csrfField   = "csrf"
	// maxForm bounds a form's body: a selection of thousands of dead letters fits.
	maxForm = 1 << 20
	// maxClients bounds the wrong-token allowances kept; past it the idle ones go first.
	maxClients = 4096
)

// guesses are the wrong-token allowances of the console's clients, by address.
type guesses struct {
	mu sync.Mutex
	m  map[string]*allowance
}

// allowance is one client's: the limiter that wrong tokens use up, and the attempts
// being compared now, each of which may turn out wrong.
type allowance struct {
	lim     *rate.Limiter
	pending int
}

func newGuesses() *guesses { return &guesses{m: map[string]*allowance{}} }

// clientOf is the address whose allowance r uses: its IP, or for IPv6 its /64, which
// one host usually holds whole.
func clientOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	switch {
	case ip == nil:
		return host
	case ip.To4() != nil:
		return ip.To4().String()
	}
	return ip.Mask(net.CIDRMask(64, 128)).String()
}

// try starts an attempt of r's client: ok is false when its allowance cannot take one
// more wrong token (then retry says in how many seconds to try again); otherwise the
// caller compares the token and calls done with whether it was wrong.
func (g *guesses) try(r *http.Request) (done func(wrong bool), retry int, ok bool) {
	key := clientOf(r)
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.m[key]
	if a == nil {
		if len(g.m) >= maxClients {
			g.evict()
		}
		a = &allowance{lim: rate.NewLimiter(1, 5)}
		g.m[key] = a
	}
	if left := a.lim.Tokens() - float64(a.pending); left < 1 {
		return nil, int(1-left) + 1, false
	}
	a.pending++
	return func(wrong bool) {
		g.mu.Lock()
		defer g.mu.Unlock()
		a.pending--
		if wrong {
			a.lim.Allow()
		}
	}, 0, true
}

// evict forgets the allowances of idle clients (a new one is the same) and, if that was
// not enough, any but those in use.
func (g *guesses) evict() {
	for k, a := range g.m {
		if a.pending == 0 && a.lim.Tokens() >= float64(a.lim.Burst()) {
			delete(g.m, k)
		}
	}
	for k, a := range g.m {
		if len(g.m) < maxClients {
			return
		}
		if a.pending == 0 {
			delete(g.m, k)
		}
	}
}

// tooMany refuses a request whose client has used up its wrong-token allowance.
func (c *Console) tooMany(w http.ResponseWriter, retry int) {
	w.Header().Set("Retry-After", strconv.Itoa(retry))
	c.plain(w, http.StatusTooManyRequests, "Too many wrong tokens from this address; wait a few seconds and try again.")
}

// sessions are the console's login sessions, by the SHA-256 of their id.
type sessions struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[[32]byte]time.Time // → expiry
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, m: map[[32]byte]time.Time{}}
}

// create starts a session and returns its id (32 random bytes in hex). At maxSessions it
// forgets the expired ones and then the one closest to expiring.
func (s *sessions) create() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	id := hex.EncodeToString(b)
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if len(s.m) >= maxSessions {
		var oldest [32]byte
		var oldestExp time.Time
		for k, exp := range s.m {
			if !now.Before(exp) {
				delete(s.m, k)
			} else if oldestExp.IsZero() || exp.Before(oldestExp) {
				oldest, oldestExp = k, exp
			}
		}
		if len(s.m) >= maxSessions {
			delete(s.m, oldest)
		}
	}
	s.m[sha256.Sum256([]byte(id))] = now.Add(sessionTTL)
	return id
}

// valid reports whether id is a live session.
func (s *sessions) valid(id string) bool {
	if id == "" {
		return false
	}
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.m[k]
	if ok && !s.now().Before(exp) {
		delete(s.m, k)
		return false
	}
	return ok
}

// end forgets session id.
func (s *sessions) end(id string) {
	k := sha256.Sum256([]byte(id))
	s.mu.Lock()
	delete(s.m, k)
	s.mu.Unlock()
}

// who is how a request authenticated: by the bearer header, or by the session it carries
// (a login session, or without a token the anonymous one of a loopback browser).
type who struct {
	bearer  bool
	session string
}

type whoKey struct{}

func whoOf(r *http.Request) who {
	w, _ := r.Context().Value(whoKey{}).(who)
	return w
}

// equalSecret compares two secrets in constant time, their lengths included.
func equalSecret(a, b string) bool {
	ha, hb := sha256.Sum256([]byte(a)), sha256.Sum256([]byte(b))
	return subtle.ConstantTimeCompare(ha[:], hb[:]) == 1
}

// csrfToken is the CSRF token of session id.
func (c *Console) csrfToken(session string) string {
	if session == "" {
		return ""
	}
	h := hmac.New(sha256.New, c.csrfKey)
	h.Write([]byte("leadbridge console csrf v1\x00" + session))
	return hex.EncodeToString(h.Sum(nil))
}

// setCookie sets (or with maxAge < 0 clears) the session cookie: HttpOnly, SameSite
// Strict, for /ui/ only, Secure when the request came over TLS, here or to the reverse
// proxy in front (X-Forwarded-Proto: https). A forged header can only make the cookie
// stricter: a browser that did not use TLS then does not send it.
func setCookie(w http.ResponseWriter, r *http.Request, value string, maxAge int) {
	secure := r.TLS != nil || strings.EqualFold(strings.TrimSpace(r.Header.Get("X-Forwarded-Proto")), "https")
	http.SetCookie(w, &http.Cookie{Name: cookieName, Value: value, Path: "/ui/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: secure})
}

// sessionOf is the live session id r's cookie carries, "" if none.
func (c *Console) sessionOf(r *http.Request) string {
	ck, err := r.Cookie(cookieName)
	if err != nil || !c.sessions.valid(ck.Value) {
		return ""
	}
	return ck.Value
}

// ServeHTTP applies the checks above, then serves the page.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "+
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	if c.token == "" && !ops.FromLoopback(r) {
		c.plain(w, http.StatusForbidden, "The console has no http.admin_token, so it answers only on this machine "+
			"(a loopback address and host name). Set http.admin_token to open it to other machines.")
		return
	}
	if err := c.csrf.Check(r); err != nil {
		c.plain(w, http.StatusForbidden, "The console refuses cross-origin browser requests.")
		return
	}
	switch r.URL.Path {
	case "/ui/app.js", "/ui/style.css":
		c.mux.ServeHTTP(w, r)
		return
	case "/ui/login":
		c.login(w, r)
		return
	}

	var id who
	switch auth := r.Header.Get("Authorization"); {
	case c.token == "":
		id.session = c.sessionOf(r)
		if id.session == "" {
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				c.plain(w, http.StatusForbidden, "CSRF check failed: no console session. Reload the page and try again.")
				return
			}
			id.session = c.sessions.create()
			setCookie(w, r, id.session, int(sessionTTL/time.Second))
		}
	case auth != "":
		done, retry, ok := c.guesses.try(r)
		if !ok {
			c.tooMany(w, retry)
			return
		}
		right := strings.HasPrefix(auth, "Bearer ") && equalSecret(auth, "Bearer "+c.token)
		done(!right)
		if !right {
			c.log.Warn("console request refused: wrong bearer token", "remote", r.RemoteAddr)
			c.plain(w, http.StatusUnauthorized, "Authorization: want Bearer and the daemon's http.admin_token.")
			return
		}
		id.bearer = true
	default:
		id.session = c.sessionOf(r)
		if id.session == "" {
			if r.Method == http.MethodGet || r.Method == http.MethodHead {
				http.Redirect(w, r, "/ui/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.plain(w, http.StatusUnauthorized, "Log in first: the console wants the daemon's http.admin_token.")
			return
		}
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxForm)
		if err := r.ParseForm(); err != nil {
			c.plain(w, http.StatusBadRequest, "The form could not be read: "+err.Error())
			return
		}
	}
	if r.Method == http.MethodPost && !id.bearer {
		if !hmac.Equal([]byte(r.PostFormValue(csrfField)), []byte(c.csrfToken(id.session))) {
			c.plain(w, http.StatusForbidden, "CSRF check failed: the form is stale or came from elsewhere. Reload the page and try again.")
			return
		}
	}
	c.mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), whoKey{}, id)))
}

// login serves the login form and takes the token from it.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxForm)
	next := safeNext(r.FormValue("next"))
	if c.token == "" {
		http.Redirect(w, r, next, http.StatusSeeOther)
		return
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		c.render(w, r, http.StatusOK, "login", "Log in", loginPage{Next: next})
	case http.MethodPost:
		done, retry, ok := c.guesses.try(r)
		if !ok {
			w.Header().Set("Retry-After", strconv.Itoa(retry))
			c.render(w, r, http.StatusTooManyRequests, "login", "Log in", loginPage{Next: next,
				Error: "Too many wrong tokens from this address; wait a few seconds and try again."})
			return
		}
		right := equalSecret(r.PostFormValue("token"), c.token)
		done(!right)
		if !right {
			c.log.Warn("console login refused: wrong token", "remote", r.RemoteAddr)
			c.render(w, r, http.StatusUnauthorized, "login", "Log in", loginPage{Next: next,
				Error: "That is not the daemon's http.admin_token."})
			return
		}
		if old := c.sessionOf(r); old != "" {
			c.sessions.end(old)
		}
		setCookie(w, r, c.sessions.create(), int(sessionTTL/time.Second))
		c.log.Info("console login", "remote", r.RemoteAddr)
		http.Redirect(w, r, next, http.StatusSeeOther)
	default:
		w.Header().Set("Allow", "GET, POST")
		c.plain(w, http.StatusMethodNotAllowed, "GET or POST /ui/login")
	}
}

// logout ends the session.
func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	if s := whoOf(r).session; s != "" {
		c.sessions.end(s)
	}
	setCookie(w, r, "", -1)
	http.Redirect(w, r, "/ui/login", http.StatusSeeOther)
}

// safeNext is where to go after logging in: a page of the console, never another site
// nor, by dot segments (plain, escaped, or split by a tab that browsers drop), another
// path of this one; anything else is the overview.
func safeNext(next string) string {
	p, _, _ := strings.Cut(next, "?")
	clean := path.Clean(p)
	if strings.HasSuffix(p, "/") {
		clean += "/"
	}
	if p != clean || !strings.HasPrefix(p, "/ui/") || strings.HasPrefix(p, "/ui/login") || strings.Contains(p, "%") ||
		strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return "/ui/"
	}
	return next
}
