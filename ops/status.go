package ops

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// maxStatusText caps error and reason texts in the status table.
const maxStatusText = 60

// LeaseHolders is implemented by a store whose chatbots replicas share through leases
// (backend nats): who holds each.
type LeaseHolders interface {
	// Holders returns the replica holding each chatbot's lease, by serial.
	Holders(ctx context.Context) (map[string]string, error)
}

// polledBy fills in each chatbot's PolledBy when store is a LeaseHolders.
func polledBy(ctx context.Context, store any, bots []ChatbotStatus) error {
	lh, ok := store.(LeaseHolders)
	if !ok {
		return nil
	}
	holders, err := lh.Holders(ctx)
	if err != nil {
		return err
	}
	for i := range bots {
		bots[i].PolledBy = holders[bots[i].Serial]
	}
	return nil
}

// StatusView picks what WriteStatus shows of the chatbots.
type StatusView struct {
	// Account, when set, shows only that account's chatbots.
	Account string
	// Failing shows only the failing chatbots (and the accounts that have any).
	Failing bool
	// All lists every chatbot; otherwise, past smallStatus chatbots, only the failing
	// ones are listed and the rest are counted in their account's line.
	All bool
}

// smallStatus is how many chatbots WriteStatus lists one by one without StatusView.All.
const smallStatus = 20

// AccountSummary sums up one account's chatbots, for `status` and the web console.
type AccountSummary struct {
	Name      string
	Chatbots  int
	OK        int       // polled, and the last poll succeeded
	Failing   int       // the last poll failed
	NotPolled int       // never polled yet
	Seen      int       // records the store holds as seen, over its chatbots
	LastPoll  time.Time // the latest poll of any of its chatbots
	LastOK    time.Time // the latest successful poll of any of its chatbots
}

// Accounts sums up bots by account, the accounts in the order they first come in bots.
func Accounts(bots []ChatbotStatus) []AccountSummary {
	var out []AccountSummary
	index := map[string]int{}
	for _, c := range bots {
		i, ok := index[c.Account]
		if !ok {
			i = len(out)
			index[c.Account] = i
			out = append(out, AccountSummary{Name: c.Account})
		}
		a := &out[i]
		a.Chatbots++
		a.Seen += c.Seen
		if c.LastPoll.After(a.LastPoll) {
			a.LastPoll = c.LastPoll
		}
		if c.LastOK.After(a.LastOK) {
			a.LastOK = c.LastOK
		}
		switch c.State() {
		case StateNotPolled:
			a.NotPolled++
		case StateFailing:
			a.Failing++
		default:
			a.OK++
		}
	}
	return out
}

// A chatbot's state, as ChatbotStatus.State names it.
const (
	StateOK        = "ok"      // its last poll succeeded
	StateFailing   = "failing" // its last poll failed
	StateNotPolled = "never"   // not polled yet
)

// State is the chatbot's state: StateNotPolled, StateFailing or StateOK.
func (c ChatbotStatus) State() string {
	switch {
	case c.LastPoll.IsZero():
		return StateNotPolled
	case c.LastError != "":
		return StateFailing
	}
	return StateOK
}

