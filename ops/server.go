package ops

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/leadbridge/leadbridge/event"
)

// NewServer is the handler for http.listen: /metrics, /healthz (200 while the process
// serves), /readyz (200 or 503, see Health), and the admin API when b is not nil:
//
//	GET  /admin/status                          → Status
//	GET  /admin/dlq?forwarder=F                 → []event.DeadLetter
//	POST /admin/dlq/replay?forwarder=F&id=ID    → {"count":N}   (all=1 instead of id: every one)
//	POST /admin/dlq/drop?forwarder=F&id=ID      → {"count":N}   (likewise)
//	POST /admin/forwarders/{name}/resume        → {"resumed":bool}
//	POST /admin/outbox/move?from=OLD&to=NEW     → OutboxMove (OLD not configured, NEW configured)
//	POST /admin/outbox/drop?forwarder=OLD       → {"count":N} (OLD not configured)
//	POST /admin/ingest/dry-run?chatbot=S[&resend=1][&only=F]... body []event.Lead
//	                                            → event.Ingested, what a backfill would queue; writes nothing
//	POST /admin/reload                          → ReloadReport; 422 {"error":..,"problems":[..]} when the
//	                                              config file has problems (the running config stays)
//	POST /admin/challenge?nonce=HEX             → the daemon's proof of the token (see auth.go)
//
// The admin API shows personal data and changes the store, so it answers only requests
// from a loopback address to a loopback host name (403 otherwise, which also defeats DNS
// rebinding), refuses cross-origin browser requests, and takes changes only by POST (405
// otherwise). With adminToken set (http.admin_token), it also wants
// proof of it (401 otherwise), so that other users of the machine cannot reach it: the
// HMAC exchange of auth.go, which the operator commands use, or, for scripts,
// "Authorization: Bearer <adminToken>" (which trusts whatever listens on the address). Errors are JSON {"error":"..."}. m and h must not be nil;
// logger nil discards the admin API's logs.
func NewServer(m *Metrics, h *Health, b Backend, adminToken string, logger *slog.Logger) http.Handler {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, req *http.Request) {
		r := h.Check(req.Context())
		code := http.StatusOK
		if !r.Ready {
			code = http.StatusServiceUnavailable
		}
		writeJSON(w, code, r)
	})
	if b != nil {
		mux.Handle("/admin/", adminOnly(newAdmin(b, logger), adminToken))
	}
	return mux
}

// admin serves the admin API over a Backend.
type admin struct {
	b   Backend
	log *slog.Logger
}

func newAdmin(b Backend, logger *slog.Logger) http.Handler {
	a := &admin{b: b, log: logger.With("component", "admin")}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /admin/status", a.status)
	mux.HandleFunc("GET /admin/dlq", a.deadLetters)
	mux.HandleFunc("POST /admin/dlq/replay", a.dlqChange("replay", b.Replay))
	mux.HandleFunc("POST /admin/dlq/drop", a.dlqChange("drop", b.Drop))
	mux.HandleFunc("POST /admin/forwarders/{name}/resume", a.resume)
	mux.HandleFunc("POST /admin/outbox/move", a.outboxMove)
	mux.HandleFunc("POST /admin/outbox/drop", a.outboxDrop)
	mux.HandleFunc("POST /admin/ingest/dry-run", a.dryIngest)
	mux.HandleFunc("POST /admin/reload", a.reload)
	return mux
}

