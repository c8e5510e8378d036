package ops

import (
	"bytes"
	"context"
	"crypto/hmac"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Client is the Backend over a running daemon's admin API (see NewServer). With Token
// set, every request first has the daemon prove that it holds the token (see auth.go)
// and then carries an HMAC of a single-use daemon nonce, never the token itself; a peer
// that fails the proof gets nothing and the call fails with ErrUnproven.
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:9108
	HTTP    *http.Client // nil → a client with a 30s timeout
	Token   string       // the daemon's http.admin_token; "" when it has none
}

var _ Backend = (*Client)(nil)

// dialTimeout bounds Dial's probe of the daemon.
const dialTimeout = time.Second

// maxAnswerBytes caps what the client reads of one answer (a long dead-letter list fits).
const maxAnswerBytes = 256 << 20

// defaultClient is used when Client.HTTP is nil.
var defaultClient = &http.Client{Timeout: 30 * time.Second}

// Dial returns a Client for the daemon listening on addr (http.listen, host:port; an
// empty or wildcard host means this machine's loopback) once its /healthz answered
// within about a second and, with token set (http.admin_token, "" for none), it proved
// that it holds the token. An error wrapping ErrUnproven means something answers on addr
// that is not a daemon of this token: the caller must not fall back to the store, since
// a process it cannot trust holds the daemon's address. Any other error says that no
// daemon answers; the caller may then open the store itself.
func Dial(ctx context.Context, addr, token string) (*Client, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	c := &Client{BaseURL: "http://" + net.JoinHostPort(host, port), HTTP: defaultClient, Token: token}
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	var h struct {
		Status string `json:"status"`
	}
	// The probe carries no credentials: the peer has proved nothing yet.
	if err := c.send(ctx, c.httpClient(), http.MethodGet, "/healthz", nil, "", &h); err != nil {
		return nil, fmt.Errorf("no leadbridge daemon answers on %s: %w", c.BaseURL, err)
	}
	if h.Status != "ok" {
		return nil, fmt.Errorf("no leadbridge daemon answers on %s: /healthz said %q", c.BaseURL, h.Status)
	}
	if token != "" {
		if _, _, err := c.prove(ctx); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// Status asks the daemon for its status (GET /admin/status).
func (c *Client) Status(ctx context.Context) (Status, error) {
	var s Status
	err := c.do(ctx, http.MethodGet, "/admin/status", nil, &s)
	return s, err
}

// DeadLetters lists dead letters (GET /admin/dlq).
func (c *Client) DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error) {
	var dls []event.DeadLetter
	err := c.do(ctx, http.MethodGet, "/admin/dlq", forwarderQuery(forwarder), &dls)
	return dls, err
}

// Replay puts dead letters back in the daemon's outbox (POST /admin/dlq/replay).
func (c *Client) Replay(ctx context.Context, forwarder, id string) (int, error) {
	return c.dlqChange(ctx, "/admin/dlq/replay", forwarder, id)
}

// Drop deletes dead letters (POST /admin/dlq/drop).
func (c *Client) Drop(ctx context.Context, forwarder, id string) (int, error) {
	return c.dlqChange(ctx, "/admin/dlq/drop", forwarder, id)
}

func (c *Client) dlqChange(ctx context.Context, path, forwarder, id string) (int, error) {
	q := forwarderQuery(forwarder)
	if id != "" {
		q.Set("id", id)
	} else {
		q.Set("all", "1")
	}
	var out struct {
		Count int `json:"count"`
	}
	err := c.do(ctx, http.MethodPost, path, q, &out)
	return out.Count, err
}

// Resume unpauses a forwarder (POST /admin/forwarders/{name}/resume).
func (c *Client) Resume(ctx context.Context, forwarder string) (bool, error) {
	var out struct {
		Resumed bool `json:"resumed"`
	}
	err := c.do(ctx, http.MethodPost, "/admin/forwarders/"+url.PathEscape(forwarder)+"/resume", nil, &out)
	return out.Resumed, err
}

// MovePending moves a stranded forwarder's deliveries (POST /admin/outbox/move).
func (c *Client) MovePending(ctx context.Context, from, to string) (OutboxMove, error) {
	var m OutboxMove
	err := c.do(ctx, http.MethodPost, "/admin/outbox/move", url.Values{"from": {from}, "to": {to}}, &m)
	return m, err
}

// DropPending deletes a stranded forwarder's deliveries (POST /admin/outbox/drop).
func (c *Client) DropPending(ctx context.Context, forwarder string) (int, error) {
	var out struct {
		Count int `json:"count"`
	}
	err := c.do(ctx, http.MethodPost, "/admin/outbox/drop", url.Values{"forwarder": {forwarder}}, &out)
	return out.Count, err
}

// DryBackfill asks the daemon what a backfill of the leads would queue (POST /admin/ingest/dry-run).
func (c *Client) DryBackfill(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error) {
	q := url.Values{"chatbot": {serial}, "only": o.Only}
	if o.Resend {
		q.Set("resend", "1")
	}
	body, err := json.Marshal(leads)
	if err != nil {
		return event.Ingested{}, fmt.Errorf("leadbridge daemon POST /admin/ingest/dry-run: %w", err)
	}
	var res event.Ingested
	err = c.doBody(ctx, http.MethodPost, "/admin/ingest/dry-run", q, body, &res)
	return res, err
}

func forwarderQuery(forwarder string) url.Values {
	q := url.Values{}
	if forwarder != "" {
		q.Set("forwarder", forwarder)
	}
	return q
}

// do calls one endpoint with the daemon's proof and the client's authorization when
// Token is set, and decodes its JSON answer into out.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	return c.doBody(ctx, method, path, q, nil, out)
}

