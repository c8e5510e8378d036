package console

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

// perPage is how many rows a table shows before it pages.
const perPage = 50

func randomKey(b []byte) { _, _ = rand.Read(b) } // never fails (crypto/rand)

var funcs = template.FuncMap{
	"ago":    ago,
	"utc":    func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05Z") },
	"dur":    func(d time.Duration) string { return d.Round(time.Millisecond).String() },
	"cut":    cut,
	"kind":   func(k event.Kind) string { return string(k) },
	"plural": plural,
}

// ago says roughly how long before now t was; "never" for the zero time.
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := time.Since(t)
	switch {
	case d < 0:
		return "in " + roughly(-d)
	case d < time.Second:
		return "just now"
	}
	return roughly(d) + " ago"
}

func roughly(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

// cut shortens s to n runes with an ellipsis.
func cut(n int, s string) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

// flash is the message a redirect after an action carries: fixed texts chosen by code,
// so a link cannot make the console say something it did not do.
func flash(r *http.Request) string {
	q := r.URL.Query()
	n, _ := strconv.Atoi(q.Get("n"))
	switch q.Get("done") {
	case "replay":
		return fmt.Sprintf("Replayed %s: back in the outbox, delivered shortly.", plural(n, "dead letter"))
	case "drop":
		return fmt.Sprintf("Dropped %s.", plural(n, "dead letter"))
	case "resumed":
		return fmt.Sprintf("Resumed forwarder %q: it delivers what it owes again.", q.Get("f"))
	case "running":
		return fmt.Sprintf("Forwarder %q was not paused.", q.Get("f"))
	}
	return ""
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// maxPage bounds the page number a query may ask for, so that no offset overflows.
const maxPage = 1_000_000

// pageOf reads the 1-based page number from the query.
func pageOf(r *http.Request) int {
	p, err := strconv.Atoi(r.URL.Query().Get("page"))
	if err != nil || p < 1 {
		return 1
	}
	return min(p, maxPage)
}

// pager links to the previous and next pages of a table, keeping the filters.
type pager struct {
	Page       int
	Pages      int
	Prev, Next string // URLs, "" at either end
}

func newPager(r *http.Request, page, total int) pager {
	p := pager{Page: page, Pages: max(1, (total+perPage-1)/perPage)}
	link := func(n int) string {
		q := r.URL.Query()
		q.Set("page", strconv.Itoa(n))
		q.Del("done")
		q.Del("n")
		q.Del("f")
		return r.URL.Path + "?" + q.Encode()
	}
	if page > 1 {
		p.Prev = link(page - 1)
	}
	if page < p.Pages {
		p.Next = link(page + 1)
	}
	return p
}

// chatbotRow is one chatbot on the overview.
type chatbotRow struct {
	ops.ChatbotStatus
	State    string // failing, never, ok
	NextPoll time.Time
}

// forwarderRow is one forwarder on the overview.
type forwarderRow struct {
	ops.ForwarderStatus
	State       string // paused, stranded, failing (its last attempt failed), dead letters, ok
	LastSuccess time.Time
	LastHourOK  int
	LastHourBad int
	Chart       chart
}

type overviewPage struct {
	Chatbots       []chatbotRow
	Total, Failing int
	Never          int
	Shown          int
	Query, Filter  string
	Pager          pager
	Forwarders     []forwarderRow
	Pending, Dead  int
	Paused         int
	DeliveredHour  int
	FailedHour     int
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	st, err := c.op.Status(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	now := c.now()
	recent, err := c.act.Activity(ctx, event.ActivityQuery{Since: now.Add(-chartHours * time.Hour)})
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p := overviewPage{Query: strings.TrimSpace(r.URL.Query().Get("q")), Filter: r.URL.Query().Get("state"), Total: len(st.Chatbots)}

	var rows []chatbotRow
	for _, cb := range st.Chatbots {
		row := chatbotRow{ChatbotStatus: cb, State: "ok"}
		switch {
		case cb.LastPoll.IsZero():
			row.State = "never"
			p.Never++
		case cb.LastError != "":
			row.State = "failing"
			p.Failing++
		}
		if c.interval > 0 && !cb.LastPoll.IsZero() {
			row.NextPoll = cb.LastPoll.Add(c.interval)
		}
		if p.Filter != "" && p.Filter != row.State {
			continue
		}
		if q := strings.ToLower(p.Query); q != "" && !strings.Contains(strings.ToLower(cb.Name), q) && !strings.Contains(cb.Serial, q) {
			continue
		}
		rows = append(rows, row)
	}
	rank := map[string]int{"failing": 0, "never": 1, "ok": 2}
	slices.SortStableFunc(rows, func(a, b chatbotRow) int {
		return cmp.Or(cmp.Compare(rank[a.State], rank[b.State]), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Serial, b.Serial))
	})
	p.Shown = len(rows)
	page := pageOf(r)
	p.Pager = newPager(r, page, len(rows))
	lo := min((page-1)*perPage, len(rows))
	p.Chatbots = rows[lo:min(lo+perPage, len(rows))]

	counts := hourly(recent, now)
	for _, f := range st.Forwarders {
		row := forwarderRow{ForwarderStatus: f, State: "ok", Chart: draw(f.Name, counts[f.Name], now)}
		lastFailed, seen := false, false
		for _, a := range recent { // newest first
			if a.Forwarder != f.Name {
				continue
			}
			if !seen {
				lastFailed, seen = a.Verdict != event.Acked, true
			}
			if now.Sub(a.At) > time.Hour {
				continue
			}
			if a.Verdict == event.Acked {
				row.LastHourOK++
			} else {
				row.LastHourBad++
			}
		}
		last, err := c.act.Activity(ctx, event.ActivityQuery{Forwarder: f.Name, Verdict: event.Acked, Limit: 1})
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if len(last) > 0 {
			row.LastSuccess = last[0].At
		}
		switch {
		case f.Paused:
			row.State = "paused"
			p.Paused++
		case f.Type == ops.TypeUnconfigured && f.Pending > 0:
			row.State = "stranded"
		case lastFailed:
			row.State = "failing"
		case f.Dead > 0:
			row.State = "dead letters"
		}
		p.Pending += f.Pending
		p.Dead += f.Dead
		p.DeliveredHour += row.LastHourOK
		p.FailedHour += row.LastHourBad
		p.Forwarders = append(p.Forwarders, row)
	}
	frank := map[string]int{"paused": 0, "stranded": 1, "failing": 2, "dead letters": 3, "ok": 4}
	slices.SortStableFunc(p.Forwarders, func(a, b forwarderRow) int {
		return cmp.Or(cmp.Compare(frank[a.State], frank[b.State]), cmp.Compare(a.Name, b.Name))
	})
	c.render(w, r, http.StatusOK, "overview", "Overview", p)
}

type activityPage struct {
	Rows       []event.Attempt
	Forwarders []string
	Chatbot    string
	Kind       string
	Forwarder  string
	Outcome    string
	Pager      pager
}

// maxActivityPages bounds how deep the activity table pages (perPage rows each).
const maxActivityPages = 200

func (c *Console) activity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p := activityPage{Chatbot: strings.TrimSpace(q.Get("chatbot")), Kind: q.Get("kind"), Forwarder: q.Get("forwarder"), Outcome: q.Get("outcome")}
	sel := event.ActivityQuery{Chatbot: p.Chatbot, Forwarder: p.Forwarder}
	switch p.Kind {
	case "", string(event.KindLead), string(event.KindAppointment):
		sel.Kind = event.Kind(p.Kind)
	default:
		c.plain(w, http.StatusBadRequest, fmt.Sprintf("kind=%q: want lead or appointment (or nothing for both).", cut(40, p.Kind)))
		return
	}
	if p.Outcome != "" {
		v, ok := event.ParseVerdict(p.Outcome)
		if !ok {
			c.plain(w, http.StatusBadRequest, fmt.Sprintf("outcome=%q: want delivered, retrying or dead (or nothing for all).", cut(40, p.Outcome)))
			return
		}
		sel.Verdict = v
	}
	page := min(pageOf(r), maxActivityPages)
	sel.Limit = page*perPage + 1
	rows, err := c.act.Activity(r.Context(), sel)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	total := len(rows)
	lo := min((page-1)*perPage, len(rows))
	p.Rows = rows[lo:min(lo+perPage, len(rows))]
	p.Pager = newPager(r, page, min(total, maxActivityPages*perPage))
	st, err := c.op.Status(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, f := range st.Forwarders {
		p.Forwarders = append(p.Forwarders, f.Name)
	}
	c.render(w, r, http.StatusOK, "activity", "Activity", p)
}

type eventPage struct {
	ID        string
	Event     *event.Event
	JSON      string
	Attempts  []event.Attempt
	Dead      []event.DeadLetter
	Forwarder string
}

func (c *Console) eventPage(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	id := r.PathValue("id")
	p := eventPage{ID: id}
	ev, found, err := c.act.ActivityEvent(ctx, id)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if found {
		p.Event = &ev
	}
	if p.Attempts, err = c.act.Activity(ctx, event.ActivityQuery{EventID: id}); err != nil {
		c.fail(w, r, err)
		return
	}
	dead, err := c.op.DeadLetters(ctx, "")
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, d := range dead {
		if d.Event.ID == id {
			p.Dead = append(p.Dead, d)
			if p.Event == nil {
				ev := d.Event
				p.Event = &ev
			}
		}
	}
	if p.Event == nil {
		c.plain(w, http.StatusNotFound, "No event with this id in the activity log or the dead letters "+
			"(the log keeps the last 1,000 attempts per forwarder, for 7 days at most).")
		return
	}
	body, _ := json.MarshalIndent(p.Event, "", "  ")
	p.JSON = string(body)
	c.render(w, r, http.StatusOK, "event", "Event "+cut(12, id), p)
}

type deadPage struct {
	Letters    []event.DeadLetter
	Forwarder  string
	Forwarders []ops.ForwarderStatus // with dead letters, for "all of"
	Paused     []ops.ForwarderStatus
	Pager      pager
	Total      int
}

func (c *Console) deadLetters(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	p := deadPage{Forwarder: r.URL.Query().Get("forwarder")}
	st, err := c.op.Status(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, f := range st.Forwarders {
		if f.Dead > 0 {
			p.Forwarders = append(p.Forwarders, f)
		}
		if f.Paused {
			p.Paused = append(p.Paused, f)
		}
	}
	all, err := c.op.DeadLetters(ctx, p.Forwarder)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	slices.Reverse(all) // newest failure first
	p.Total = len(all)
	page := pageOf(r)
	p.Pager = newPager(r, page, len(all))
	lo := min((page-1)*perPage, len(all))
	p.Letters = all[lo:min(lo+perPage, len(all))]
	c.render(w, r, http.StatusOK, "dead", "Dead letters", p)
}

// deadChange serves the replay and drop buttons: one dead letter (one=FORWARDER/ID), a
// selection (sel=FORWARDER/ID, repeated) or every one of a forwarder (all=FORWARDER).
func (c *Console) deadChange(op string) http.HandlerFunc {
	fn := c.op.Replay
	if op == "drop" {
		fn = c.op.Drop
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			c.plain(w, http.StatusBadRequest, "The form could not be read: "+err.Error())
			return
		}
		type target struct{ forwarder, id string }
		var targets []target
		refs := r.PostForm["sel"]
		if one := r.PostForm.Get("one"); one != "" {
			refs = []string{one}
		}
		for n, ref := range refs {
			i := strings.LastIndexByte(ref, '/')
			if i <= 0 || i == len(ref)-1 {
				c.plain(w, http.StatusBadRequest, fmt.Sprintf("dead letter %d of the form: %q is not FORWARDER/EVENT-ID.", n+1, cut(80, ref)))
				return
			}
			targets = append(targets, target{ref[:i], ref[i+1:]})
		}
		if all := r.PostForm.Get("all"); all != "" && len(targets) == 0 {
			targets = []target{{all, ""}}
		}
		if len(targets) == 0 {
			c.plain(w, http.StatusBadRequest, "Nothing to "+op+": tick dead letters first, or use a button of one dead letter or of a whole forwarder.")
			return
		}
		n := 0
		for _, t := range targets {
			k, err := fn(r.Context(), t.forwarder, t.id)
			if err != nil {
				c.fail(w, r, err)
				return
			}
			n += k
			c.log.Info("dead letters changed through the console", "op", op, "forwarder", t.forwarder, "event_id", t.id, "count", k)
		}
		back := url.Values{"done": {op}, "n": {strconv.Itoa(n)}}
		if f := r.PostForm.Get("forwarder"); f != "" {
			back.Set("forwarder", f)
		}
		http.Redirect(w, r, "/ui/dead?"+back.Encode(), http.StatusSeeOther)
	}
}

func (c *Console) resume(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	was, err := c.op.Resume(r.Context(), name)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	c.log.Info("forwarder resume through the console", "forwarder", name, "was_paused", was)
	done := "running"
	if was {
		done = "resumed"
	}
	back := "/ui/"
	if r.PostFormValue("back") == "dead" {
		back = "/ui/dead"
	}
	http.Redirect(w, r, back+"?"+url.Values{"done": {done}, "f": {name}}.Encode(), http.StatusSeeOther)
}

// loginPage is the login form: where to go after it, and why the last try failed.
type loginPage struct {
	Next  string
	Error string
}
