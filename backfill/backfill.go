// Package backfill reads the records of a date range on purpose: chatbot by chatbot, in
// windows of a few days, keeps those created on the requested UTC days, each once, and
// hands them to the store, which queues what the chosen forwarders take.
package backfill

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/poller"
)

const day = 24 * time.Hour

// IngestFunc takes one page of a chatbot's records, or says what taking it would do
// (the shape of the stores' Backfill and DryBackfill).
type IngestFunc func(ctx context.Context, serial string, leads []event.Lead, o event.BackfillOptions) (event.Ingested, error)

// Reader reads a range of UTC days, Since to Until (both included, each at midnight UTC),
// into Ingest. Set the fields before Read; a Reader reads once.
type Reader struct {
	Since, Until time.Time
	ChunkDays    int                        // days per LeadList request (at least 1)
	Chatbots     []event.Chatbot            // the configured chatbots
	Chatbot      string                     // if set, only the chatbot with this serial
	Clients      map[string]*poller.Client  // LeadList clients by account
	Route        func(event.Event) []string // the forwarders that want an event; nil → none
	Forwarder    string                     // if set, deliver only to this forwarder
	Resend       bool                       // publish records seen before too (same event ids)
	Ingest       IngestFunc
	Logger       *slog.Logger // nil → discard
	// OnChunk, if set, is told of each window read, in order.
	OnChunk func(Chunk)

	taken map[string]bool // keys ingested in this run, so a record in two windows goes once
}

// Chunk is what reading one chatbot's window found.
type Chunk struct {
	Chatbot event.Chatbot
	Window  poller.Window
	Found   int     // records created in the range and not already found in this run
	New     int     // of those, the records the store had never seen
	Events  []Event // the events queued (or, dry, that would be) for some forwarder
}

// Event is an event a backfill queues, with the forwarders it goes to.
type Event struct {
	event.Event
	Targets []string
}

// Tally is what a whole Read found and queued.
type Tally struct {
	Found  int // records created in the range, each counted once
	Queued int // events queued for at least one forwarder
}

// Chunks are the windows read for each chatbot. The API filters on its own days, which
// may be local rather than UTC and may end before or at endTime; so the windows reach a
// day beyond the range on both sides, and Read keeps exactly the requested days.
func (r *Reader) Chunks() []poller.Window {
	return poller.Window{Start: r.Since.Add(-day), End: r.Until.Add(day)}.Chunks(r.ChunkDays)
}

// Bots are the chatbots Read reads: every configured one, or the one Chatbot names.
func (r *Reader) Bots() []event.Chatbot {
	var bots []event.Chatbot
	for _, cb := range r.Chatbots {
		if r.Chatbot == "" || cb.Serial == r.Chatbot {
			bots = append(bots, cb)
		}
	}
	return bots
}

// Read reads every window of every chatbot of Bots, oldest first, and ingests the
// records of the range. It stops at the first failed request or ingest; what it ingested
// before stays.
func (r *Reader) Read(ctx context.Context) (Tally, error) {
	var t Tally
	if r.Until.Before(r.Since) {
		return t, fmt.Errorf("backfill: the range ends (%s) before it starts (%s)", r.Until.Format(time.DateOnly), r.Since.Format(time.DateOnly))
	}
	logger := r.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	r.taken = make(map[string]bool)
	opts := event.BackfillOptions{Resend: r.Resend}
	if r.Forwarder != "" {
		opts.Only = []string{r.Forwarder}
	}
	chunks := r.Chunks()
	for _, bot := range r.Bots() {
		client, ok := r.Clients[bot.Account]
		if !ok {
			return t, fmt.Errorf("backfill %s: no LeadList client for account %q", bot.Serial, bot.Account)
		}
		for _, w := range chunks {
			if err := ctx.Err(); err != nil {
				return t, err
			}
			page, err := client.List(ctx, bot, w)
			if err != nil {
				return t, fmt.Errorf("backfill %s %s..%s: %w", bot.Serial, w.Start.Format(time.DateOnly), w.End.Format(time.DateOnly), err)
			}
			for _, s := range page.Skipped {
				logger.Warn("skipped a malformed record", "chatbot", bot.Serial, "index", s.Index, "reason", s.Err)
			}
			leads := r.inRange(page.Leads)
			res, err := r.Ingest(ctx, bot.Serial, leads, opts)
			if err != nil {
				return t, fmt.Errorf("backfill %s %s..%s: %w", bot.Serial, w.Start.Format(time.DateOnly), w.End.Format(time.DateOnly), err)
			}
			c := Chunk{Chatbot: bot, Window: w, Found: len(leads), New: res.New, Events: r.wanted(res.Events)}
			t.Found += c.Found
			t.Queued += len(c.Events)
			if r.OnChunk != nil {
				r.OnChunk(c)
			}
		}
	}
	return t, nil
}

// inRange keeps the records created within the requested days (the API's filter works on
// its own days, which may not be UTC) that this run has not ingested yet.
func (r *Reader) inRange(leads []event.Lead) []event.Lead {
	end := r.Until.Add(day)
	var out []event.Lead
	for _, l := range leads {
		if l.CreatedAt.Before(r.Since) || !l.CreatedAt.Before(end) || r.taken[l.Key()] {
			continue
		}
		r.taken[l.Key()] = true
		out = append(out, l)
	}
	return out
}

// wanted are the events some forwarder of this backfill takes, with those forwarders:
// the ones Route names, or only Forwarder.
func (r *Reader) wanted(events []event.Event) []Event {
	var out []Event
	if r.Route == nil {
		return nil
	}
	for _, ev := range events {
		targets := r.Route(ev)
		if f := r.Forwarder; f != "" {
			targets = slices.DeleteFunc(slices.Clone(targets), func(n string) bool { return n != f })
		}
		if len(targets) > 0 {
			out = append(out, Event{Event: ev, Targets: targets})
		}
	}
	return out
}
