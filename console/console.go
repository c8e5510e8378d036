// Package console is leadbridge's web console under /ui/ on http.listen: what the daemon
// polled and delivered, what failed, and the buttons to replay, drop and resume. Pages
// are rendered on the server with html/template; the only script reloads the page on a
// timer when asked to. See auth.go for who may see it.
package console

import (
	"bytes"
	"context"
	"embed"
	"html/template"
	"log/slog"
	"net/http"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

// Operator is what the console shows and changes of the daemon's state: the calls the
// `status` and `dlq` commands make (ops.Local implements it over the store). Status
// counts the records seen, which bbolt does key by key: only the overview, which shows
// the counts, reads it; the other pages read StatusWithoutSeen.
type Operator interface {
	Status(ctx context.Context) (ops.Status, error)
	StatusWithoutSeen(ctx context.Context) (ops.Status, error)
	DeadLetters(ctx context.Context, forwarder string) ([]event.DeadLetter, error)
	Replay(ctx context.Context, forwarder, id string) (int, error)
	Drop(ctx context.Context, forwarder, id string) (int, error)
	Resume(ctx context.Context, forwarder string) (bool, error)
}

// ActivityLog is the store's bounded log of delivery attempts.
type ActivityLog interface {
	// Activity returns the attempts q selects, newest first.
	Activity(ctx context.Context, q event.ActivityQuery) ([]event.Attempt, error)
	// ActivityEvent returns an event the log still refers to; found is false otherwise.
	ActivityEvent(ctx context.Context, id string) (ev event.Event, found bool, err error)
}

// Options configures New.
type Options struct {
	Operator Operator    // required
	Activity ActivityLog // required
	// Token is http.admin_token; empty serves the console on loopback only.
	Token string
	// PollInterval is poll.interval, to say when each chatbot is polled next; 0 omits it.
	PollInterval time.Duration
	Logger       *slog.Logger     // nil discards
	Now          func() time.Time // nil: time.Now
}

// Console is the web console's handler, to be mounted on /ui/.
type Console struct {
	op       Operator
	act      ActivityLog
	token    string
	interval time.Duration
	log      *slog.Logger
	now      func() time.Time
	sessions *sessions
	csrfKey  []byte
	csrf     *http.CrossOriginProtection
	guesses  *guesses
	mux      *http.ServeMux
}

//go:embed static
var static embed.FS

var pages = template.Must(template.New("").Funcs(funcs).ParseFS(static, "static/*.html"))

// New returns the console over o's operator and activity log.
func New(o Options) *Console {
	c := &Console{op: o.Operator, act: o.Activity, token: o.Token, interval: o.PollInterval, log: o.Logger, now: o.Now,
		csrfKey: make([]byte, 32), csrf: http.NewCrossOriginProtection(), guesses: newGuesses()}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.log = c.log.With("component", "console")
	if c.now == nil {
		c.now = time.Now
	}
	c.sessions = newSessions(c.now)
	randomKey(c.csrfKey)
	m := http.NewServeMux()
	m.Handle("GET /ui/app.js", staticFile("static/app.js", "text/javascript; charset=utf-8"))
	m.Handle("GET /ui/style.css", staticFile("static/style.css", "text/css; charset=utf-8"))
	m.HandleFunc("GET /ui/{$}", c.overview)
	m.HandleFunc("GET /ui/activity", c.activity)
	m.HandleFunc("GET /ui/events/{id}", c.eventPage)
	m.HandleFunc("GET /ui/dead", c.deadLetters)
	m.HandleFunc("POST /ui/dead/replay", c.deadChange("replay"))
	m.HandleFunc("POST /ui/dead/drop", c.deadChange("drop"))
	m.HandleFunc("POST /ui/forwarders/{name}/resume", c.resume)
	m.HandleFunc("POST /ui/logout", c.logout)
	m.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		c.plain(w, http.StatusNotFound, "No such page in the console.")
	})
	c.mux = m
	return c
}

func staticFile(name, contentType string) http.Handler {
	body, err := static.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time
	}
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		_, _ = w.Write(body)
	})
}

// frame is what every page's layout shows around its content.
type frame struct {
	Title    string
	Nav      string // the name of the page's menu entry
	CSRF     string
	NoToken  bool // no http.admin_token: say it on every page
	LoggedIn bool // by a login session: offer to log out
	Flash    string
	Content  any
}

// render writes page name (a template in static/) in the layout, with code.
func (c *Console) render(w http.ResponseWriter, r *http.Request, code int, name, title string, content any) {
	id := whoOf(r)
	f := frame{Title: title, Nav: name, CSRF: c.csrfToken(id.session), NoToken: c.token == "",
		LoggedIn: c.token != "" && id.session != "", Flash: c.flash(r, id.session), Content: content}
	var buf bytes.Buffer
	if err := pages.ExecuteTemplate(&buf, name, f); err != nil {
		c.log.Error("rendering a console page failed", "page", name, "err", err)
		c.plain(w, http.StatusInternalServerError, "Rendering the page failed; the daemon's log says why.")
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// plain writes a page with only msg, for refusals and errors.
func (c *Console) plain(w http.ResponseWriter, code int, msg string) {
	var buf bytes.Buffer
	_ = pages.ExecuteTemplate(&buf, "plain", frame{Title: http.StatusText(code), NoToken: c.token == "", Content: msg})
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

// fail answers a failed store call: 500, naming the error, which the log also gets.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	c.log.Error("console request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	c.plain(w, http.StatusInternalServerError, "The request failed: "+err.Error())
}
