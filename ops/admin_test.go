package ops_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

// daemon is a store as `run` holds it, with the admin API served over it.
type daemon struct {
	store   *dedupe.Store
	handler http.Handler
	url     string
	client  *ops.Client
	dead    []event.Delivery // bus deliveries dead-lettered by the setup, in order

	mu      sync.Mutex
	resumed []string // names the dispatcher was asked to resume
}

// startDaemon: 3 records of serialA went to bus and to "old" (no longer configured);
// two bus deliveries failed with HTTP 400 and are dead letters.
func startDaemon(t *testing.T) *daemon {
	t.Helper()
	d := &daemon{store: openStore(t, "bus", "old")}
	ingest(t, d.store, 3)
	require.NoError(t, d.store.RecordPoll(t.Context(), serialA, time.Now().Add(-2*time.Minute), nil))
	bus := leadtest.Pending(t, d.store, "bus")
	d.dead = []event.Delivery{deadLetter(t, d.store, bus[0], 1), deadLetter(t, d.store, bus[1], 1)}

	local := &ops.Local{
		Store: d.store,
		Resumer: func(name string) bool {
			d.mu.Lock()
			defer d.mu.Unlock()
			d.resumed = append(d.resumed, name)
			return true
		},
		Chatbots:   []event.Chatbot{{Serial: serialA, Name: chatbotName}},
		Forwarders: []ops.ForwarderInfo{{Name: "bus", Type: "webhook"}, {Name: "crm", Type: "slack"}},
		Version:    "1.2.3",
	}
	health := ops.NewHealth(d.store, local.Chatbots, local.Forwarders, time.Minute, nil)
	d.handler = ops.NewServer(ops.NewMetrics("1.2.3", d.store), health, local, "", nil)
	srv := httptest.NewServer(d.handler)
	t.Cleanup(srv.Close)
	d.url = srv.URL

	c, err := ops.Dial(t.Context(), srv.Listener.Addr().String(), "")
	require.NoError(t, err)
	d.client = c
	return d
}

func deadIDs(t *testing.T, b ops.Backend, forwarder string) []string {
	t.Helper()
	dls, err := b.DeadLetters(t.Context(), forwarder)
	require.NoError(t, err)
	var ids []string
	for _, dl := range dls {
		ids = append(ids, dl.Event.ID)
	}
	return ids
}

// TestAdminStatusSeesUnflushedPolls: the store writes poll bookkeeping in batches; the
// status an operator asks the running daemon for still shows the latest poll.
func TestAdminStatusSeesUnflushedPolls(t *testing.T) {
	d := startDaemon(t)
	states, err := d.store.Chatbots(t.Context())
	require.NoError(t, err)
	ok := states[serialA].LastOK
	failed := ok.Add(time.Minute)
	require.NoError(t, d.store.RecordPoll(t.Context(), serialA, failed, errors.New("leadlist: HTTP 503")))

	s, err := d.client.Status(t.Context())
	require.NoError(t, err)
	require.Len(t, s.Chatbots, 1)
	c := s.Chatbots[0]
	assert.True(t, failed.Equal(c.LastPoll), "last poll %s, want %s", c.LastPoll, failed)
	assert.True(t, ok.Equal(c.LastOK))
	assert.Equal(t, "leadlist: HTTP 503", c.LastError)
}

func TestAdminStatus(t *testing.T) {
	d := startDaemon(t)
	require.NoError(t, d.store.Pause(t.Context(), "crm", "slack crm: HTTP 410 Gone", "hash"))

	s, err := d.client.Status(t.Context())
	require.NoError(t, err)
	assert.True(t, s.Daemon)
	assert.Equal(t, "1.2.3", s.Version)
	require.Len(t, s.Chatbots, 1)
	c := s.Chatbots[0]
	assert.Equal(t, ops.ChatbotStatus{Serial: serialA, Name: chatbotName, LastPoll: c.LastPoll, LastOK: c.LastPoll, Seen: 3}, c)
	assert.WithinDuration(t, time.Now().Add(-2*time.Minute), c.LastPoll, time.Minute)

	require.Len(t, s.Forwarders, 3)
	crm := s.Forwarders[1]
	assert.WithinDuration(t, time.Now(), crm.PausedSince, time.Minute)
	assert.Equal(t, []ops.ForwarderStatus{
		{Name: "bus", Type: "webhook", Pending: 1, Dead: 2},
		{Name: "crm", Type: "slack", Paused: true, PausedReason: "slack crm: HTTP 410 Gone", PausedSince: crm.PausedSince},
		{Name: "old", Type: ops.TypeUnconfigured, Pending: 3},
	}, s.Forwarders)
}

