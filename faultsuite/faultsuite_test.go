package faultsuite

import (
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

var seedFlag = flag.String("seed", "",
	`seed of the fault schedule: a number, or "random"; default $LEADBRIDGE_FAULT_SEED, else 1`)

// The scenario's shape. The Slack forwarder sends at most one message a second, so the
// share of appointments (the only kind Slack gets) stays modest.
const (
	numRecords     = 300
	genDuration    = 40 * time.Second
	apptShare      = 0.12
	updateEvery    = 7  // every 7th new record, an older one changes Count and Content
	sinkFaultPct   = 20 // share of webhook attempts answered with a fault
	slackFaultPct  = 15 // share of Slack attempts answered with a fault
	numKills       = 6  // SIGKILLs during the run
	natsOutage     = 4 * time.Second
	shutdownGrace  = 2 * time.Second
	termDeadline   = shutdownGrace + 8*time.Second // a SIGTERM not obeyed by then is a hang
	drainDeadline  = 90 * time.Second
	quietPeriod    = 2 * time.Second
	apiTimeout     = 2 * time.Second
	apiSlowAnswer  = 3 * time.Second // longer than apiTimeout
	firstSessionID = 700000
)

// Secrets the bridge is given; none may appear in its logs.
const (
	apiKey       = "fsk-live-4b7c1e9a0d"
	natsUser     = "leadbridge"
	natsPassword = "nats-pw-3f8e2a61"
	slackSecret  = "xwh9SlackSecretPart7d"
	signingKey   = "fault-suite-signing-key-c0ffee"
)

// serials are the chatbots; the crm-one webhook takes only the first.
var serials = []string{"faultbot-a-3254a9d0", "faultbot-b-8f1c2e7a", "faultbot-c-90b44d5f", "faultbot-d-a1c3e2b7"}

// suiteSeed picks the seed: -seed, then $LEADBRIDGE_FAULT_SEED, then 1.
func suiteSeed(t *testing.T) uint64 {
	v := *seedFlag
	if v == "" {
		v = os.Getenv("LEADBRIDGE_FAULT_SEED")
	}
	switch v {
	case "":
		return 1
	case "random":
		return uint64(time.Now().UnixNano()%1_000_000_000) + 1
	}
	n, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, "seed must be a number or \"random\"")
	return n
}

// apiFaults are the faults the simulated API answers polls with, by name.
var apiFaults = []struct {
	name  string
	fault leadsim.Fault
}{
	{"500", leadsim.Fault{Status: 500}},
	{"429", leadsim.Fault{Status: 429, RetryAfter: "1"}},
	{"success-false", leadsim.Fault{APIError: "internal server busy"}},
	{"malformed", leadsim.Fault{Malformed: true}},
	{"slow", leadsim.Fault{Delay: apiSlowAnswer}},
	{"bad-record", leadsim.Fault{BadRecord: true}},
}

// action is one step of the fault timeline, at an offset from the start of generation.
type action struct {
	at   time.Duration
	kind string // "kill", "term", "nats-stop", "nats-start"
}

