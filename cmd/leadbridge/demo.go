package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
)

// demoKey is the simulated API's key; it is not a secret.
const demoKey = "demo-key"

// demoConfig is the config the demo runs: a real one, parsed and validated like any
// other, pointed at the embedded parts.
const demoConfig = `
neoagent:
  base_url: %s
  api_key: ` + demoKey + `
  chatbots:
    - {serial: 3254a9d0424c4806b9ea3d0763ccf001, name: Main site}
    - {serial: 8c1e0b7f2a9d4c55b0e4f3a2d1c0b002, name: Pricing page}
poll: {interval: %s, lookback: 48h, initial: emit}
store: {path: %s}
shutdown: {grace: 2s}
forwarders:
  - name: bus
    type: nats
    url: %s
    jetstream: true
    stream: LEADS
  - name: crm
    type: webhook
    url: %s/hooks/leads
    secret: whsec_ZGVtby1zZWNyZXQtZm9yLXNpZ25pbmc=
    retry: {initial_interval: 200ms, max_interval: 2s}
http: {listen: ""}
log: {level: %s, format: text}
`

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

	// The simulated LeadList API, seeded with records from yesterday and today.
	api := leadsim.New(demoKey)
	serials := []string{"3254a9d0424c4806b9ea3d0763ccf001", "8c1e0b7f2a9d4c55b0e4f3a2d1c0b002"}
	now := time.Now()
	for i, s := range serials {
		api.Generate(s, now.Add(-time.Duration(20+i)*time.Hour))
		api.Generate(s, now.Add(-time.Duration(2+i)*time.Hour))
	}
	apiURL, stopAPI, err := serveLocal(api)
	if err != nil {
		return err
	}
	defer stopAPI()

	// An in-process NATS server with JetStream, and a subscriber.
	ns, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: filepath.Join(dir, "nats"), NoLog: true, NoSigs: true,
	})
	if err != nil {
		return fmt.Errorf("demo: starting NATS: %w", err)
	}
	ns.Start()
	defer ns.Shutdown()
	if !ns.ReadyForConnections(5 * time.Second) {
		return fmt.Errorf("demo: NATS did not start")
	}
	printer := &demoPrinter{w: stdout}
	sub, err := natsgo.Connect(ns.ClientURL())
	if err != nil {
		return fmt.Errorf("demo: connecting to NATS: %w", err)
	}
	defer sub.Close()
	if _, err := sub.Subscribe("neoagent.>", func(m *natsgo.Msg) { printer.nats(m.Subject, m.Header.Get("Ce-Id")) }); err != nil {
		return fmt.Errorf("demo: subscribing: %w", err)
	}

	// A local webhook sink standing in for a CRM.
	sinkURL, stopSink, err := serveLocal(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev event.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, "not a CloudEvent", http.StatusBadRequest)
			return
		}
		printer.event(ev, r.Header.Get("webhook-signature") != "")
		w.WriteHeader(http.StatusNoContent)
	}))
	if err != nil {
		return err
	}
	defer stopSink()

	level := "warn"
	if *verbose {
		level = "info"
	}
	cfg, err := config.Parse(fmt.Appendf(nil, demoConfig, apiURL, interval.String(),
		filepath.Join(dir, "leadbridge.db"), ns.ClientURL(), sinkURL, level), "demo")
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	a, err := openApp(cfg, stderr)
	if err != nil {
		return err
	}
	defer a.Close()

	fmt.Fprintf(stdout, "leadbridge demo: a simulated LeadList API at %s with 2 chatbots,\n", apiURL)
	fmt.Fprintf(stdout, "NATS (JetStream) at %s, a webhook sink at %s.\n", ns.ClientURL(), sinkURL)
	fmt.Fprintf(stdout, "Polling every %s; a new record every %s; the API repeats old ones on every poll.\n", *interval, *every)
	fmt.Fprintln(stdout, "Each new record arrives once on each target. Ctrl-C stops.")
	fmt.Fprintln(stdout)

	var wg sync.WaitGroup
	wg.Go(func() { _ = a.loop.Run(ctx) })
	wg.Go(func() { _ = a.dispatcher.Run(ctx) })
	wg.Go(func() { generate(ctx, api, serials, *every) })
	wg.Wait()
	fmt.Fprintf(stdout, "\nstopped: %d events delivered to the webhook, %d to NATS.\n", printer.count(false), printer.count(true))
	return nil
}

// generate adds a new record to a random chatbot every period, as visitors chat.
func generate(ctx context.Context, api *leadsim.Server, serials []string, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			api.Generate(serials[rand.IntN(len(serials))], now)
		}
	}
}

// serveLocal serves h on a fresh loopback port and returns its base URL.
func serveLocal(h http.Handler) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
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