func TestAdminDeadLettersReplayDrop(t *testing.T) {
	d := startDaemon(t)
	ctx := t.Context()
	first, second := d.dead[0].Event.ID, d.dead[1].Event.ID

	assert.Equal(t, []string{first, second}, deadIDs(t, d.client, "bus"))
	assert.Equal(t, []string{first, second}, deadIDs(t, d.client, ""), "every forwarder")
	assert.Empty(t, deadIDs(t, d.client, "old"))
	dls, err := d.client.DeadLetters(ctx, "bus")
	require.NoError(t, err)
	assert.Equal(t, "webhook bus: HTTP 400 Bad Request", dls[0].LastError)
	assert.Equal(t, 1, dls[0].Attempts)

	select { // forget the signals of the setup
	case <-d.store.Changes():
	default:
	}
	n, err := d.client.Replay(ctx, "bus", first)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	select {
	case <-d.store.Changes():
	default:
		t.Fatal("a replay must wake the dispatcher through the store's Changes")
	}
	back := leadtest.Pending(t, d.store, "bus")
	require.Len(t, back, 2)
	assert.Equal(t, first, back[1].Event.ID, "the replayed delivery is back in the outbox, last")
	assert.Zero(t, back[1].Attempts, "with a fresh retry budget")
	assert.Equal(t, []string{second}, deadIDs(t, d.client, "bus"))

	n, err = d.client.Replay(ctx, "bus", "no-such-event")
	require.NoError(t, err)
	assert.Zero(t, n)

	n, err = d.client.Drop(ctx, "bus", "")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	assert.Empty(t, deadIDs(t, d.client, "bus"))
	assert.Len(t, leadtest.Pending(t, d.store, "bus"), 2, "dropping leaves the outbox alone")
}

func TestAdminResume(t *testing.T) {
	d := startDaemon(t)
	require.NoError(t, d.store.Pause(t.Context(), "bus", "webhook bus: HTTP 410 Gone", "hash"))

	was, err := d.client.Resume(t.Context(), "bus")
	require.NoError(t, err)
	assert.True(t, was)
	paused, err := d.store.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
	d.mu.Lock()
	assert.Equal(t, []string{"bus"}, d.resumed, "the running dispatcher is told too")
	d.mu.Unlock()

	was, err = d.client.Resume(t.Context(), "bus")
	require.NoError(t, err)
	assert.False(t, was, "it was no longer paused")
}

func TestAdminBadRequests(t *testing.T) {
	d := startDaemon(t)
	cases := []struct {
		query, want string
	}{
		{"forwarder=bus", "id=<event id>, or all=1"},
		{"forwarder=bus&id=x&all=1", "not both"},
		{"all=maybe", "not a boolean"},
	}
	for _, c := range cases {
		for _, op := range []string{"replay", "drop"} {
			resp, err := http.Post(d.url+"/admin/dlq/"+op+"?"+c.query, "", nil)
			require.NoError(t, err)
			var body map[string]string
			require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
			resp.Body.Close()
			assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "%s?%s", op, c.query)
			assert.Contains(t, body["error"], c.want, "%s?%s", op, c.query)
		}
	}
	assert.Len(t, deadIDs(t, d.client, "bus"), 2, "nothing changed")
}

func TestClientErrorsNameEndpointAndCarryMessage(t *testing.T) {
	d := startDaemon(t)
	require.NoError(t, d.store.Close())
	ctx := t.Context()

	_, err := d.client.Status(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "GET /admin/status")
	assert.Contains(t, err.Error(), "database not open")
	assert.Contains(t, err.Error(), "HTTP 500")

	_, err = d.client.Replay(ctx, "bus", "x")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "POST /admin/dlq/replay")
	assert.Contains(t, err.Error(), "database not open")
}

