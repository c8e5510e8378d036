package ops

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// maxStatusText caps error and reason texts in the status table.
const maxStatusText = 60

// WriteStatus writes s as tables a person reads in a terminal: each chatbot's last poll
// and its result, each forwarder's outbox, dead letters and pause (and, for a forwarder
// no longer configured, that its deliveries are stranded and how to fix it), and a
// summary line.
func WriteStatus(w io.Writer, s Status) error {
	now := time.Now()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	source := "daemon not running; read from the store"
	if s.Daemon {
		source = "daemon running"
	}
	fmt.Fprintf(tw, "leadbridge %s (%s)\n\n", s.Version, source)

	failing := 0
	fmt.Fprintln(tw, "CHATBOT\tSERIAL\tLAST POLL\tSEEN\tRESULT")
	for _, c := range s.Chatbots {
		result := "ok"
		switch {
		case c.LastPoll.IsZero():
			result = "not polled yet"
		case c.LastError != "":
			failing++
			// The serial has its own column; the error need not repeat it.
			msg := strings.TrimPrefix(c.LastError, fmt.Sprintf("leadlist chatbot %q: ", c.Serial))
			result = "error: " + cut(msg, maxStatusText)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", orDash(cut(c.Name, maxStatusText)), c.Serial, ago(now, c.LastPoll), c.Seen, result)
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

	fmt.Fprintf(tw, "\n%s (%d failing), %s (%d paused), %d pending (%d stranded), %s\n",
		plural(len(s.Chatbots), "chatbot"), failing, plural(len(s.Forwarders), "forwarder"), paused,
		pending, stranded, plural(dead, "dead letter"))
	return tw.Flush()
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
