package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Client is the Backend over a running daemon's admin API (see NewServer).
type Client struct {
	BaseURL string       // e.g. http://127.0.0.1:9108
	HTTP    *http.Client // nil → a client with a 30s timeout
	Token   string       // the daemon's http.admin_token, sent as a bearer token when set
}

var _ Backend = (*Client)(nil)

// dialTimeout bounds Dial's probe of the daemon.
const dialTimeout = time.Second

// defaultClient is used when Client.HTTP is nil.
var defaultClient = &http.Client{Timeout: 30 * time.Second}

// Dial returns a Client for the daemon listening on addr (http.listen, host:port; an
// empty or wildcard host means this machine's loopback) once its /healthz answered
// within about a second; token is the daemon's http.admin_token ("" for none). The error
// says that no daemon answers; the caller may then open the store itself.
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
	if err := c.do(ctx, http.MethodGet, "/healthz", nil, &h); err != nil {
		return nil, fmt.Errorf("no leadbridge daemon answers on %s: %w", c.BaseURL, err)
	}
	if h.Status != "ok" {
		return nil, fmt.Errorf("no leadbridge daemon answers on %s: /healthz said %q", c.BaseURL, h.Status)
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

func forwarderQuery(forwarder string) url.Values {
	q := url.Values{}
	if forwarder != "" {
		q.Set("forwarder", forwarder)
	}
	return q
}

// do calls one endpoint and decodes its JSON answer into out. Its errors name the
// endpoint and carry the daemon's message.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, out any) error {
	endpoint := method + " " + path
	u := strings.TrimRight(c.BaseURL, "/") + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return fmt.Errorf("leadbridge daemon %s: %w", endpoint, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("leadbridge daemon %s: %w", endpoint, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var e errorBody
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			msg = e.Error
		}
		return fmt.Errorf("leadbridge daemon %s: %s (HTTP %d)", endpoint, msg, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("leadbridge daemon %s: decode the answer: %w", endpoint, err)
	}
	return nil
}