func TestAdminGuards(t *testing.T) {
	d := startDaemon(t)
	cases := []struct {
		name, method, target, remote, host string
		header                             map[string]string
		want                               int
	}{
		{"status from another machine", "GET", "/admin/status", "10.0.0.1:1234", "127.0.0.1:9108", nil, http.StatusForbidden},
		{"replay from another machine", "POST", "/admin/dlq/replay?all=1", "10.0.0.1:1234", "127.0.0.1:9108", nil, http.StatusForbidden},
		{"resume from another machine", "POST", "/admin/forwarders/bus/resume", "192.168.1.7:40000", "127.0.0.1:9108", nil, http.StatusForbidden},
		{"DNS rebinding", "GET", "/admin/dlq", "127.0.0.1:5555", "evil.example:9108", nil, http.StatusForbidden},
		{"cross-origin browser POST", "POST", "/admin/dlq/drop?all=1", "127.0.0.1:5555", "127.0.0.1:9108",
			map[string]string{"Sec-Fetch-Site": "cross-site"}, http.StatusForbidden},
		{"replay by GET", "GET", "/admin/dlq/replay?all=1", "127.0.0.1:5555", "127.0.0.1:9108", nil, http.StatusMethodNotAllowed},
		{"drop by GET", "GET", "/admin/dlq/drop?all=1", "127.0.0.1:5555", "127.0.0.1:9108", nil, http.StatusMethodNotAllowed},
		{"resume by GET", "GET", "/admin/forwarders/bus/resume", "127.0.0.1:5555", "127.0.0.1:9108", nil, http.StatusMethodNotAllowed},
		{"status from IPv6 loopback", "GET", "/admin/status", "[::1]:5555", "localhost:9108", nil, http.StatusOK},
		{"metrics from another machine", "GET", "/metrics", "10.0.0.1:1234", "leadbridge.internal:9108", nil, http.StatusOK},
		{"healthz from another machine", "GET", "/healthz", "10.0.0.1:1234", "leadbridge.internal:9108", nil, http.StatusOK},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(c.method, c.target, nil)
			r.RemoteAddr, r.Host = c.remote, c.host
			for k, v := range c.header {
				r.Header.Set(k, v)
			}
			w := httptest.NewRecorder()
			d.handler.ServeHTTP(w, r)
			assert.Equal(t, c.want, w.Code, w.Body.String())
			if c.want == http.StatusForbidden {
				assert.Contains(t, w.Body.String(), `"error"`)
			}
		})
	}
	assert.Len(t, deadIDs(t, d.client, "bus"), 2, "no refused request changed anything")
	paused, err := d.store.Paused(t.Context())
	require.NoError(t, err)
	assert.Empty(t, paused)
}

func TestDial(t *testing.T) {
	d := startDaemon(t)
	_, port, err := net.SplitHostPort(strings.TrimPrefix(d.url, "http://"))
	require.NoError(t, err)

	t.Run("wildcard listen address means loopback", func(t *testing.T) {
		for _, addr := range []string{":" + port, "0.0.0.0:" + port} {
			c, err := ops.Dial(t.Context(), addr, "")
			require.NoError(t, err, addr)
			assert.Equal(t, "http://127.0.0.1:"+port, c.BaseURL)
		}
	})
	t.Run("nobody listening", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := l.Addr().String()
		require.NoError(t, l.Close())
		_, err = ops.Dial(t.Context(), addr, "")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no leadbridge daemon answers on http://"+addr)
	})
	t.Run("something else listening", func(t *testing.T) {
		other := httptest.NewServer(http.NotFoundHandler())
		defer other.Close()
		_, err := ops.Dial(t.Context(), other.Listener.Addr().String(), "")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "no leadbridge daemon answers")
		assert.Contains(t, err.Error(), "HTTP 404")
	})
	t.Run("a hung peer is given up on", func(t *testing.T) {
		release := make(chan struct{})
		hung := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-release }))
		defer hung.Close()
		defer close(release)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		_, err := ops.Dial(ctx, hung.Listener.Addr().String(), "")
		require.Error(t, err)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("bad address", func(t *testing.T) {
		_, err := ops.Dial(t.Context(), "no-port", "")
		require.Error(t, err)
		assert.Contains(t, err.Error(), `admin address "no-port"`)
	})
}

