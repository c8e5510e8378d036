package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/backfill"
	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/ops"
	"github.com/leadbridge/leadbridge/poller"
)

// backfillOptions are the flags of `leadbridge backfill`.
type backfillOptions struct {
	since, until time.Time
	chatbot      string
	forwarder    string
	chunkDays    int
	resend       bool
	dryRun       bool
	maxWait      time.Duration
}

// backfillCmd publishes the records of a date range on purpose (or, with --dry-run, shows
// what it would publish).
func backfillCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("backfill", stderr)
	cfgPath := fs.String("config", "config.yaml", "config file")
	since := fs.String("since", "", "first UTC day to publish, YYYY-MM-DD (required)")
	until := fs.String("until", "", "last UTC day to publish, YYYY-MM-DD (default today)")
	var o backfillOptions
	fs.StringVar(&o.chatbot, "chatbot", "", "only this chatbot serial (default all)")
	fs.StringVar(&o.forwarder, "forwarder", "", "deliver only to this forwarder (default every forwarder whose filters match)")
	fs.IntVar(&o.chunkDays, "chunk-days", 7, "days per LeadList request")
	fs.BoolVar(&o.resend, "resend", false, "publish records seen before too (same event ids)")
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be sent; send and record nothing")
	fs.DurationVar(&o.maxWait, "max-wait", 5*time.Minute, "longest time to keep retrying deliveries; the rest stays in the outbox")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	var err error
	if o.since, err = time.Parse(time.DateOnly, *since); err != nil {
		return usageErrorf("--since: want a date YYYY-MM-DD, got %q", *since)
	}
	o.until = time.Now().UTC().Truncate(24 * time.Hour)
	if *until != "" {
		if o.until, err = time.Parse(time.DateOnly, *until); err != nil {
			return usageErrorf("--until: want a date YYYY-MM-DD, got %q", *until)
		}
	}
	if o.until.Before(o.since) {
		return usageErrorf("--until %s is before --since %s", o.until.Format(time.DateOnly), o.since.Format(time.DateOnly))
	}
	if o.chunkDays < 1 || o.chunkDays > 31 {
		return usageErrorf("--chunk-days: want 1 to 31, got %d", o.chunkDays)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if err := o.check(cfg, *cfgPath); err != nil {
		return err
	}
	if o.dryRun {
		return dryBackfill(ctx, cfg, o, stdout, stderr)
	}
	return liveBackfill(ctx, cfg, o, stdout, stderr)
}

// check makes sure --chatbot and --forwarder, when given, name entries of cfg (read from
// cfgPath).
func (o backfillOptions) check(cfg *config.Config, cfgPath string) error {
	if o.chatbot != "" {
		if _, ok := cfg.Chatbot(o.chatbot); !ok {
			return usageErrorf("--chatbot %q is not in %s", o.chatbot, cfgPath)
		}
	}
	if o.forwarder != "" {
		if _, ok := cfg.Forwarder(o.forwarder); !ok {
			return usageErrorf("--forwarder %q is not in %s", o.forwarder, cfgPath)
		}
	}
	return nil
}

// liveBackfill reads the range into the store's outbox, delivers for at most --max-wait
// and prints the tally; dead letters or deliveries left pending make it fail.
func liveBackfill(ctx context.Context, cfg *config.Config, o backfillOptions, stdout, stderr io.Writer) error {
	a, err := openApp(ctx, cfg, stderr)
	if err != nil {
		return daemonHolds(err, "backfill writes to the store: stop the daemon first (--dry-run works while it runs)")
	}
	defer a.Close()

	b, err := readRange(ctx, cfg, o, a.loop.Clients, a.logger, a.store.Backfill, stdout, stderr)
	if err != nil {
		return err
	}
	t, err := a.drain(ctx, o.maxWait, o.forwarder)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "backfill: %d records found, %d queued, %d sent, %d dead-lettered, %d still pending\n",
		b.Found, b.Queued, t.sent, t.dead, t.pending)
	switch {
	case t.dead > 0:
		return fmt.Errorf("%d deliveries dead-lettered (see `leadbridge dlq list`)", t.dead)
	case t.pending > 0:
		return fmt.Errorf("%d deliveries still pending; they stay in the outbox for `leadbridge run` or the next `once`", t.pending)
	}
	return nil
}

