package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/leadbridge/leadbridge/config"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
)

// demoKey is the simulated API's key; it is not a secret.
const demoKey = "demo-key"

// demoSerials are the demo's chatbots, as demoConfig names them.
var demoSerials = []string{"3254a9d0424c4806b9ea3d0763ccf001", "8c1e0b7f2a9d4c55b0e4f3a2d1c0b002"}

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
nats_server: {listen: "127.0.0.1:0", store_dir: %s}
forwarders:
  - name: bus
    type: nats
    url: embedded
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

// demoPeers are the stand-ins the demo bridges between, each on loopback: the simulated
// LeadList API seeded with records from yesterday and today, and a webhook sink standing
// in for a CRM. What arrives at the sink goes to the printer. NATS is leadbridge's own
// embedded server (nats_server in the config), with a subscriber (subscribeDemo).
type demoPeers struct {
	api             *leadsim.Server
	apiURL, sinkURL string
	natsDir         string   // the embedded server's JetStream files
	stops           []func() // in start order
}

// startDemoPeers starts the stand-ins; the embedded NATS server is to keep its files
// under dir. On failure it stops what it started.
func startDemoPeers(dir string, printer *demoPrinter) (p *demoPeers, err error) {
	p = &demoPeers{api: leadsim.New(demoKey), natsDir: filepath.Join(dir, "nats")}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	now := time.Now()
	for i, s := range demoSerials {
		p.api.Generate(s, now.Add(-time.Duration(20+i)*time.Hour))
		p.api.Generate(s, now.Add(-time.Duration(2+i)*time.Hour))
	}
	if p.apiURL, err = p.serveLocal(p.api); err != nil {
		return p, err
	}

	p.sinkURL, err = p.serveLocal(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev event.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			http.Error(w, "not a CloudEvent", http.StatusBadRequest)
			return
		}
		printer.event(ev, r.Header.Get("webhook-signature") != "")
		w.WriteHeader(http.StatusNoContent)
	}))
	return p, err
}

// config is the demo's config pointed at the peers: polls every interval, logs at
// level, keeps its store at dbPath.
func (p *demoPeers) config(interval time.Duration, dbPath, level string) (*config.Config, error) {
	cfg, err := config.Parse(fmt.Appendf(nil, demoConfig, p.apiURL, interval.String(), dbPath, p.natsDir, p.sinkURL, level), "demo")
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	return cfg, nil
}

// subscribeDemo subscribes to every event on the NATS server at url and prints each
// as it arrives; the caller closes the connection.
func subscribeDemo(url string, printer *demoPrinter) (*natsgo.Conn, error) {
	nc, err := natsgo.Connect(url)
	if err != nil {
		return nil, fmt.Errorf("demo: connecting to NATS: %w", err)
	}
	if _, err := nc.Subscribe("neoagent.>", func(m *natsgo.Msg) { printer.nats(m.Subject, m.Header.Get("Ce-Id")) }); err != nil {
		nc.Close()
		return nil, fmt.Errorf("demo: subscribing: %w", err)
	}
	return nc, nil
}

// serveLocal serves h on a fresh loopback port until Close and returns its base URL.
func (p *demoPeers) serveLocal(h http.Handler) (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	p.stops = append(p.stops, func() { _ = srv.Close() })
	return "http://" + ln.Addr().String(), nil
}

// Close stops the peers, the last started first.
func (p *demoPeers) Close() {
	for i := len(p.stops) - 1; i >= 0; i-- {
		p.stops[i]()
	}
	p.stops = nil
}