func TestAdminToken(t *testing.T) {
	store := openStore(t)
	local := &ops.Local{Store: store, Version: "1.2.3"}
	const token = "adm-token-9f2c41"
	srv := httptest.NewServer(ops.NewServer(ops.NewMetrics("1.2.3", store), ops.NewHealth(store, nil, nil, time.Minute, nil), local, token, nil))
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()

	t.Run("right token", func(t *testing.T) {
		c, err := ops.Dial(t.Context(), addr, token)
		require.NoError(t, err)
		_, err = c.Status(t.Context())
		require.NoError(t, err)
	})
	t.Run("wrong token: the daemon's proof does not check out", func(t *testing.T) {
		_, err := ops.Dial(t.Context(), addr, "nope")
		require.ErrorIs(t, err, ops.ErrUnproven)
		assert.NotContains(t, err.Error(), token)
	})
	t.Run("no token", func(t *testing.T) {
		c, err := ops.Dial(t.Context(), addr, "")
		require.NoError(t, err, "health needs no token")
		_, err = c.Status(t.Context())
		require.Error(t, err)
		assert.Contains(t, err.Error(), "401")
		assert.NotContains(t, err.Error(), token, "the token is never echoed")
	})
	t.Run("bearer token for scripts", func(t *testing.T) {
		for bearer, want := range map[string]int{token: http.StatusOK, "nope": http.StatusUnauthorized} {
			req, err := http.NewRequest(http.MethodGet, srv.URL+"/admin/status", nil)
			require.NoError(t, err)
			req.Header.Set("Authorization", "Bearer "+bearer)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, want, resp.StatusCode, bearer)
		}
	})
	resp, err := http.Get(srv.URL + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "metrics need no token")
}

// challenge asks srv for a proof with client nonce cn and returns the answer.
func challenge(t *testing.T, srv string, cn string) (code int, nonce, proof string) {
	t.Helper()
	resp, err := http.Post(srv+"/admin/challenge?nonce="+cn, "", nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	var ans struct{ Nonce, Proof string }
	_ = json.NewDecoder(resp.Body).Decode(&ans)
	return resp.StatusCode, ans.Nonce, ans.Proof
}

func TestAdminProofCannotBeReplayedOrReflected(t *testing.T) {
	store := openStore(t)
	const token = "adm-token-5d77aa"
	srv := httptest.NewServer(ops.NewServer(ops.NewMetrics("1", store), ops.NewHealth(store, nil, nil, time.Minute, nil),
		&ops.Local{Store: store}, token, nil))
	t.Cleanup(srv.Close)
	get := func(auth string) int {
		req, err := http.NewRequest(http.MethodGet, srv.URL+"/admin/status", nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", auth)
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	cn := strings.Repeat("ab", 32)
	code, sn, proof := challenge(t, srv.URL, cn)
	require.Equal(t, http.StatusOK, code)
	require.Len(t, sn, 64)

	// Reflection: the daemon's own proof, offered back as a client MAC, is refused.
	assert.Equal(t, http.StatusUnauthorized, get("LeadBridge-HMAC "+sn+":"+proof))
	// The nonce was spent by that attempt: even a right MAC over it is refused now.
	right := func(sn string) string {
		h := hmac.New(sha256.New, []byte(token))
		h.Write([]byte("leadbridge admin v1: client request\x00" + sn + "\x00GET\x00/admin/status"))
		return "LeadBridge-HMAC " + sn + ":" + hex.EncodeToString(h.Sum(nil))
	}
	assert.Equal(t, http.StatusUnauthorized, get(right(sn)), "a nonce is good for one try")
	_, sn, _ = challenge(t, srv.URL, cn)
	assert.Equal(t, http.StatusOK, get(right(sn)))
	assert.Equal(t, http.StatusUnauthorized, get(right(sn)), "a request cannot be replayed")
	assert.Equal(t, http.StatusUnauthorized, get(right(strings.Repeat("cd", 32))), "a nonce the daemon never issued")

	for _, bad := range []string{"", "short", strings.Repeat("AB", 32), strings.Repeat("zz", 32)} {
		code, _, _ := challenge(t, srv.URL, bad)
		assert.Equal(t, http.StatusBadRequest, code, "nonce %q", bad)
	}
	resp, err := http.Get(srv.URL + "/admin/challenge?nonce=" + cn)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusMethodNotAllowed, resp.StatusCode)
}

// impostor stands on an admin address: it answers /healthz like a daemon and records
// every request it gets.
type impostor struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []string // method, URI and every header of each request
}

func newImpostor(t *testing.T, challenge http.HandlerFunc) *impostor {
	im := &impostor{}
	im.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		im.mu.Lock()
		line := r.Method + " " + r.URL.RequestURI()
		for k, vs := range r.Header {
			line += " " + k + "=" + strings.Join(vs, ",")
		}
		im.got = append(im.got, line)
		im.mu.Unlock()
		switch {
		case r.URL.Path == "/healthz":
			_, _ = w.Write([]byte(`{"status":"ok"}`))
		case r.URL.Path == "/admin/challenge" && challenge != nil:
			challenge(w, r)
		default:
			_, _ = w.Write([]byte(`{"count":0}`))
		}
	}))
	t.Cleanup(im.srv.Close)
	return im
}

