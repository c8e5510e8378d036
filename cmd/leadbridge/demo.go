package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// demoCmd runs leadbridge between embedded stand-ins and prints each event as it arrives.
func demoCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("demo", stderr)
	interval := fs.Duration("interval", 2*time.Second, "how often the bridge polls the simulated API")
	every := fs.Duration("every", 3*time.Second, "how often the simulated API produces a new lead or appointment")
	duration := fs.Duration("duration", 0, "stop after this long (0: run until Ctrl-C)")
	verbose := fs.Bool("v", false, "show the bridge's info logs (polls, deliveries) on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}
	dir, err := os.MkdirTemp("", "leadbridge-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	printer := &demoPrinter{w: stdout}
	peers, err := startDemoPeers(dir, printer)
	if err != nil {
		return err
	}
	defer peers.Close()
	level := "warn"
	if *verbose {
		level = "info"
	}
	cfg, err := peers.config(*interval, filepath.Join(dir, "leadbridge.db"), level)
	if err != nil {
		return err
	}
	a, err := openApp(ctx, cfg, stderr)
	if err != nil {
		return err
	}
	defer a.Close()
	natsURL := a.nats.ClientURL()
	sub, err := subscribeDemo(natsURL, printer)
	if err != nil {
		return err
	}
	defer sub.Close() // before the embedded server stops

	fmt.Fprintf(stdout, "leadbridge demo: a simulated LeadList API at %s with 2 chatbots,\n", peers.apiURL)
	fmt.Fprintf(stdout, "NATS (JetStream) at %s, a webhook sink at %s.\n", natsURL, peers.sinkURL)
	fmt.Fprintf(stdout, "Polling every %s; a new record every %s; the API repeats old ones on every poll.\n", *interval, *every)
	fmt.Fprintln(stdout, "Each new record arrives once on each target. Ctrl-C stops.")
	fmt.Fprintln(stdout)

	var wg sync.WaitGroup
	wg.Go(func() { _ = a.loop.Run(ctx) })
	wg.Go(func() { _ = a.dispatcher.Run(ctx) })
	wg.Go(func() { peers.api.GenerateEvery(ctx, *every, demoSerials...) })
	wg.Wait()
	fmt.Fprintf(stdout, "\nstopped: %d events delivered to the webhook, %d to NATS.\n", printer.count(false), printer.count(true))
	return nil
}

// demoPrinter prints events for a person watching the demo.
type demoPrinter struct {
	mu      sync.Mutex
	w       io.Writer
	webhook int
	onNATS  int
}

func (p *demoPrinter) event(ev event.Event, signed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.webhook++
	l := ev.Data
	icon, kind := "🙋", "new lead"
	if l.Kind == event.KindAppointment {
		icon, kind = "📅", "appointment booked"
	}
	reach := l.Email
	if l.Phone != "" {
		reach += " · " + l.Phone
	}
	sig := "unsigned"
	if signed {
		sig = "signed"
	}
	fmt.Fprintf(p.w, "%s %s %-18s %s (%s) via %s\n", time.Now().Format("15:04:05"), icon, kind, l.Name, reach, l.ChatbotName)
	fmt.Fprintf(p.w, "           “%s”\n", strings.TrimSpace(l.Content))
	fmt.Fprintf(p.w, "           created %s · id %s… · webhook %s\n", l.CreatedAt.Local().Format("Mon 15:04"), ev.ID[:12], sig)
}

func (p *demoPrinter) nats(subject, id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onNATS++
	if len(id) > 12 {
		id = id[:12]
	}
	fmt.Fprintf(p.w, "%s ⇢ on NATS %s · id %s…\n", time.Now().Format("15:04:05"), subject, id)
}

func (p *demoPrinter) count(nats bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if nats {
		return p.onNATS
	}
	return p.webhook
}