// WriteStatus writes s as tables a person reads in a terminal, readable with thousands
// of chatbots: a line per account (its chatbots, how many are ok, failing and not polled
// yet), the chatbots one by one (all of them for a few, else the failing ones, unless
// v.All) with their last poll and its result, each forwarder's outbox, dead letters and
// pause (and, for a forwarder no longer configured, that its deliveries are stranded and
// how to fix it), and a summary line. v.Account naming no account of s is an error.
func WriteStatus(w io.Writer, s Status, v StatusView) error {
	now := time.Now()
	var bots []ChatbotStatus
	for _, c := range s.Chatbots {
		if v.Account == "" || c.Account == v.Account {
			bots = append(bots, c)
		}
	}
	if err := v.check(s); err != nil {
		return err
	}
	accounts := Accounts(bots)
	failing := 0
	for _, a := range accounts {
		failing += a.Failing
	}

	// The chatbots listed are grouped by account, in the order the accounts came.
	order := make(map[string]int, len(accounts))
	for i, a := range accounts {
		order[a.Name] = i
	}
	slices.SortStableFunc(bots, func(a, b ChatbotStatus) int { return order[a.Account] - order[b.Account] })

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	source := "daemon not running; read from the store"
	if s.Daemon {
		source = "daemon running"
	}
	fmt.Fprintf(tw, "leadbridge %s (%s)\n\n", s.Version, source)

	fmt.Fprintln(tw, "ACCOUNT\tCHATBOTS\tOK\tFAILING\tNOT POLLED\tSEEN\tLAST POLL")
	for _, a := range accounts {
		if v.Failing && a.Failing == 0 {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%s\n", orDash(a.Name), a.Chatbots, a.OK, a.Failing, a.NotPolled, a.Seen, ago(now, a.LastPoll))
	}

	listAll := v.All || (!v.Failing && len(bots) <= smallStatus)
	listed := 0
	// The replicas polling the chatbots get a column when they share them (backend nats).
	shared := slices.ContainsFunc(s.Chatbots, func(c ChatbotStatus) bool { return c.PolledBy != "" })
	if shared {
		fmt.Fprintln(tw, "\nCHATBOT\tSERIAL\tACCOUNT\tPOLLED BY\tLAST POLL\tSEEN\tRESULT")
	} else {
		fmt.Fprintln(tw, "\nCHATBOT\tSERIAL\tACCOUNT\tLAST POLL\tSEEN\tRESULT")
	}
	for _, c := range bots {
		result := "ok"
		switch c.State() {
		case StateNotPolled:
			result = "not polled yet"
		case StateFailing:
			// The serial has its own column; the error need not repeat it.
			msg := strings.TrimPrefix(c.LastError, fmt.Sprintf("leadlist chatbot %q: ", c.Serial))
			result = "error: " + cut(msg, maxStatusText)
		}
		if c.LastError == "" && !listAll {
			continue
		}
		listed++
		if shared {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", orDash(cut(c.Name, maxStatusText)), c.Serial, orDash(c.Account),
				orDash(c.PolledBy), ago(now, c.LastPoll), c.Seen, result)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", orDash(cut(c.Name, maxStatusText)), c.Serial, orDash(c.Account), ago(now, c.LastPoll), c.Seen, result)
	}
	switch rest := len(bots) - listed; {
	case listed == 0 && v.Failing:
		fmt.Fprintln(tw, "(no chatbot failing)")
	case rest > 0 && !v.Failing:
		fmt.Fprintf(tw, "(%s not failing, not listed: --all lists them)\n", plural(rest, "chatbot"))
	}

	pending, dead, paused, stranded := 0, 0, 0, 0
	fmt.Fprintln(tw, "\nFORWARDER\tTYPE\tPENDING\tDEAD\tSTATE")
	for _, f := range s.Forwarders {
		pending += f.Pending
		dead += f.Dead
		state := "running"
		switch {
		case f.Type == TypeUnconfigured && f.Pending > 0:
			stranded += f.Pending
			state = fmt.Sprintf("STRANDED: not in the config; `outbox move --from %s --to NEW` or `outbox drop --forwarder %s`", f.Name, f.Name)
		case f.Type == TypeUnconfigured && f.Dead > 0:
			state = fmt.Sprintf("not in the config; its dead letters: `dlq drop --forwarder %s --all`", f.Name)
		case f.Type == TypeUnconfigured:
			state = "not in the config"
		}
		if f.Paused {
			paused++
			state = fmt.Sprintf("PAUSED %s: %s", ago(now, f.PausedSince), cut(f.PausedReason, maxStatusText))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", f.Name, orDash(f.Type), f.Pending, f.Dead, state)
	}

	fmt.Fprintf(tw, "\n%s in %s (%d failing), %s (%d paused), %d pending (%d stranded), %s\n",
		plural(len(bots), "chatbot"), plural(len(accounts), "account"), failing,
		plural(len(s.Forwarders), "forwarder"), paused, pending, stranded, plural(dead, "dead letter"))
	return tw.Flush()
}

// Filter keeps the chatbots of s that v shows (v.All aside: it only changes the table),
// for `status --json`. v.Account naming no account of s is an error.
func (v StatusView) Filter(s Status) (Status, error) {
	if err := v.check(s); err != nil {
		return Status{}, err
	}
	bots := make([]ChatbotStatus, 0, len(s.Chatbots))
	for _, c := range s.Chatbots {
		if (v.Account == "" || c.Account == v.Account) && (!v.Failing || c.LastError != "") {
			bots = append(bots, c)
		}
	}
	s.Chatbots = bots
	return s, nil
}

// check makes sure v.Account, when set, is an account of s.
func (v StatusView) check(s Status) error {
	names := accountNames(s)
	if v.Account != "" && !slices.Contains(names, v.Account) {
		return fmt.Errorf("status: no account %q among the chatbots (accounts: %s)", v.Account, strings.Join(names, ", "))
	}
	return nil
}

// accountNames lists the accounts of s's chatbots, each once, in order.
func accountNames(s Status) []string {
	var names []string
	for _, c := range s.Chatbots {
		if !slices.Contains(names, c.Account) {
			names = append(names, c.Account)
		}
	}
	return names
}

// ago says how long before now t was, roughly: "45s ago", "2m ago", "3h ago", "4d ago".
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < time.Second:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d/time.Minute))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d/time.Hour))
	}
	return fmt.Sprintf("%dd ago", int(d/(24*time.Hour)))
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

func orDash(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	return s
}

// WriteDeadLetters prints dead letters as a table for a terminal: event id, chatbot,
// kind, forwarder, attempts, when it failed and the last error.
func WriteDeadLetters(w io.Writer, dead []event.DeadLetter) error {
	if len(dead) == 0 {
		_, err := fmt.Fprintln(w, "no dead letters")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EVENT ID\tCHATBOT\tKIND\tFORWARDER\tATTEMPTS\tFAILED\tLAST ERROR")
	for _, d := range dead {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", d.Event.ID, d.Event.Chatbot(), d.Event.Kind(), d.Forwarder,
			d.Attempts, d.Failed.Local().Format(time.DateTime), cut(d.LastError, 100))
	}
	return tw.Flush()
}