func (im *impostor) requests() []string {
	im.mu.Lock()
	defer im.mu.Unlock()
	return slices.Clone(im.got)
}

func TestAnImpostorNeverSeesTheToken(t *testing.T) {
	const token = "adm-token-31f0be"
	// The real daemon, with the same token, on another address: an impostor may relay.
	store := openStore(t)
	real := httptest.NewServer(ops.NewServer(ops.NewMetrics("1", store), ops.NewHealth(store, nil, nil, time.Minute, nil),
		&ops.Local{Store: store}, token, nil))
	t.Cleanup(real.Close)

	cases := map[string]http.HandlerFunc{
		"no challenge endpoint": nil,
		"a made-up proof": func(w http.ResponseWriter, _ *http.Request) {
			_, _ = w.Write([]byte(`{"nonce":"` + strings.Repeat("ab", 32) + `","proof":"` + strings.Repeat("00", 32) + `"}`))
		},
		"the real daemon's proof, relayed": func(w http.ResponseWriter, r *http.Request) {
			resp, err := http.Post(real.URL+r.URL.RequestURI(), "", nil)
			if !assert.NoError(t, err) {
				return
			}
			defer resp.Body.Close()
			_, _ = io.Copy(w, resp.Body)
		},
	}
	for name, ch := range cases {
		t.Run(name, func(t *testing.T) {
			im := newImpostor(t, ch)
			_, err := ops.Dial(t.Context(), im.srv.Listener.Addr().String(), token)
			require.ErrorIs(t, err, ops.ErrUnproven)
			assert.Contains(t, err.Error(), "nothing was sent to it")

			// A Client made directly sends nothing either.
			c := &ops.Client{BaseURL: im.srv.URL, Token: token}
			_, err = c.Drop(t.Context(), "", "")
			require.ErrorIs(t, err, ops.ErrUnproven)
			_, err = c.DeadLetters(t.Context(), "")
			require.ErrorIs(t, err, ops.ErrUnproven)

			got := im.requests()
			require.NotEmpty(t, got)
			for _, line := range got {
				assert.NotContains(t, line, token)
				assert.NotContains(t, line, "Authorization", "no credentials of any kind")
				assert.False(t, strings.Contains(line, "/admin/") && !strings.Contains(line, "/admin/challenge"),
					"no admin request but the challenge: %s", line)
			}
		})
	}
}