// timeline spreads numKills SIGKILLs and one SIGTERM over the generation period, one per
// slot at a seeded moment, and places the NATS outage in its middle third.
func timeline(rng *rand.Rand) []action {
	const edge = 3 * time.Second
	slots := numKills + 1
	seg := (genDuration - 2*edge) / time.Duration(slots)
	term := rng.IntN(slots)
	var out []action
	for i := range slots {
		at := edge + time.Duration(i)*seg + time.Duration(rng.Int64N(int64(seg-2*time.Second)))
		kind := "kill"
		if i == term {
			kind = "term"
		}
		out = append(out, action{at, kind})
	}
	stop := genDuration*3/10 + time.Duration(rng.Int64N(int64(genDuration*3/10)))
	out = append(out, action{stop, "nats-stop"}, action{stop + natsOutage, "nats-start"})
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// generated is what the record generator did.
type generated struct {
	records []record
	appts   int
	updates int
}

// generate adds numRecords distinctive records to the API over genDuration, spread over
// the chatbots, and now and then changes the Count and Content of an older one.
func generate(ctx context.Context, api *leadsim.Server, rng *rand.Rand) generated {
	var g generated
	pst := time.FixedZone("PST", -8*3600)
	tick := genDuration / numRecords
	next := time.Now()
	for i := range numRecords {
		next = next.Add(tick)
		select {
		case <-ctx.Done():
			return g
		case <-time.After(time.Until(next)):
		}
		serial := serials[rng.IntN(len(serials))]
		kind, apiType := event.KindLead, "Lead"
		if rng.Float64() < apptShare {
			kind, apiType = event.KindAppointment, "Appointment"
			g.appts++
		}
		createTime := time.Now().In(pst).Format("2006-01-02T15:04:05.000000-07:00")
		created, err := time.Parse(time.RFC3339Nano, createTime)
		if err != nil {
			panic(err) // the layout above is RFC 3339
		}
		session := int64(firstSessionID + i)
		api.Add(serial, leadsim.Record{
			Type:        apiType,
			Name:        fmt.Sprintf("Zq7-Person-%03d", i),
			Email:       fmt.Sprintf("zq7-%03d@example.test", i),
			PhoneNumber: fmt.Sprintf("+1 555 7%03d", i),
			CreateTime:  createTime,
			Content:     fmt.Sprintf("zq7 content %03d <b>bold</b> & more", i),
			SessionID:   session,
			URI:         "www.example.test/pricing",
			Count:       1,
		})
		lead := event.Lead{Chatbot: serial, Kind: kind, SessionID: session, CreatedAt: created}
		g.records = append(g.records, record{serial: serial, kind: kind, session: session, id: lead.ID()})
		if i%updateEvery == updateEvery-1 {
			old := g.records[rng.IntN(len(g.records))]
			g.updates++
			api.Update(old.serial, old.session, 1+g.updates,
				fmt.Sprintf("zq7 updated content %d (change %d) <i>", old.session, g.updates))
		}
	}
	return g
}

// injectAPIFaults queues one seeded API fault every 0.4–1.2 s until stop is closed, and
// returns how many of each it injected.
func injectAPIFaults(stop <-chan struct{}, api *leadsim.Server, rng *rand.Rand) map[string]int {
	counts := map[string]int{}
	for {
		select {
		case <-stop:
			return counts
		case <-time.After(400*time.Millisecond + time.Duration(rng.Int64N(int64(800*time.Millisecond)))):
		}
		f := apiFaults[rng.IntN(len(apiFaults))]
		api.Inject(f.fault)
		counts[f.name]++
	}
}

// writeConfig writes the bridge's config: four chatbots, NATS JetStream, two webhooks
// (one filtered to the first chatbot) and Slack filtered to appointments, with the
// metrics and admin listener on listen; secrets come from the environment.
func writeConfig(t *testing.T, dir, apiURL, natsURL, crmURL, oneURL, storePath, listen string) string {
	t.Helper()
	var bots strings.Builder
	for i, s := range serials {
		fmt.Fprintf(&bots, "    - {serial: %s, name: Fault bot %d}\n", s, i+1)
	}
	retry := "{initial_interval: 100ms, max_interval: 1s}"
	body := fmt.Sprintf(`neoagent:
  base_url: %s
  api_key: "${LBFS_API_KEY}"
  timeout: %s
  chatbots:
%spoll: {interval: 1s, lookback: 48h, initial: emit, jitter: 0.1, max_backoff: 2s}
store: {path: %s}
dedupe: {emit_updates: false}
shutdown: {grace: %s}
forwarders:
  - name: bus
    type: nats
    url: %s
    jetstream: true
    stream: %s
    user: %s
    password: "${LBFS_NATS_PASSWORD}"
    timeout: 1s
    retry: %s
  - name: crm
    type: webhook
    url: %s/hooks/crm
    secret: "${LBFS_CRM_SECRET}"
    timeout: 1s
    retry: %s
  - name: crm-one
    type: webhook
    chatbots: [%s]
    url: %s/hooks/one
    secret: "${LBFS_CRM_SECRET}"
    timeout: 1s
    retry: %s
  - name: sales
    type: slack
    types: [appointment]
    webhook_url: "${LBFS_SLACK_URL}"
    timeout: 1s
    retry: %s
http: {listen: "%s"}
log: {level: debug, format: json}
`, apiURL, apiTimeout, bots.String(), storePath, shutdownGrace, natsURL, streamName, natsUser, retry,
		crmURL, retry, serials[0], oneURL, retry, retry, listen)
	path := filepath.Join(dir, "leadbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// freeAddr is a 127.0.0.1 address with a port that was free a moment ago; every run of
// the bridge listens there.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

// TestFaults runs the leadbridge daemon as a process through a few hundred records while
// faults hit every side, then checks that every record reached every target that wants
// it (and none that does not), that the store's outbox is empty with no dead letters, and
// that no log line holds a secret or a person's data.
func TestFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault suite runs the bridge for about a minute; skipped with -short")
	}
	began := time.Now()
	seed := suiteSeed(t)
	t.Logf("faultsuite seed=%d (rerun with -seed=%d or LEADBRIDGE_FAULT_SEED=%d)", seed, seed, seed)
	bin := buildBridge(t)
	built := time.Since(began)

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte(signingKey))

	api, apiURL := leadtest.StartAPI(t, apiKey)
	nb := leadtest.StartNATS(t, leadtest.NATSOptions{User: natsUser, Password: natsPassword})
	nb.CreateStream(streamName, 30*time.Minute, "neoagent.>")
	crm := newWebhookSink(t, "crm", seed, sinkFaultPct, []byte(signingKey))
	one := newWebhookSink(t, "crm-one", seed, sinkFaultPct, []byte(signingKey))
	slack := newSlackStandIn(t, slackSecret, seed, slackFaultPct)

	dir := t.TempDir()
	logDir := dir
	if keep := os.Getenv("LEADBRIDGE_FAULT_LOGS"); keep != "" {
		logDir = keep
		require.NoError(t, os.MkdirAll(logDir, 0o700))
	}
	storePath := filepath.Join(dir, "leadbridge.db")
	cfg := writeConfig(t, dir, apiURL, nb.URL(), crm.srv.URL, one.srv.URL, storePath, freeAddr(t))
	env := append(os.Environ(),
		"LBFS_API_KEY="+apiKey, "LBFS_NATS_PASSWORD="+natsPassword,
		"LBFS_CRM_SECRET="+secret, "LBFS_SLACK_URL="+slack.url())
	br := newBridge(t, bin, cfg, logDir, env)

	// Generation and API faults run beside the fault timeline.
	var wg sync.WaitGroup
	var gen generated
	var apiFaultCounts map[string]int
	stopFaults := make(chan struct{})
	plan := timeline(rand.New(rand.NewPCG(seed, 3)))
	pauses := rand.New(rand.NewPCG(seed, 4))
	br.start()
	t0 := time.Now()
	genDone := make(chan struct{})
	wg.Go(func() {
		defer close(genDone)
		gen = generate(ctx, api, rand.New(rand.NewPCG(seed, 1)))
	})
	wg.Go(func() { apiFaultCounts = injectAPIFaults(stopFaults, api, rand.New(rand.NewPCG(seed, 2))) })
	stopBackground := func() {
		select {
		case <-stopFaults:
		default:
			close(stopFaults)
		}
		cancel()
		wg.Wait()
	}
	t.Cleanup(stopBackground)

	var termHeld bool
	for _, a := range plan {
		select {
		case <-time.After(time.Until(t0.Add(a.at))):
		case <-ctx.Done():
		}
		if br.crashed() {
			break
		}
		switch a.kind {
		case "kill":
			br.kill()
			time.Sleep(time.Duration(pauses.Int64N(int64(500 * time.Millisecond))))
			br.start()
		case "term":
			// Mid-delivery: hold the next crm request open, SIGTERM while it hangs.
			crm.hold.Store(true)
			deadline := time.Now().Add(5 * time.Second)
			for crm.inflight.Load() == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			termHeld = crm.inflight.Load() > 0
			crm.hold.Store(false)
			br.term(termDeadline)
			br.start()
		case "nats-stop":
			nb.Stop()
		case "nats-start":
			nb.Start()
		}
	}

	// Let generation finish, stop the API faults, and wait for every delivery.
	<-genDone
	close(stopFaults)
	wg.Wait()
	records := make(map[string]record, len(gen.records))
	for _, r := range gen.records {
		records[r.id] = r
	}
	require.Len(t, records, numRecords, "every generated record has its own event id")
	wantAll := func(record) bool { return true }
	wantOne := func(r record) bool { return r.serial == serials[0] }
	wantAppt := func(r record) bool { return r.kind == event.KindAppointment }

	drainStart := time.Now()
	complete := waitDelivered(t, br, nb, records, []*tally{crm.tally, one.tally, slack.tally},
		[]func(record) bool{wantAll, wantOne, wantAppt})
	drained := time.Since(drainStart)
	if complete {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) && !(crm.quietFor(quietPeriod) && one.quietFor(quietPeriod) && slack.quietFor(quietPeriod)) {
			time.Sleep(100 * time.Millisecond)
		}
	}
	br.check()
	var final termResult
	if p := br.current(); p != nil && p.alive() {
		final = br.term(termDeadline)
	}

	// The store, after the process is gone.
	store, err := dedupe.Open(dedupe.Options{Path: storePath, OpenTimeout: 5 * time.Second})
	require.NoError(t, err, "opening the store after the bridge exited")
	depth, err := store.Depth(t.Context())
	require.NoError(t, err)
	deadCount, err := store.DeadCount(t.Context())
	require.NoError(t, err)
	var deadLetters []string
	for fwd, n := range deadCount {
		if n == 0 {
			continue
		}
		dls, err := store.DeadLetters(t.Context(), fwd)
		require.NoError(t, err)
		for _, dl := range first(dls, 3) {
			deadLetters = append(deadLetters, fmt.Sprintf("%s: event %s after %d attempts: %s", fwd, dl.Event.ID, dl.Attempts, dl.LastError))
		}
	}
	require.NoError(t, store.Close())
	outbox, dead := 0, 0
	for _, n := range depth {
		outbox += n
	}
	for _, n := range deadCount {
		dead += n
	}

	// What each target got.
	natsGot, natsRead, natsIssues := tallyStream(readStream(nb))
	reports := []targetReport{
		compare("bus", records, wantAll, record.describe, natsGot, natsRead),
		compare("crm", records, wantAll, record.describe, crm.received(), crm.described()),
		compare("crm-one", records, wantOne, record.describe, one.received(), one.described()),
		compare("sales", records, wantAppt, record.describeSlack, slack.received(), slack.described()),
	}
	lost := 0
	repeats := map[string]int{}
	for _, r := range reports {
		lost += len(r.lost)
		repeats[r.name] = r.repeats
	}

	// Every log line of every run.
	needles := []needle{
		{label: "API key", text: apiKey},
		{label: "NATS password", text: natsPassword},
		{label: "Slack webhook URL secret", text: slackSecret},
		{label: "webhook secret", text: strings.TrimPrefix(secret, "whsec_")},
		{label: "webhook signing key", text: signingKey},
		{label: "personal data (name, email or content)", text: "zq7", lower: true},
		{label: "personal data (phone)", text: "+1 555 7"},
	}
	scan, err := scanLogs(br.logs(), needles)
	require.NoError(t, err)

	took := time.Since(began).Round(100 * time.Millisecond)
	summary := fmt.Sprintf("faultsuite seed=%d records=%d kills=%d lost=%d repeats: nats=%d crm=%d crm-one=%d sales=%d outbox=%d dead=%d took=%s",
		seed, len(records), br.kills, lost, repeats["bus"], repeats["crm"], repeats["crm-one"], repeats["sales"], outbox, dead, took)
	details := fmt.Sprintf("faultsuite details: appointments=%d chatbot-a=%d updates=%d api_faults=%s sink_faults: crm=%s crm-one=%s sales=%s slack_messages: single=%d digests=%d nats_outage=%s sigterms=%s runs=%d log_lines=%d log_errors=%d felt: poll_failures=%d skipped_records=%d retries=%s build=%s drain=%s",
		gen.appts, reports[2].want, gen.updates, countSummary(apiFaultCounts), crm.faultSummary(), one.faultSummary(),
		slack.faultSummary(), slack.singles.Load(), slack.digests.Load(), natsOutage, termSummary(br.terms), len(br.runs), scan.lines, scan.errors,
		scan.msgs[msgPollFailed], scan.msgs[msgSkipped], countSummary(scan.retries),
		built.Round(100*time.Millisecond), drained.Round(100*time.Millisecond))
	t.Log(summary)
	t.Log(details)
	fmt.Println(summary)
	fmt.Println(details)

	// The verdict.
	assert.Empty(t, br.unexpected, "the bridge exited without being asked to")
	assert.True(t, termHeld, "the SIGTERM did not find a delivery in flight")
	for _, tr := range br.terms {
		assert.False(t, tr.hung, "%s: the bridge did not exit within %s of SIGTERM (hang)", tr.log, termDeadline)
		assert.Zero(t, tr.code, "%s: exit code after SIGTERM", tr.log)
	}
	assert.False(t, final.hung, "the final SIGTERM hung")
	assert.GreaterOrEqual(t, br.kills, 5, "SIGKILLs delivered")
	// The faults were felt: polls failed, bad records were skipped, NATS deliveries were
	// retried through the outage, and the store never failed to take a page.
	assert.Positive(t, scan.msgs[msgPollFailed], "no poll failed: the API faults missed")
	assert.Positive(t, scan.msgs[msgSkipped], "no bad record was skipped")
	assert.Positive(t, scan.retries["bus"], "no NATS delivery was retried: the outage missed")
	assert.Zero(t, scan.msgs[msgStoreFailed], "the store failed to take polled records")
	for _, r := range reports {
		for _, p := range r.problems() {
			t.Error(p)
		}
	}
	assert.Zero(t, lost, "lost deliveries")
	assert.Zero(t, repeats["bus"], "JetStream repeats inside the duplicate window")
	assert.Empty(t, natsIssues, "NATS messages")
	assert.Empty(t, crm.issues(), "crm requests")
	assert.Empty(t, one.issues(), "crm-one requests")
	assert.Empty(t, slack.issues(), "slack requests")
	assert.Zero(t, outbox, "outbox depth after the drain and SIGTERM: %v", depth)
	assert.Zero(t, dead, "dead letters: %v", deadLetters)
	assert.Empty(t, scan.leaks, "secrets or personal data in the bridge's logs")
	assert.Empty(t, scan.nonJSON, "log lines that are not JSON")
	if t.Failed() {
		t.Logf("logs of the runs (set LEADBRIDGE_FAULT_LOGS=dir to keep them): %s", strings.Join(br.logs(), " "))
	}
}