func (a *admin) status(w http.ResponseWriter, r *http.Request) {
	s, err := a.b.Status(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (a *admin) deadLetters(w http.ResponseWriter, r *http.Request) {
	dls, err := a.b.DeadLetters(r.Context(), r.URL.Query().Get("forwarder"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if dls == nil {
		dls = []event.DeadLetter{}
	}
	writeJSON(w, http.StatusOK, dls)
}

// dlqChange serves replay and drop: forwarder (optional) and either id or all=1.
func (a *admin) dlqChange(op string, fn func(ctx context.Context, forwarder, id string) (int, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		forwarder, id := q.Get("forwarder"), q.Get("id")
		all := false
		if v := q.Get("all"); v != "" {
			var err error
			if all, err = strconv.ParseBool(v); err != nil {
				writeError(w, http.StatusBadRequest, "all="+strconv.Quote(v)+" is not a boolean; use all=1")
				return
			}
		}
		switch {
		case id == "" && !all:
			writeError(w, http.StatusBadRequest, "say which dead letters to "+op+": id=<event id>, or all=1 for every one")
			return
		case id != "" && all:
			writeError(w, http.StatusBadRequest, "give either id or all=1, not both")
			return
		}
		n, err := fn(r.Context(), forwarder, id)
		if err != nil {
			a.fail(w, r, err)
			return
		}
		a.log.Info("dead letters changed through the admin API", "op", op, "forwarder", forwarder, "event_id", id, "count", n)
		writeJSON(w, http.StatusOK, map[string]int{"count": n})
	}
}

func (a *admin) resume(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	was, err := a.b.Resume(r.Context(), name)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("forwarder resume through the admin API", "forwarder", name, "was_paused", was)
	writeJSON(w, http.StatusOK, map[string]bool{"resumed": was})
}

func (a *admin) outboxMove(w http.ResponseWriter, r *http.Request) {
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	m, err := a.b.MovePending(r.Context(), from, to)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("stranded deliveries moved through the admin API", "from", from, "to", to, "moved", m.Moved, "already_owed", m.Already)
	writeJSON(w, http.StatusOK, m)
}

func (a *admin) outboxDrop(w http.ResponseWriter, r *http.Request) {
	forwarder := r.URL.Query().Get("forwarder")
	n, err := a.b.DropPending(r.Context(), forwarder)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("stranded deliveries dropped through the admin API", "forwarder", forwarder, "count", n)
	writeJSON(w, http.StatusOK, map[string]int{"count": n})
}

// maxDryRunBody caps the leads one dry-run request may carry.
const maxDryRunBody = 64 << 20

func (a *admin) dryIngest(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	serial := q.Get("chatbot")
	if serial == "" {
		writeError(w, http.StatusBadRequest, "chatbot=<serial> is required")
		return
	}
	resend := false
	if v := q.Get("resend"); v != "" {
		var err error
		if resend, err = strconv.ParseBool(v); err != nil {
			writeError(w, http.StatusBadRequest, "resend="+strconv.Quote(v)+" is not a boolean; use resend=1")
			return
		}
	}
	var leads []event.Lead
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDryRunBody)).Decode(&leads); err != nil {
		writeError(w, http.StatusBadRequest, "body: want a JSON array of leads: "+err.Error())
		return
	}
	res, err := a.b.DryBackfill(r.Context(), serial, leads, event.BackfillOptions{Resend: resend, Only: q["only"]})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

func (a *admin) fail(w http.ResponseWriter, r *http.Request, err error) {
	if refused, ok := errors.AsType[*RefusedError](err); ok {
		writeError(w, http.StatusBadRequest, refused.Reason)
		return
	}
	a.log.Error("admin request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeError(w, http.StatusInternalServerError, err.Error())
}

// guard lets through only same-machine, same-origin requests and, when a token is set,
// only those that prove they hold it (see auth.go); it also serves the challenge.
type guard struct {
	next       http.Handler
	token      string
	csrf       *http.CrossOriginProtection
	challenges *challenges
}

func adminOnly(next http.Handler, token string) http.Handler {
	return &guard{next: next, token: token, csrf: http.NewCrossOriginProtection(), challenges: newChallenges()}
}

func (g *guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopback(host) {
		writeError(w, http.StatusForbidden, "the admin API answers only on loopback; run the command on the daemon's machine")
		return
	}
	if !isLoopback(hostOnly(r.Host)) {
		writeError(w, http.StatusForbidden, "the admin API answers only to a loopback host name (127.0.0.1, ::1, localhost)")
		return
	}
	if err := g.csrf.Check(r); err != nil {
		writeError(w, http.StatusForbidden, "the admin API refuses cross-origin browser requests")
		return
	}
	if r.URL.Path == "/admin/challenge" {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			writeError(w, http.StatusMethodNotAllowed, "POST /admin/challenge?nonce=<64 hex digits>")
			return
		}
		g.challenge(w, r)
		return
	}
	if g.token != "" && !g.authorized(r) {
		writeError(w, http.StatusUnauthorized, "the admin API wants proof of the daemon's http.admin_token "+
			"(the leadbridge operator commands give it; scripts may send Authorization: Bearer ...)")
		return
	}
	g.next.ServeHTTP(w, r)
}

// WithConsole serves ui (the web console) under /ui/ and everything else as server
// does; server is NewServer's handler.
func WithConsole(server, ui http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/ui/", ui)
	mux.Handle("/", server)
	return mux
}

// FromLoopback reports whether r came from a loopback address and names a loopback host
// (127.0.0.1, ::1, localhost): the admin API's same-machine check, which also defeats DNS
// rebinding. The web console applies it when no token is configured.
func FromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	return err == nil && isLoopback(host) && isLoopback(hostOnly(r.Host))
}

// isLoopback reports whether host is "localhost" or a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// hostOnly strips the port from a Host header.
func hostOnly(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return strings.Trim(hostport, "[]")
}

// errorBody is the JSON of an error answer.
type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		code, body = http.StatusInternalServerError, []byte(`{"error":"encoding the answer failed"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}