func TestAdminMovesAndDropsStrandedDeliveries(t *testing.T) {
	d := startDaemon(t) // 3 deliveries stranded with "old"; bus and crm are configured
	ctx := t.Context()
	health := ops.NewHealth(d.store, nil, []ops.ForwarderInfo{{Name: "bus"}, {Name: "crm"}}, time.Minute, nil)
	r := health.Check(t.Context())
	assert.False(t, r.Ready, "stranded deliveries are an operator problem: not ready")
	assert.Equal(t, []ops.Stranded{{Forwarder: "old", Pending: 3}}, r.Stranded)
	require.Len(t, r.Reasons, 1)
	assert.Contains(t, r.Reasons[0], "3 deliveries stranded: forwarder old is not in the config")
	assert.Contains(t, r.Reasons[0], "outbox move --from old --to NEW")

	for _, c := range []struct{ from, to, want string }{
		{"bus", "crm", `from "bus" is a configured forwarder`},
		{"old", "nowhere", `to "nowhere" is not a configured forwarder`},
		{"", "crm", "from is empty"},
	} {
		_, err := d.client.MovePending(ctx, c.from, c.to)
		require.Error(t, err, "%+v", c)
		assert.Contains(t, err.Error(), c.want)
		assert.Contains(t, err.Error(), "HTTP 400")
	}
	_, err := d.client.DropPending(ctx, "bus")
	require.Error(t, err)
	assert.Contains(t, err.Error(), `forwarder "bus" is a configured forwarder`)
	assert.Len(t, leadtest.Pending(t, d.store, "old"), 3, "refused requests changed nothing")
	assert.Len(t, leadtest.Pending(t, d.store, "bus"), 1)

	drainChanges(d.store)
	m, err := d.client.MovePending(ctx, "old", "crm")
	require.NoError(t, err)
	assert.Equal(t, ops.OutboxMove{Moved: 3}, m)
	select {
	case <-d.store.Changes():
	default:
		t.Fatal("a move wakes the dispatcher through the store")
	}
	assert.Len(t, leadtest.Pending(t, d.store, "crm"), 3)
	r = health.Check(t.Context())
	assert.True(t, r.Ready, "%v", r.Reasons)
	assert.Empty(t, r.Stranded)

	require.NoError(t, d.store.Close())
	s := openStore(t, "gone")
	ingest(t, s, 2)
	local := &ops.Local{Store: s, Forwarders: []ops.ForwarderInfo{{Name: "bus"}}}
	n, err := local.DropPending(ctx, "gone")
	require.NoError(t, err)
	assert.Equal(t, 2, n)
	assert.Empty(t, leadtest.Pending(t, s, "gone"))
}

func drainChanges(s *dedupe.Store) {
	select {
	case <-s.Changes():
	default:
	}
}

func TestAdminDryBackfillWritesNothing(t *testing.T) {
	d := startDaemon(t) // records 0..2 of serialA are seen
	ctx := t.Context()
	leads := []event.Lead{record(event.KindAppointment, 1), record(event.KindLead, 7)}
	drainChanges(d.store)
	res, err := d.client.DryBackfill(ctx, serialA, leads, event.BackfillOptions{})
	require.NoError(t, err)
	assert.Equal(t, 1, res.New)
	assert.Equal(t, 1, res.Duplicate)
	require.Len(t, res.Events, 1)
	assert.Equal(t, leads[1].ID(), res.Events[0].ID)
	res, err = d.client.DryBackfill(ctx, serialA, leads, event.BackfillOptions{Resend: true, Only: []string{"bus"}})
	require.NoError(t, err)
	assert.Len(t, res.Events, 2, "resend reaches the daemon")

	assert.Len(t, leadtest.Pending(t, d.store, "bus"), 1, "nothing was queued")
	again, err := d.store.DryBackfill(t.Context(), serialA, leads[1:], event.BackfillOptions{})
	require.NoError(t, err)
	assert.Equal(t, 1, again.New, "nothing was marked seen")
	select {
	case <-d.store.Changes():
		t.Fatal("a dry run must not wake the dispatcher")
	default:
	}

	for q, want := range map[string]string{
		"":                          "chatbot=<serial> is required",
		"chatbot=x&resend=maybe":    "resend=",
		"chatbot=" + serialA + "&x": "body: want a JSON array of leads",
	} {
		resp, err := http.Post(d.url+"/admin/ingest/dry-run?"+q, "application/json", strings.NewReader(`{"not":"a list"}`))
		require.NoError(t, err)
		var body map[string]string
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
		resp.Body.Close()
		assert.Equal(t, http.StatusBadRequest, resp.StatusCode, q)
		assert.Contains(t, body["error"], want, q)
	}
}

func TestAChallengeFloodLocksNobodyOut(t *testing.T) {
	store := openStore(t)
	const token = "adm-token-flood01"
	srv := httptest.NewServer(ops.NewServer(ops.NewMetrics("1", store), ops.NewHealth(store, nil, nil, time.Minute, nil),
		&ops.Local{Store: store}, token, nil))
	t.Cleanup(srv.Close)
	c, err := ops.Dial(t.Context(), srv.Listener.Addr().String(), token)
	require.NoError(t, err)
	for range 600 { // more than the daemon keeps
		code, _, _ := challenge(t, srv.URL, strings.Repeat("ef", 32))
		require.Equal(t, http.StatusOK, code)
	}
	_, err = c.Status(t.Context())
	require.NoError(t, err, "the operator's own challenge still works")
}