// dryBackfill reads the range and prints what a backfill would send, asking the store
// which records it has seen: through the running daemon when one answers (it holds the
// store), else on the store file, else (no store yet) as if nothing was seen. It sends,
// records and builds nothing.
func dryBackfill(ctx context.Context, cfg *config.Config, o backfillOptions, stdout, stderr io.Writer) error {
	logger := newLogger(cfg.Log, stderr)
	var ingest backfill.IngestFunc
	if _, err := os.Stat(cfg.Store.Path); cfg.Store.Backend != config.BackendNATS && errors.Is(err, fs.ErrNotExist) && !daemonAnswers(ctx, cfg) {
		// Nothing was seen yet: a throwaway store in a temp dir says what is new.
		dir, err := os.MkdirTemp("", "leadbridge-dry-run-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		st, err := dedupe.Open(dedupe.Options{Path: filepath.Join(dir, "dry.db"), Route: cfg.Route, EmitUpdates: cfg.Dedupe.EmitUpdates})
		if err != nil {
			return err
		}
		defer st.Close()
		ingest = st.DryBackfill
	} else {
		b, release, err := backend(ctx, cfg, false)
		if err != nil {
			return err
		}
		defer release()
		ingest = b.DryBackfill
	}
	b, err := readRange(ctx, cfg, o, newClients(cfg), logger, ingest, stdout, stderr)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "dry run: %d records found, %d would be sent; nothing was sent or recorded\n", b.Found, b.Queued)
	return nil
}

// daemonAnswers reports whether something answers /healthz on http.listen (backend then
// decides whether it is our daemon).
func daemonAnswers(ctx context.Context, cfg *config.Config) bool {
	if cfg.HTTP.Listen == "" {
		return false
	}
	_, err := ops.Dial(ctx, cfg.HTTP.Listen, cfg.HTTP.AdminToken)
	return err == nil || errors.Is(err, ops.ErrUnproven)
}

// readRange reads o's range into ingest, printing progress on stderr and, for a dry
// run, each event it would send on stdout.
func readRange(ctx context.Context, cfg *config.Config, o backfillOptions, clients map[string]*poller.Client,
	logger *slog.Logger, ingest backfill.IngestFunc, stdout, stderr io.Writer) (backfill.Tally, error) {
	r := &backfill.Reader{Since: o.since, Until: o.until, ChunkDays: o.chunkDays, Chatbots: cfg.Chatbots(), Chatbot: o.chatbot,
		Clients: clients, Route: cfg.Route, Forwarder: o.forwarder, Resend: o.resend, Ingest: ingest, Logger: logger}
	p := newProgress(stderr)
	p.start(len(r.Chunks()) * len(r.Bots()))
	defer p.done()
	r.OnChunk = func(c backfill.Chunk) {
		if o.dryRun {
			printDry(stdout, c.Events)
		}
		p.step(fmt.Sprintf("%s %s..%s", c.Chatbot.Name, c.Window.Start.Format(time.DateOnly), c.Window.End.Format(time.DateOnly)),
			c.Found, c.New, len(c.Events))
	}
	return r.Read(ctx)
}

// printDry prints the events a dry run would send, one line each.
func printDry(w io.Writer, events []backfill.Event) {
	for _, ev := range events {
		fmt.Fprintf(w, "would send %s %-11s %s session %d id %s to %s\n",
			ev.Data.CreatedAt.Format(time.RFC3339), ev.Kind(), ev.Chatbot(), ev.Data.SessionID, ev.ID,
			strings.Join(ev.Targets, ","))
	}
}

// progress shows a live line on a terminal and plain lines otherwise.
type progress struct {
	w        io.Writer
	terminal bool
	total    int
	n        int
	found    int
	fresh    int
	queued   int
	began    time.Time
}

func newProgress(w io.Writer) *progress {
	p := &progress{w: w}
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			p.terminal = true
		}
	}
	return p
}

func (p *progress) start(total int) {
	p.total, p.began = total, time.Now()
}

func (p *progress) step(label string, found, fresh, queued int) {
	p.n++
	p.found += found
	p.fresh += fresh
	p.queued += queued
	elapsed := time.Since(p.began)
	rate := float64(p.n) / elapsed.Seconds()
	eta := time.Duration(float64(p.total-p.n) / rate * float64(time.Second))
	line := fmt.Sprintf("chunks %d/%d · found %d · new %d · queued %d · %.1f chunks/s · ETA %s",
		p.n, p.total, p.found, p.fresh, p.queued, rate, eta.Round(time.Second))
	if p.terminal {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		return
	}
	fmt.Fprintf(p.w, "backfill %s: %s\n", label, line)
}

func (p *progress) done() {
	if p.terminal && p.n > 0 {
		fmt.Fprintln(p.w)
	}
}
