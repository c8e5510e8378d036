package ops

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// The admin API's mutual proof of the shared http.admin_token, so that the operator
// commands never hand the token (or anything replayable) to a process that is not the
// daemon, e.g. one squatting on http.listen while the daemon is stopped:
//
//  1. The client sends POST /admin/challenge?nonce=C, C being 32 random bytes in hex.
//     The endpoint needs no token.
//  2. The daemon answers {"nonce":S,"proof":P}: S is 32 fresh random bytes in hex, which
//     it keeps for challengeTTL, and P = HMAC-SHA256(token, labelDaemon|C|S|A), where A is
//     the daemon's end of the connection (host:port as the client dialled it).
//  3. The client checks P with hmac.Equal against its own end's view of A. Only then does
//     it send the request, with "Authorization: LeadBridge-HMAC S:M" where
//     M = HMAC-SHA256(token, labelClient|S|method|request URI).
//  4. The daemon accepts S once (it is forgotten on use) and checks M.
//
// The two MACs carry different labels, so neither can be reflected as the other; A binds
// the daemon's proof to the socket the client dialled, so an impostor relaying a
// challenge to a daemon on another address gets a proof the client rejects; S is issued
// by the real daemon and used once, so nothing an impostor sees can be replayed to it.
const (
	authScheme   = "LeadBridge-HMAC"
	labelDaemon  = "leadbridge admin v1: daemon proof"
	labelClient  = "leadbridge admin v1: client request"
	challengeTTL = time.Minute
	// maxChallenges bounds the outstanding challenges the daemon keeps.
	maxChallenges = 256
)

// ErrUnproven is returned (wrapped) by Dial and by Client's methods when the process on
// the admin address did not prove that it holds the admin token. Nothing carrying the
// token was sent to it.
var ErrUnproven = errors.New("it did not prove that it holds http.admin_token")

// mac is HMAC-SHA256(token, the parts joined by NUL), in hex.
func mac(token string, parts ...string) string {
	h := hmac.New(sha256.New, []byte(token))
	h.Write([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h.Sum(nil))
}

// newNonce returns 32 random bytes in hex.
func newNonce() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand)
	return hex.EncodeToString(b)
}

// isNonce reports whether s is 32 bytes in lower-case hex.
func isNonce(s string) bool {
	if len(s) != 64 {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && strings.ToLower(s) == s
}

// challenges are the daemon's outstanding server nonces, each usable once until it
// expires.
type challenges struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[string]time.Time // nonce → expiry
}

func newChallenges() *challenges {
	return &challenges{now: time.Now, m: map[string]time.Time{}}
}

// issue returns a fresh nonce. When maxChallenges are outstanding it forgets the oldest:
// a client uses its nonce within milliseconds, so a local process flooding the endpoint
// cannot lock the operator commands out, and the daemon's memory stays bounded.
func (c *challenges) issue() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	oldest := ""
	for n, exp := range c.m {
		if !now.Before(exp) {
			delete(c.m, n)
		} else if oldest == "" || exp.Before(c.m[oldest]) {
			oldest = n
		}
	}
	if len(c.m) >= maxChallenges {
		delete(c.m, oldest)
	}
	n := newNonce()
	c.m[n] = now.Add(challengeTTL)
	return n
}

// take consumes nonce n and reports whether it was outstanding and unexpired.
func (c *challenges) take(n string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	exp, ok := c.m[n]
	delete(c.m, n)
	return ok && c.now().Before(exp)
}

// localAddr is the daemon's end of r's connection, host:port.
func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

// challenge answers step 2 of the proof.
func (g *guard) challenge(w http.ResponseWriter, r *http.Request) {
	if g.token == "" {
		writeError(w, http.StatusNotFound, "this daemon has no http.admin_token, so it cannot prove it holds one")
		return
	}
	cn := r.URL.Query().Get("nonce")
	if !isNonce(cn) {
		writeError(w, http.StatusBadRequest, "nonce: want 64 lower-case hex digits (32 random bytes)")
		return
	}
	sn := g.challenges.issue()
	writeJSON(w, http.StatusOK, challengeAnswer{Nonce: sn, Proof: mac(g.token, labelDaemon, cn, sn, localAddr(r))})
}

// challengeAnswer is the JSON answer of POST /admin/challenge.
type challengeAnswer struct {
	Nonce string `json:"nonce"`
	Proof string `json:"proof"`
}

// authorized reports whether r carries a valid LeadBridge-HMAC authorization (consuming
// its nonce) or, for scripts, the bearer token itself.
func (g *guard) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if rest, ok := strings.CutPrefix(h, authScheme+" "); ok {
		sn, m, ok := strings.Cut(rest, ":")
		if !ok || !isNonce(sn) || !g.challenges.take(sn) {
			return false
		}
		want := mac(g.token, labelClient, sn, r.Method, r.URL.RequestURI())
		return hmac.Equal([]byte(m), []byte(want))
	}
	return hmac.Equal([]byte(h), []byte("Bearer "+g.token))
}