// doBody is do with a JSON request body (nil for none).
func (c *Client) doBody(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	uri := path
	if len(q) > 0 {
		uri += "?" + q.Encode()
	}
	if c.Token == "" {
		return c.send(ctx, c.httpClient(), method, uri, body, "", out)
	}
	sn, peer, err := c.prove(ctx)
	if err != nil {
		return err
	}
	auth := authScheme + " " + sn + ":" + mac(c.Token, labelClient, sn, method, uri)
	return c.send(ctx, c.pinned(peer), method, uri, body, auth, out)
}

// httpClient is c.HTTP (or the default) made never to follow a redirect: an answer that
// sends the request elsewhere is a failure, never a second hop whose peer would then
// stand in for the address dialled.
func (c *Client) httpClient() *http.Client {
	hc := *defaultClient
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &hc
}

// pinned is httpClient on a fresh connection to exactly peer, the address that proved it
// holds the token, so that the authorized request cannot reach another process (one on
// another address that the host name also resolves to, say).
func (c *Client) pinned(peer string) *http.Client {
	hc := c.httpClient()
	dialer := &net.Dialer{Timeout: dialTimeout}
	hc.Transport = &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, peer)
		},
		DisableKeepAlives: true,
	}
	return hc
}

// prove runs the challenge (steps 1 to 3 in auth.go) and returns the daemon's nonce for
// one request and the address that proved itself. Its error wraps ErrUnproven unless the
// peer could not be reached at all.
func (c *Client) prove(ctx context.Context) (nonce, peer string, err error) {
	cn := newNonce()
	var peers []string
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		peers = append(peers, info.Conn.RemoteAddr().String())
	}}
	var ans challengeAnswer
	err = c.send(httptrace.WithClientTrace(ctx, trace), c.httpClient(), http.MethodPost, "/admin/challenge?nonce="+cn, nil, "", &ans)
	var reach *url.Error
	switch {
	case errors.As(err, &reach):
		return "", "", fmt.Errorf("leadbridge daemon on %s: %w", c.BaseURL, err)
	case err != nil:
		return "", "", fmt.Errorf("the process on %s is not this config's leadbridge daemon: %w (%v); nothing was sent to it", c.BaseURL, ErrUnproven, err)
	case !isNonce(ans.Nonce) || len(peers) != 1 ||
		!hmac.Equal([]byte(ans.Proof), []byte(mac(c.Token, labelDaemon, cn, ans.Nonce, peers[0]))):
		return "", "", fmt.Errorf("the process on %s is not this config's leadbridge daemon: %w (wrong proof: another process holds the address, or the daemon runs with another admin_token); nothing was sent to it", c.BaseURL, ErrUnproven)
	}
	return ans.Nonce, peers[0], nil
}

// send makes one request (auth is the Authorization header, "" for none) and decodes its
// JSON answer into out. Its errors name the endpoint and carry the daemon's message.
func (c *Client) send(ctx context.Context, hc *http.Client, method, uri string, body []byte, auth string, out any) error {
	path, _, _ := strings.Cut(uri, "?")
	endpoint := method + " " + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+uri, rd)
	if err != nil {
		return fmt.Errorf("leadbridge daemon %s: %w", endpoint, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("leadbridge daemon %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var rejected rejectedBody
		if resp.StatusCode == http.StatusUnprocessableEntity && json.Unmarshal(raw, &rejected) == nil && len(rejected.Problems) > 0 {
			return &ConfigRejectedError{Problems: rejected.Problems}
		}
		var e errorBody
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("leadbridge daemon %s: %s (HTTP %d)", endpoint, cut(msg, 300), resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(out); err != nil {
		return fmt.Errorf("leadbridge daemon %s: decode the answer: %w", endpoint, err)
	}
	return nil
}
