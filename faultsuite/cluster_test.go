package faultsuite

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// freePort is a port of 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, err := net.SplitHostPort(freeAddr(t))
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	return p
}

// startCluster starts a three-node NATS cluster with JetStream, in process, each node
// with its own store directory, restartable on its ports, and waits until it takes R3
// buckets.
func startCluster(t *testing.T) []*leadtest.NATS {
	t.Helper()
	const n = 3
	client, cluster := make([]int, n), make([]int, n)
	var routes []string
	for i := range n {
		client[i], cluster[i] = freePort(t), freePort(t)
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", cluster[i]))
	}
	nodes := make([]*leadtest.NATS, n)
	started := make(chan *leadtest.NATS, n)
	for i := range n {
		go func() {
			started <- leadtest.StartNATS(t, leadtest.NATSOptions{Port: client[i], Tweak: func(o *natsserver.Options) {
				o.ServerName = fmt.Sprintf("n%d", i+1)
				o.Cluster = natsserver.ClusterOpts{Name: "leadbridge-fs", Host: "127.0.0.1", Port: cluster[i]}
				o.Routes = natsserver.RoutesFromStr(strings.Join(routes, ","))
			}})
		}()
	}
	for i := range n {
		nodes[i] = <-started
	}
	nc, js := nodes[0].Connect()
	defer nc.Close()
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "probe", Replicas: 3})
		return err == nil
	}, 60*time.Second, 200*time.Millisecond, "the cluster takes R3 buckets")
	return nodes
}

// writeReplicaConfig is a replica's config: four chatbots, the JetStream store on the
// cluster at R3, one webhook target, and its own http.listen.
func writeReplicaConfig(t *testing.T, dir, apiURL, natsURLs, crmURL, listen string) string {
	t.Helper()
	var bots strings.Builder
	for i, s := range serials {
		fmt.Fprintf(&bots, "    - {serial: %s, name: Fault bot %d}\n", s, i+1)
	}
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
  - name: crm
    type: webhook
    url: %s/hooks
    timeout: 2s
    retry: {initial_interval: 100ms, max_interval: 1s}
http: {listen: "%s"}
log: {level: info, format: json}
`, apiURL, bots.String(), natsURLs, crmURL, listen)
	path := filepath.Join(dir, "leadbridge.yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// TestReplicasOnACluster runs three leadbridge processes on a three-node NATS cluster
// (the JetStream store at R3) while records arrive on four chatbots: one replica is
// SIGKILLed and restarted, and one NATS node restarted. Every record reaches the target
// (lost=0); repeats are counted and printed, and can only come from deliveries in flight
// at the kill; every chatbot keeps being polled to the end.
func TestReplicasOnACluster(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster fault run takes about a minute")
	}
	bin := buildBridge(t)
	nodes := startCluster(t)
	var urls []string
	for _, n := range nodes {
		urls = append(urls, n.URL())
	}

	api := leadsim.New(apiKey)
	apiSrv := httptest.NewServer(api)
	t.Cleanup(apiSrv.Close)
	crm := leadtest.NewSink(t, nil)
	env := append(os.Environ(), "LBFS_API_KEY="+apiKey)

	// The three start together: the first start creates the store's buckets and streams,
	// which the others race to create too.
	replicas := make([]*bridge, 3)
	listens := make([]string, 3)
	for i := range replicas {
		dir := t.TempDir()
		listens[i] = freeAddr(t)
		cfg := writeReplicaConfig(t, dir, apiSrv.URL, strings.Join(urls, ","), crm.URL, listens[i])
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

	// Records arrive, one every 50ms, round the chatbots, while the faults happen.
	want := map[string]record{}
	add := func(i int) {
		serial := serials[i%len(serials)]
		r := api.Generate(serial, time.Now())
		kind := event.KindLead
		if r.Type == "Appointment" {
			kind = event.KindAppointment
		}
		rec := recordOf(serial, kind, r.SessionID, r.CreateTime)
		want[rec.id] = rec
	}
	i := 0
	generate := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); i++ {
			add(i)
			time.Sleep(50 * time.Millisecond)
		}
	}
	generate(4 * time.Second)
	replicas[0].kill()
	generate(3 * time.Second)
	nodes[1].Stop()
	generate(2 * time.Second)
	nodes[1].Start()
	generate(2 * time.Second)
	replicas[0].start()
	generate(4 * time.Second)
	lastFault := time.Now()
	polled := map[string]int{}
	for _, s := range serials {
		polled[s] = api.RequestsFor(s)
	}

	// Entries the killed replica held go to the others after the consumers' AckWait (30s).
	delivered := func() bool {
		got := counts(crm.IDs())
		for id := range want {
			if got[id] == 0 {
				return false
			}
		}
		return true
	}
	ok := assert.Eventually(t, delivered, 45*time.Second, 200*time.Millisecond, "every record reaches the target")
	for i, b := range replicas {
		if !assert.False(t, b.crashed(), "replica %d exited by itself: %v", i+1, b.unexpected) {
			for _, path := range b.logs() {
				raw, _ := os.ReadFile(path)
				lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
				t.Logf("replica %d, %s, last lines:\n%s", i+1, filepath.Base(path), strings.Join(lines[max(0, len(lines)-5):], "\n"))
			}
		}
	}
	got := counts(crm.IDs())
	lost, repeats := 0, 0
	for id := range want {
		if got[id] == 0 {
			lost++
		}
		if got[id] > 1 {
			repeats += got[id] - 1
		}
	}
	extra := 0
	for id := range got {
		if _, ok := want[id]; !ok {
			extra++
		}
	}
	raw, err := os.ReadFile(replicas[0].logs()[0])
	require.NoError(t, err)
	held := strings.Count(string(raw), "took the chatbot's lease")
	t.Logf("cluster run: records=%d lost=%d repeats=%d unknown=%d kills=%d (the killed run had taken %d leases) took=%s",
		len(want), lost, repeats, extra, replicas[0].kills, held, time.Since(lastFault).Round(100*time.Millisecond))
	assert.Zero(t, lost, "records lost")
	assert.Zero(t, extra, "events no record explains")
	// The webhook forwarder attempts at most its concurrency (4 by default) at once: only
	// those can repeat after a kill.
	assert.LessOrEqual(t, repeats, 4*replicas[0].kills, "repeats beyond the deliveries in flight at the kill")
	// LBFS_DEBUG=1 prints every replica's log, with the goroutines of those still running
	// (SIGQUIT), to see where one hangs.
	if os.Getenv("LBFS_DEBUG") != "" {
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
	if ok {
		// Delivery may end within one interval of the last fault: wait for the next polls.
		for _, s := range serials {
			assert.Eventually(t, func() bool { return api.RequestsFor(s) > polled[s] }, 15*time.Second, 50*time.Millisecond,
				"chatbot %s kept being polled after the faults", s)
		}
	}
}

func counts(ids []string) map[string]int {
	out := map[string]int{}
	for _, id := range ids {
		out[id]++
	}
	return out
}
