// Command leadbridge polls the NeoAgent LeadList API for every configured chatbot and
// publishes each new lead or appointment as a CloudEvent to NATS, Slack and webhooks,
// through a durable outbox with retries.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // a runtime failure
	exitUsage   = 2 // bad usage or config
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// After the first signal starts a graceful stop, a second one ends the process at once.
	context.AfterFunc(ctx, stop)
	os.Exit(Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand: it parses its own flags and runs.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

func commands() []command {
	return []command{
		{"run", "poll and deliver until stopped (the daemon)", runCmd},
		{"once", "poll every chatbot once, deliver, exit (for cron)", onceCmd},
		{"demo", "run everything embedded: simulated API, NATS, webhook sink", demoCmd},
		{"config", "config check: validate a config file", configCmd},
		{"send-test", "send a sample event through one forwarder", sendTestCmd},
		{"backfill", "publish the records of a date range on purpose", backfillCmd},
		{"dlq", "list, replay or drop dead letters", dlqCmd},
		{"forwarder", "forwarder resume NAME: resume a paused forwarder", forwarderCmd},
		{"outbox", "move or drop the deliveries of a renamed or removed forwarder", outboxCmd},
		{"status", "show chatbots, outbox depth and dead letters", statusCmd},
		{"reload", "have the running daemon read its config file again", reloadCmd},
		{"store", "store copy --from PATH: copy a bbolt store into the JetStream store", storeCmd},
		{"healthcheck", "exit 0 when a running daemon answers /healthz", healthcheckCmd},
		{"secret", "print a fresh whsec_ webhook signing secret", secretCmd},
		{"version", "print the version", versionCmd},
	}
}

// Main runs leadbridge with args (without the program name) and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, args[1:], stdout, stderr)
		return exitCode(stderr, err)
	}
	fmt.Fprintf(stderr, "leadbridge: unknown command %q\n\n", args[0])
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: leadbridge <command> [flags]\n\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'leadbridge <command> -h' for a command's flags.")
}

// usageError marks a failure caused by the command line or the config: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// errSilent is a failure already reported to the user: exit 1 without another message.
var errSilent = errors.New("failed")

func exitCode(stderr io.Writer, err error) int {
	var ue usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "leadbridge: %v\n", err)
		return exitUsage
	case errors.Is(err, errSilent):
		return exitFailure
	default:
		fmt.Fprintf(stderr, "leadbridge: %v\n", err)
		return exitFailure
	}
}

// writeJSON prints v as indented JSON, for scripts.
func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// newFlags returns a flag set for a subcommand that reports parse errors as usage errors.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("leadbridge "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args, turning a bad flag, a stray argument or a duration out of range
// into a usage error. No duration flag may be negative, and one whose default is not 0
// (a wait, a timeout, an interval) must be positive; a 0 default means "none" or "off".
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	if fs.NArg() > 0 {
		return usageErrorf("%s: unexpected argument %q", fs.Name(), fs.Arg(0))
	}
	var bad error
	fs.VisitAll(func(f *flag.Flag) {
		g, ok := f.Value.(flag.Getter)
		if !ok || bad != nil {
			return
		}
		d, ok := g.Get().(time.Duration)
		switch {
		case !ok:
		case d < 0:
			bad = usageErrorf("--%s: want a duration of 0 or more, got %s", f.Name, d)
		case d == 0 && f.DefValue != "0s":
			bad = usageErrorf("--%s: want a positive duration, got %s", f.Name, d)
		}
	})
	return bad
}
