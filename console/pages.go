package console

import (
	"cmp"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
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
	"took":   took,
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

// took shows an attempt's duration: to the millisecond, finer below one; "–" when
// unknown (an attempt logged before leadbridge kept it).
func took(d time.Duration) string {
	switch {
	case d <= 0:
		return "–"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
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
// shown only when the redirect's signature (flashSig) holds for the session, so that a
// link cannot make the console say something it did not do.
func (c *Console) flash(r *http.Request, session string) string {
	q := r.URL.Query()
	if !hmac.Equal([]byte(q.Get("sig")), []byte(c.flashSig(session, q))) {
		return ""
	}
	n, _ := strconv.Atoi(q.Get("n"))
	switch done := q.Get("done"); {
	case n == 0 && done == "replay": // a second click of the button, or someone was quicker
		return "Nothing was replayed: already replayed or dropped."
	case n == 0 && done == "drop":
		return "Nothing was dropped: already replayed or dropped."
	case done == "replay":
		return fmt.Sprintf("Replayed %s: back in the outbox, delivered shortly.", plural(n, "dead letter"))
	case done == "drop":
		return fmt.Sprintf("Dropped %s.", plural(n, "dead letter"))
	case done == "resumed":
		return fmt.Sprintf("Resumed forwarder %q: it delivers what it owes again.", q.Get("f"))
	case done == "running":
		return fmt.Sprintf("Forwarder %q was not paused.", q.Get("f"))
	}
	return ""
}

// flashSig signs the done, n and f of a redirect after an action, for session.
func (c *Console) flashSig(session string, v url.Values) string {
	h := hmac.New(sha256.New, c.csrfKey)
	h.Write([]byte("leadbridge console flash v1\x00" + session + "\x00" + v.Get("done") + "\x00" + v.Get("n") + "\x00" + v.Get("f")))
	return hex.EncodeToString(h.Sum(nil))
}

// afterAction redirects to path with the flash v says, signed for r's session.
func (c *Console) afterAction(w http.ResponseWriter, r *http.Request, path string, v url.Values) {
	v.Set("sig", c.flashSig(whoOf(r).session, v))
	http.Redirect(w, r, path+"?"+v.Encode(), http.StatusSeeOther)
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
		q.Del("sig")
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
	State    string // ops.StateFailing, ops.StateNotPolled, ops.StateOK
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
	Accounts       []ops.AccountSummary // failing first, at most perPage
	MoreAccounts   int                  // accounts not listed
	AccountNames   []string             // every account, for the filter
	Account        string               // the account filter
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
	q := r.URL.Query()
	p := overviewPage{Query: strings.TrimSpace(q.Get("q")), Filter: q.Get("state"), Account: q.Get("account")}
	switch p.Filter {
	case "", ops.StateFailing, ops.StateNotPolled, ops.StateOK:
	default:
		c.plain(w, http.StatusBadRequest, fmt.Sprintf("state=%q: want failing, never or ok (or nothing for all).", cut(40, p.Filter)))
		return
	}
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
	p.Total = len(st.Chatbots)
	accounts := ops.Accounts(st.Chatbots)
	for _, a := range accounts {
		p.AccountNames = append(p.AccountNames, a.Name)
		p.Failing += a.Failing
		p.Never += a.NotPolled
	}
	if p.Account != "" && !slices.Contains(p.AccountNames, p.Account) {
		c.plain(w, http.StatusBadRequest, fmt.Sprintf("account=%q: no configured chatbot is in that account.", cut(40, p.Account)))
		return
	}
	slices.SortStableFunc(accounts, func(a, b ops.AccountSummary) int {
		return cmp.Or(-cmp.Compare(min(a.Failing, 1), min(b.Failing, 1)), -cmp.Compare(a.Failing, b.Failing), cmp.Compare(a.Name, b.Name))
	})
	p.Accounts = accounts[:min(len(accounts), perPage)]
	p.MoreAccounts = len(accounts) - len(p.Accounts)

	var rows []chatbotRow
	for _, cb := range st.Chatbots {
		row := chatbotRow{ChatbotStatus: cb, State: cb.State()}
		if every := cmp.Or(cb.Interval, c.interval); every > 0 && !cb.LastPoll.IsZero() {
			row.NextPoll = cb.LastPoll.Add(every)
		}
		if (p.Filter != "" && p.Filter != row.State) || (p.Account != "" && p.Account != cb.Account) {
			continue
		}
		if q := strings.ToLower(p.Query); q != "" && !strings.Contains(strings.ToLower(cb.Name), q) && !strings.Contains(cb.Serial, q) {
			continue
		}
		rows = append(rows, row)
	}
	rank := map[string]int{ops.StateFailing: 0, ops.StateNotPolled: 1, ops.StateOK: 2}
	slices.SortStableFunc(rows, func(a, b chatbotRow) int {
		return cmp.Or(cmp.Compare(rank[a.State], rank[b.State]), cmp.Compare(a.Account, b.Account),
			cmp.Compare(a.Name, b.Name), cmp.Compare(a.Serial, b.Serial))
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
	Accounts   []string
	Account    string
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
	p := activityPage{Chatbot: strings.TrimSpace(q.Get("chatbot")), Kind: q.Get("kind"), Forwarder: q.Get("forwarder"),
		Outcome: q.Get("outcome"), Account: q.Get("account")}
	sel := event.ActivityQuery{Chatbot: p.Chatbot, Forwarder: p.Forwarder, Account: p.Account}
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
	st, err := c.op.StatusWithoutSeen(r.Context())
	if err != nil {
		c.fail(w, r, err)
		return
	}
	for _, f := range st.Forwarders {
		p.Forwarders = append(p.Forwarders, f.Name)
	}
	for _, a := range ops.Accounts(st.Chatbots) {
		p.Accounts = append(p.Accounts, a.Name)
	}
	if p.Account != "" && !slices.Contains(p.Accounts, p.Account) {
		p.Accounts = append(p.Accounts, p.Account) // no longer configured, but its attempts may be logged
	}
	if p.Forwarder != "" && !slices.Contains(p.Forwarders, p.Forwarder) {
		p.Forwarders = append(p.Forwarders, p.Forwarder)
	}
	c.render(w, r, http.StatusOK, "activity", "Activity", p)
}

type eventPage struct {
	Gone      map[string]bool // forwarders no longer configured
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
	st, err := c.op.StatusWithoutSeen(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.Gone = unconfigured(st)
	for _, d := range dead {
		if d.Event.ID == id {
			p.Dead = append(p.Dead, d)
			if p.Event == nil {
				ev := d.Event
				p.Event = &ev
			}
		}
	}
	if p.Event == nil && len(p.Attempts) == 0 {
		c.plain(w, http.StatusNotFound, "No event with this id in the activity log or the dead letters "+
			"(the log keeps the last 1,000 attempts per forwarder, for 7 days at most).")
		return
	}
	if p.Event != nil { // else the store lost the event its attempts refer to: they show without it
		body, _ := json.MarshalIndent(p.Event, "", "  ")
		p.JSON = string(body)
	}
	c.render(w, r, http.StatusOK, "event", "Event "+cut(12, id), p)
}

// unconfigured is the set of forwarders st lists that the config no longer has: their dead
// letters can be dropped, but a replay would only strand them in the outbox.
func unconfigured(st ops.Status) map[string]bool {
	out := map[string]bool{}
	for _, f := range st.Forwarders {
		if f.Type == ops.TypeUnconfigured {
			out[f.Name] = true
		}
	}
	return out
}

type deadPage struct {
	Gone       map[string]bool // forwarders no longer configured
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
	st, err := c.op.StatusWithoutSeen(ctx)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	p.Gone = unconfigured(st)
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
// selection (sel=FORWARDER/ID, repeated; at most a page of them, since each is a store
// transaction that reads every dead letter of its forwarder) or every one of a forwarder
// (all=FORWARDER, one transaction).
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
		if len(refs) > perPage {
			c.plain(w, http.StatusBadRequest, fmt.Sprintf("%d dead letters ticked: at most %d (a page) at once, "+
				"or use the button for all of a forwarder. Nothing was done.", len(refs), perPage))
			return
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
		if op == "replay" {
			st, err := c.op.StatusWithoutSeen(r.Context())
			if err != nil {
				c.fail(w, r, err)
				return
			}
			gone := unconfigured(st)
			for n, t := range targets {
				if gone[t.forwarder] {
					c.plain(w, http.StatusBadRequest, fmt.Sprintf("dead letter %d of the form: forwarder %q is no longer configured, "+
						"so a replay would leave the delivery stranded in the outbox. Drop it, or put the forwarder back "+
						"in the config and reload first. Nothing was replayed.", n+1, cut(80, t.forwarder)))
					return
				}
			}
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
		c.afterAction(w, r, "/ui/dead", back)
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
	c.afterAction(w, r, back, url.Values{"done": {done}, "f": {name}})
}

// loginPage is the login form: where to go after it, and why the last try failed.
type loginPage struct {
	Next  string
	Error string
}
