package faultsuite

import (
	"context"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// The cluster run's shape. Records arrive one every clusterTick for clusterGen, round the
// chatbots, while clusterKills SIGKILLs hit replicas picked at random and one NATS node is
// restarted. A killed replica's held entries go to the others after the consumers'
// AckWait (natsstore.DefaultAckWait, 30s), which bounds how soon the run can end.
const (
	clusterReplicas = 3
	clusterKills    = 4
	clusterGen      = 12 * time.Second
	clusterTick     = 50 * time.Millisecond
	clusterNodeDown = 2 * time.Second
	clusterAckWait  = 30 * time.Second
	// clusterAckSlack is how long after a target took a delivery the replica may still not
	// have recorded it in the store: a kill within it may repeat the delivery.
	clusterAckSlack = time.Second
	// clusterElection is how long after the node is back its streams may still be
	// electing leaders; a kill until then counts every delivery taken since the node
	// stopped as unacknowledged.
	clusterElection = 3 * time.Second
	clusterSinkPct  = 10 // share of webhook and Slack attempts answered with a fault
)

// writeReplicaConfig is a replica's config: four chatbots, the JetStream store on the
// cluster at R3, a JetStream forwarder to a stream on the same cluster, a signed webhook,
// a Slack forwarder for appointments (default digest), and its own http.listen.
func writeReplicaConfig(t *testing.T, dir, apiURL, natsURLs, crmURL, listen string) string {
	t.Helper()
	var bots strings.Builder
	for i, s := range serials {
		fmt.Fprintf(&bots, "    - {serial: %s, name: Fault bot %d}\n", s, i+1)
	}
	retry := "{initial_interval: 100ms, max_interval: 1s}"
	body := fmt.Sprintf(`neoagent:
  base_url: %s
  api_key: "${LBFS_API_KEY}"
  timeout: 2s
  chatbots:
%spoll: {interval: 1s, lookback: 48h, initial: emit, jitter: 0.1, max_backoff: 2s}
store:
  backend: nats
  nats: {url: "%s", prefix: fs, replicas: 3, timeout: 10s}
shutdown: {grace: 2s}
forwarders:
  - name: bus
    type: nats
    url: "%s"
    jetstream: true
    stream: %s
    timeout: 2s
    retry: %s
  - name: crm
    type: webhook
    url: %s/hooks
    secret: "${LBFS_CRM_SECRET}"
    timeout: 2s
    retry: %s
  - name: sales
    type: slack
    types: [appointment]
    webhook_url: "${LBFS_SLACK_URL}"
    timeout: 2s
    retry: %s
http: {listen: "%s"}
log: {level: debug, format: json}
`, apiURL, bots.String(), natsURLs, natsURLs, streamName, retry, crmURL, retry, retry, listen)
	path := filepath.Join(dir, "leadbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// clusterStep is one fault of the cluster run, at an offset from the start of records.
type clusterStep struct {
	at      time.Duration
	kind    string // "kill", "start", "node-stop", "node-start"
	replica int    // kill, start
	node    int    // node-stop, node-start
}

// clusterPlan spreads clusterKills SIGKILLs over the first two thirds of the records'
// arrival (the held entries of the last one wait AckWait), one per slot at a seeded
// moment at least 1s after the previous, each of a replica picked at random (any can be
// the one, twice in a row too) and followed by its restart after a seeded pause of
// 0.1-0.8s; a node picked at random is stopped in the middle third for clusterNodeDown.
func clusterPlan(rng *rand.Rand) []clusterStep {
	const first = time.Second
	seg := (clusterGen*2/3 - first) / clusterKills
	var out []clusterStep
	for i := range clusterKills {
		at := first + time.Duration(i)*seg + time.Duration(rng.Int64N(int64(seg-time.Second)))
		r := rng.IntN(clusterReplicas)
		pause := 100*time.Millisecond + time.Duration(rng.Int64N(int64(700*time.Millisecond)))
		out = append(out, clusterStep{at: at, kind: "kill", replica: r}, clusterStep{at: at + pause, kind: "start", replica: r})
	}
	node := rng.IntN(3)
	stop := clusterGen/3 + time.Duration(rng.Int64N(int64(clusterGen/3)))
	out = append(out, clusterStep{at: stop, kind: "node-stop", node: node},
		clusterStep{at: stop + clusterNodeDown, kind: "node-start", node: node})
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// fault is a moment a delivery could be cut: a kill, or the node stop.
type fault struct {
	at     time.Time     // when it began: the daemon died, the node began to stop
	before time.Duration // how long before at a delivery taken may not have been recorded yet
	after  time.Duration // how long after at a delivery taken may still be cut
}

// exposed reports whether a delivery taken at x may have been cut by f: taken within
// f.before before it, or within f.after after it (a request the killed daemon sent,
// answered as it died; a delivery recorded while the node was stopping).
func (f fault) exposed(x time.Time) bool {
	return !x.Before(f.at.Add(-f.before)) && !x.After(f.at.Add(f.after))
}

// explainRepeats checks a target's repeats against the faults: a delivery of an id after
// its first must follow a fault that an earlier delivery of that id was exposed to (see
// fault.exposed). It returns the repeats, the ids exposed to some fault (the bound on
// repeats), and the repeats no fault explains ("<id> taken at 5.2s 37.9s", from t0).
func explainRepeats(taken map[string][]time.Time, faults []fault, t0 time.Time) (repeats, exposed int, unexplained []string) {
	for id, at := range taken {
		hit := false
		for _, f := range faults {
			for _, x := range at {
				hit = hit || f.exposed(x)
			}
		}
		if hit {
			exposed++
		}
		for i, again := range at[1:] {
			repeats++
			ok := false
			for _, f := range faults {
				for _, x := range at[:i+1] {
					ok = ok || (f.exposed(x) && again.After(f.at))
				}
			}
			if !ok {
				var when []string
				for _, a := range at {
					when = append(when, fmt.Sprintf("%.1fs", a.Sub(t0).Seconds()))
				}
				unexplained = append(unexplained, id+" taken at "+strings.Join(when, " "))
				break
			}
		}
	}
	sort.Strings(unexplained)
	return repeats, exposed, unexplained
}

// TestReplicasOnACluster runs three leadbridge processes on a three-node NATS cluster
// (the JetStream store at R3) while records arrive on four chatbots; replicas picked at
// random (seeded: -seed or $LEADBRIDGE_FAULT_SEED) are SIGKILLed and restarted, and one
// NATS node restarted. Targets: a JetStream stream on the same cluster, a signed webhook
// and the Slack stand-in (appointments, digests on), the last two answering a share of
// attempts with faults. Every record reaches every target that wants it; JetStream
// repeats none (Nats-Msg-Id); a webhook or Slack repeat must follow a kill or the node
// stop within a second of which (see fault.exposed) that target took the id, since only
// a delivery whose outcome was not yet recorded may repeat (so no record was polled into
// two deliveries, no entry held by two daemons); every chatbot keeps being polled.
func TestReplicasOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster fault run takes about a minute")
	}
	began := time.Now()
	seed := suiteSeed(t)
	t.Logf("cluster run seed=%d (rerun with -seed=%d or LEADBRIDGE_FAULT_SEED=%d)", seed, seed, seed)
	plan := clusterPlan(rand.New(rand.NewPCG(seed, 10)))
	bin := buildBridge(t)
	built := time.Since(began)
	nodes := leadtest.StartCluster(t, "leadbridge-fs", 3)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.URL())
	}
	createClusterStream(t, nodes[0])
	clustered := time.Since(began)

	api := leadsim.New(apiKey)
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	// No hang among the webhook's faults: it would hold an attempt for the 2s timeout.
	crm := newWebhookSink(t, "crm", seed, clusterSinkPct, []byte(signingKey), answer500, answer429, answer503)
	sales := newSlackStandIn(t, slackSecret, seed, clusterSinkPct)
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte(signingKey))
	env := append(os.Environ(), "LBFS_API_KEY="+apiKey, "LBFS_CRM_SECRET="+secret, "LBFS_SLACK_URL="+sales.url())

	// The three start together: the first start creates the store's buckets and streams,
	// which the others race to create too.
	replicas := make([]*bridge, clusterReplicas)
	listens := make([]string, clusterReplicas)
	for i := range replicas {
		dir := t.TempDir()
		listens[i] = freeAddr(t)
		cfg := writeReplicaConfig(t, dir, apiSrv.URL, strings.Join(urls, ","), crm.srv.URL, listens[i])
		replicas[i] = newBridge(t, bin, cfg, dir, env)
		replicas[i].start()
	}
	up := func(i int) bool {
		resp, err := http.Get("http://" + listens[i] + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	if !assert.Eventually(t, func() bool { return up(0) && up(1) && up(2) }, 60*time.Second, 100*time.Millisecond,
		"the three replicas start") {
		for _, r := range replicas { // a goroutine dump in each log shows where a start hangs
			if p := r.current(); p.alive() {
				_ = p.cmd.Process.Signal(syscall.SIGQUIT)
				<-p.exited
			}
		}
		for i, r := range replicas {
			for _, path := range r.logs() {
				b, _ := os.ReadFile(path)
				t.Logf("replica %d, %s:\n%s", i, path, b)
			}
		}
		t.FailNow()
	}
	startedUp := time.Since(began) - clustered

	// Records arrive, one every clusterTick, round the chatbots, while the faults happen.
	want := map[string]record{}
	var mu sync.Mutex
	genDone := make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(genDone)
		for i := 0; time.Since(t0) < clusterGen; i++ {
			serial := serials[i%len(serials)]
			r := api.Generate(serial, time.Now())
			kind := event.KindLead
			if r.Type == "Appointment" {
				kind = event.KindAppointment
			}
			rec := recordOf(serial, kind, r.SessionID, r.CreateTime)
			mu.Lock()
			want[rec.id] = rec
			mu.Unlock()
			time.Sleep(clusterTick)
		}
	}()
	t.Cleanup(func() { <-genDone })
	var faults []fault
	var nodeStopped time.Time
	// kill notes a kill that just happened: a delivery taken within clusterAckSlack of it
	// may be cut, or since the node stopped if that was under clusterElection ago (the
	// streams elect new leaders, and recording an outcome may wait that long).
	kill := func() {
		now := time.Now()
		before := clusterAckSlack
		if since := now.Sub(nodeStopped); since < clusterNodeDown+clusterElection {
			before = since + clusterAckSlack
		}
		faults = append(faults, fault{at: now, before: before, after: clusterAckSlack})
	}
	var steps []string
	lastKill := time.Now()
	for _, st := range plan {
		time.Sleep(time.Until(t0.Add(st.at)))
		switch st.kind {
		case "kill":
			replicas[st.replica].kill()
			kill()
			lastKill = time.Now()
			steps = append(steps, fmt.Sprintf("%.1fs:kill-r%d", st.at.Seconds(), st.replica+1))
		case "start":
			replicas[st.replica].start()
		case "node-stop":
			nodeStopped = time.Now()
			nodes[st.node].Stop()
			faults = append(faults, fault{at: nodeStopped, before: clusterAckSlack,
				after: time.Since(nodeStopped) + clusterAckSlack})
			steps = append(steps, fmt.Sprintf("%.1fs:stop-n%d", st.at.Seconds(), st.node+1))
		case "node-start":
			nodes[st.node].Start()
		}
	}
	<-genDone
	polled := map[string]int{}
	for _, s := range serials {
		polled[s] = api.RequestsFor(s)
	}
	wantAll := func(record) bool { return true }
	wantAppt := func(r record) bool { return r.kind == event.KindAppointment }

	// Entries a killed replica held go to the others after the consumers' AckWait.
	nc, js := nodes[0].Connect()
	defer nc.Close()
	streamHas := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, streamName)
		if err != nil {
			return 0
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0
		}
		return info.State.Msgs
	}
	delivered := func() bool {
		for _, c := range []struct {
			got   map[string]int
			wants func(record) bool
		}{{crm.received(), wantAll}, {sales.received(), wantAppt}} {
			for id, r := range want {
				if c.wants(r) && c.got[id] == 0 {
					return false
				}
			}
		}
		return streamHas() >= uint64(len(want))
	}
	drainStart := time.Now()
	ok := assert.Eventually(t, delivered, time.Until(lastKill.Add(clusterAckWait+20*time.Second)), 200*time.Millisecond,
		"every record reaches every target that wants it")
	drained := time.Since(drainStart)
	if ok {
		// Every chatbot kept being polled: each is polled again after the faults.
		for _, s := range serials {
			assert.Eventually(t, func() bool { return api.RequestsFor(s) > polled[s] }, 15*time.Second, 50*time.Millisecond,
				"chatbot %s kept being polled after the faults", s)
		}
	}
	for i, b := range replicas {
		if !assert.False(t, b.crashed(), "replica %d exited by itself: %v", i+1, b.unexpected) {
			for _, path := range b.logs() {
				raw, _ := os.ReadFile(path)
				lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
				t.Logf("replica %d, %s, last lines:\n%s", i+1, filepath.Base(path), strings.Join(lines[max(0, len(lines)-5):], "\n"))
			}
		}
	}

	// What each target got.
	records := map[string]record{}
	mu.Lock()
	for id, r := range want {
		records[id] = r
	}
	mu.Unlock()
	natsGot, natsRead, natsIssues := tallyStream(readStream(nodes[0]))
	reports := []targetReport{
		compare("bus", records, wantAll, record.describe, natsGot, natsRead),
		compare("crm", records, wantAll, record.describe, crm.received(), crm.described()),
		compare("sales", records, wantAppt, record.describeSlack, sales.received(), sales.described()),
	}
	crmRepeats, crmExposed, crmOdd := explainRepeats(crm.takenAt(), faults, t0)
	salesRepeats, salesExposed, salesOdd := explainRepeats(sales.takenAt(), faults, t0)
	lost, appts := 0, 0
	for _, r := range reports {
		lost += len(r.lost)
	}
	for _, r := range records {
		if r.kind == event.KindAppointment {
			appts++
		}
	}
	var logs []string
	kills, totalKills := make([]string, len(replicas)), 0
	for i, b := range replicas {
		logs = append(logs, b.logs()...)
		kills[i] = strconv.Itoa(b.kills)
		totalKills += b.kills
	}
	scan, err := scanLogs(logs, []needle{
		{label: "API key", text: apiKey},
		{label: "Slack webhook URL secret", text: slackSecret},
		{label: "webhook secret", text: strings.TrimPrefix(secret, "whsec_")},
	})
	require.NoError(t, err)

	summary := fmt.Sprintf("cluster run seed=%d records=%d appointments=%d kills=%d (per replica %s) node_restarts=1 lost=%d repeats: nats=%d crm=%d sales=%d unexplained=%d slack: single=%d digests=%d took=%s",
		seed, len(records), appts, totalKills, strings.Join(kills, "/"), lost, reports[0].repeats, crmRepeats, salesRepeats,
		len(crmOdd)+len(salesOdd), sales.singles.Load(), sales.digests.Load(), time.Since(began).Round(100*time.Millisecond))
	details := fmt.Sprintf("cluster details: faults=[%s] exposed_to_faults: crm=%d sales=%d sink_faults: crm=%s sales=%s runs=%d log_lines=%d build=%s cluster=%s replicas_up=%s drain=%s",
		strings.Join(steps, " "), crmExposed, salesExposed, crm.faultSummary(), sales.faultSummary(),
		len(logs), scan.lines, built.Round(100*time.Millisecond), (clustered - built).Round(100*time.Millisecond),
		startedUp.Round(100*time.Millisecond), drained.Round(100*time.Millisecond))
	t.Log(summary)
	t.Log(details)
	fmt.Println(summary)
	fmt.Println(details)

	for _, r := range reports {
		for _, p := range r.problems() {
			t.Error(p)
		}
	}
	assert.Equal(t, clusterKills, totalKills, "SIGKILLs that hit a running daemon")
	assert.Zero(t, lost, "records lost")
	assert.Zero(t, reports[0].repeats, "JetStream repeats inside the duplicate window")
	assert.Positive(t, sales.digests.Load(), "no Slack digest: the batch path went untried")
	assert.Empty(t, crmOdd, "crm repeats of ids no kill or node stop had in flight")
	assert.Empty(t, salesOdd, "sales repeats of ids no kill or node stop had in flight")
	for _, odd := range append(crmOdd, salesOdd...) {
		id, _, _ := strings.Cut(odd, " ")
		t.Logf("the replicas' log lines about %s:\n%s", id, linesAbout(logs, id))
	}
	assert.Empty(t, natsIssues, "NATS messages")
	assert.Empty(t, crm.issues(), "crm requests")
	assert.Empty(t, sales.issues(), "slack requests")
	assert.Empty(t, scan.leaks, "secrets in the replicas' logs")
	assert.Empty(t, scan.nonJSON, "log lines that are not JSON")
	// LBFS_DEBUG=1 prints every replica's log, with the goroutines of those still running
	// (SIGQUIT), to see where one hangs.
	if os.Getenv("LBFS_DEBUG") != "" || t.Failed() {
		for _, b := range replicas {
			if p := b.current(); p.alive() {
				_ = p.cmd.Process.Signal(syscall.SIGQUIT)
				<-p.exited
			}
		}
		for i, b := range replicas {
			for _, path := range b.logs() {
				raw, _ := os.ReadFile(path)
				t.Logf("replica %d %s:\n%s", i+1, filepath.Base(path), raw)
			}
		}
	}
}

// createClusterStream creates the JetStream forwarder's stream on the cluster, R3 over
// neoagent.> with a duplicate window longer than the run, once the cluster takes it.
func createClusterStream(t *testing.T, node *leadtest.NATS) {
	t.Helper()
	nc, js := node.Connect()
	defer nc.Close()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{Name: streamName, Subjects: []string{"neoagent.>"},
			Storage: jetstream.FileStorage, Replicas: 3, Duplicates: 10 * time.Minute})
		return err == nil
	}, 30*time.Second, 200*time.Millisecond, "the cluster takes the R3 stream")
}

// linesAbout is every line of the logs that names id, each after its file's path.
func linesAbout(logs []string, id string) string {
	var out []string
	for _, path := range logs {
		raw, err := os.ReadFile(path)
		if err != nil {
			out = append(out, path+": "+err.Error())
			continue
		}
		for _, line := range strings.Split(string(raw), "\n") {
			if strings.Contains(line, id) {
				out = append(out, filepath.Base(filepath.Dir(path))+"/"+filepath.Base(path)+": "+line)
			}
		}
	}
	return strings.Join(out, "\n")
}