// waitDelivered polls the targets until each wanted record was delivered to each target
// (NATS: the stream holds every record), the bridge dies, or drainDeadline passes. It
// reports whether everything arrived.
func waitDelivered(t *testing.T, br *bridge, nb *leadtest.NATS, records map[string]record, sinks []*tally, wants []func(record) bool) bool {
	t.Helper()
	nc, js := nb.Connect()
	defer nc.Close()
	deadline := time.Now().Add(drainDeadline)
	for time.Now().Before(deadline) && !br.crashed() {
		done := true
		for i, s := range sinks {
			got := s.received()
			for id, r := range records {
				if wants[i](r) && got[id] == 0 {
					done = false
					break
				}
			}
		}
		if done {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			stream, err := js.Stream(ctx, streamName)
			if err == nil {
				var msgs uint64
				if info, ierr := stream.Info(ctx); ierr == nil {
					msgs = info.State.Msgs
				}
				done = msgs >= uint64(len(records))
			} else {
				done = false
			}
			cancel()
			if done {
				return true
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return false
}

// tallyStream turns the stream's messages into deliveries per event id and what each
// carried, checking that the Nats-Msg-Id, Ce-Id, event id and subject agree.
func tallyStream(msgs []streamMsg) (got map[string]int, read map[string]string, issues []string) {
	got, read = map[string]int{}, map[string]string{}
	for _, m := range msgs {
		if m.decodeErr != nil {
			issues = append(issues, fmt.Sprintf("%s: body is not a CloudEvent: %v", m.msgID, m.decodeErr))
			continue
		}
		if m.msgID != m.event.ID || m.ceID != m.event.ID {
			issues = append(issues, fmt.Sprintf("event %s: Nats-Msg-Id %q, Ce-Id %q", m.event.ID, m.msgID, m.ceID))
		}
		if want := "neoagent." + m.event.Chatbot() + "." + string(m.event.Kind()); m.subject != want {
			issues = append(issues, fmt.Sprintf("event %s: subject %q, want %q", m.event.ID, m.subject, want))
		}
		got[m.event.ID]++
		read[m.event.ID] = describe(m.event)
	}
	return got, read, issues
}

// countSummary formats counts by name, e.g. "7(429:2 500:5)".
func countSummary(counts map[string]int) string {
	var parts []string
	total := 0
	for name, n := range counts {
		parts = append(parts, name+":"+strconv.Itoa(n))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d(%s)", total, strings.Join(parts, " "))
}

// termSummary formats how each SIGTERM went, e.g. "[exit 0 in 1.2s]".
func termSummary(terms []termResult) string {
	var parts []string
	for _, tr := range terms {
		s := fmt.Sprintf("exit %d in %s", tr.code, tr.took.Round(100*time.Millisecond))
		if tr.hung {
			s += " (hung, killed)"
		}
		parts = append(parts, s)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}
