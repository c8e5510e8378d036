package bench

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

var (
	storesFlag = flag.String("bench.stores", "bbolt,nats", "BenchmarkPipelineStores: comma-separated store backends (bbolt, nats)")
	r3Flag     = flag.Bool("bench.r3", false, "BenchmarkPipelineStores: the nats store on a three-node in-process cluster at replicas 3 instead of the forwarder's server at replicas 1")
)

// storeRow is one backend's figures in one run of BenchmarkPipelineStores.
type storeRow struct {
	row
	backend string
	peerCPU time.Duration // the benchmark process's CPU meanwhile: the NATS server (the store's and the forwarder's), the stand-in, the sink
	sizes   []streamSize  // the JetStream store's buckets and streams after the run (nats only)
}

// streamSize is what one of the store's buckets or streams holds.
type streamSize struct {
	name  string
	msgs  uint64
	bytes uint64
}

// BenchmarkPipelineStores delivers -bench.records new records (one LeadList answer) to
// JetStream and one webhook with `leadbridge once`, once per store backend in
// -bench.stores, each on a fresh store: bbolt in a temporary file, nats in the same
// in-process nats-server the JetStream forwarder publishes to, under a prefix of its own.
// It checks that every record reached both targets and prints records/s, peak RSS and
// CPU of the leadbridge process, the CPU of the benchmark process meanwhile (the NATS
// server, both stores' JetStream work included, the stand-in and the sink), and for
// nats the store's bucket and stream sizes after the run.
//
//	go test ./bench -run '^$' -bench PipelineStores -benchtime 1x -bench.records 20000
func BenchmarkPipelineStores(b *testing.B) {
	skipUnlessLinux(b)
	bridge, _ := buildBinaries(b)
	nb := newNATSBox(b)
	storeBox, storeURL, replicas := nb, nb.url(), 1
	if *r3Flag {
		storeBox, storeURL = startCluster(b)
		replicas = 3
	}
	backends := strings.Split(*storesFlag, ",")
	for _, be := range backends {
		require.Containsf(b, []string{"bbolt", "nats"}, be, "-bench.stores: %q is neither bbolt nor nats", be)
	}
	run := 0
	for _, n := range counts(b, "bench.records", *recordsFlag) {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			api := newStandIn(n)
			apiSrv := newServer(b, api)
			serial := serialName(0)
			want := api.ids(serial)
			require.Len(b, want, n, "the stand-in's records have distinct ids")
			rows := make([]storeRow, len(backends))
			for range b.N {
				for i, be := range backends {
					run++
					dir := b.TempDir()
					nb.resetStream(b)
					hook := newSink(b, want)
					prefix := fmt.Sprintf("lbbench%d", run)
					cfg := writeStoreConfig(b, dir, apiSrv, serial, nb.url(), hook.srv.URL+"/hooks/"+be, be,
						storeURL, prefix, replicas)
					cpu0 := selfCPU(b)
					u, err := runToEnd(bridge, []string{"once", "--config", cfg, "--max-wait", "30m"}, runEnv(), filepath.Join(dir, be+".log"))
					require.NoError(b, err)
					peer := selfCPU(b) - cpu0
					got, js := hook.tally(), nb.tally(b, want)
					for _, target := range []struct {
						name string
						t    tally
					}{{"webhook", got}, {"jetstream", js}} {
						require.Truef(b, target.t.distinct == n && target.t.unexpected == 0 && target.t.bad == 0,
							"store %s, %s: %s; want all %d: a run that lost records has no figure", be, target.name, target.t, n)
					}
					rows[i] = storeRow{row: row{pipeline: "once", records: n, repeats: got.repeats + js.repeats, usage: u},
						backend: be, peerCPU: peer}
					if be == "nats" {
						rows[i].sizes = storeSizes(b, storeBox, prefix)
						deleteStore(b, storeBox, prefix)
					}
				}
				printStores(rows, replicas)
			}
			for _, r := range rows {
				b.ReportMetric(r.rate(), r.backend+"-records/s")
				b.ReportMetric(mb(r.peakRSS), r.backend+"-peak-MB")
				b.ReportMetric(r.cpu.Seconds(), r.backend+"-CPU-s")
			}
		})
	}
}

// selfCPU is the CPU time (user + system) the benchmark process has used so far.
func selfCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	require.NoError(b, syscall.Getrusage(syscall.RUSAGE_SELF, &ru))
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startCluster starts a three-node NATS cluster with JetStream in process and returns
// its first node and every node's client URL.
func startCluster(b *testing.B) (box *natsBox, urls string) {
	nodes := leadtest.StartCluster(b, "lbbench", 3)
	nc, js := nodes[0].Connect()
	b.Cleanup(nc.Close)
	var list []string
	for _, n := range nodes {
		list = append(list, n.URL())
	}
	return &natsBox{NATS: nodes[0], js: js}, strings.Join(list, ",")
}

// storeSizes reads the size of every bucket and stream of the JetStream store prefix.
func storeSizes(b *testing.B, nb *natsBox, prefix string) []streamSize {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out []streamSize
	for name := range storeStreams(ctx, b, nb, prefix) {
		s, err := nb.js.Stream(ctx, name)
		require.NoError(b, err)
		info, err := s.Info(ctx)
		require.NoError(b, err)
		out = append(out, streamSize{name: name, msgs: info.State.Msgs, bytes: info.State.Bytes})
	}
	return out
}

// storeStreams are the names of the streams (KV buckets included) of store prefix.
func storeStreams(ctx context.Context, b *testing.B, nb *natsBox, prefix string) map[string]struct{} {
	out := map[string]struct{}{}
	names := nb.js.StreamNames(ctx)
	for name := range names.Name() {
		if strings.HasPrefix(name, prefix+"_") || strings.HasPrefix(name, "KV_"+prefix+"_") {
			out[name] = struct{}{}
		}
	}
	require.NoError(b, names.Err())
	return out
}

// deleteStore deletes the buckets and streams of store prefix, so that the server of a
// long benchmark holds only the run under way.
func deleteStore(b *testing.B, nb *natsBox, prefix string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for name := range storeStreams(ctx, b, nb, prefix) {
		require.NoError(b, nb.js.DeleteStream(ctx, name))
	}
}

func printStores(rows []storeRow, replicas int) {
	where := "the same in-process server as the JetStream forwarder, R1"
	if replicas == 3 {
		where = "a three-node in-process cluster beside the forwarder's server, R3"
	}
	fmt.Printf("\nstore backends (issue 10) %s, %d CPUs, %s; nats: %s\n",
		time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), runtime.Version(), where)
	fmt.Printf("%-7s %9s %9s %11s %12s %8s %11s %8s\n", "store", "records", "seconds", "records/s", "peak RSS MB", "CPU s", "server CPU s", "repeats")
	for _, r := range rows {
		fmt.Printf("%-7s %9d %9.2f %11.0f %12.1f %8.2f %11.2f %8d\n",
			r.backend, r.records, r.wall.Seconds(), r.rate(), mb(r.peakRSS), r.cpu.Seconds(), r.peerCPU.Seconds(), r.repeats)
	}
	for _, r := range rows {
		for _, s := range r.sizes {
			fmt.Printf("  %-28s %9d msgs %10.1f MB %7.0f bytes/msg\n", s.name, s.msgs, mb(int64(s.bytes)),
				float64(s.bytes)/float64(max(s.msgs, 1)))
		}
	}
}

// writeStoreConfig writes `once`'s config for backend: the pipeline benchmark's (one
// chatbot, initial emit, JetStream on natsURL and one webhook) with the store bbolt in
// dir or JetStream on storeURL under prefix with replicas.
func writeStoreConfig(b *testing.B, dir, apiURL, serial, natsURL, hookURL, backend, storeURL, prefix string, replicas int) string {
	store := ""
	if backend == "nats" {
		store = fmt.Sprintf("store:\n  backend: nats\n  nats: {url: %q, prefix: %s, replicas: %d, timeout: 30s}", storeURL, prefix, replicas)
	}
	return writeOnceConfig(b, dir, apiURL, serial, natsURL, hookURL, 0, store)
}

// BenchmarkIdleStores runs one daemon (`leadbridge run`) with the JetStream store (R1, on
// the forwarder's server) polling -bench.idle chatbots, each answer recordsPerIdleAnswer
// records seen before, as BenchmarkIdle does with bbolt (the same run, the same two
// targets): after a baseline round and a settling one, -bench.idle-rounds rounds are
// measured. Besides the poll, each costs a lease renewal in the store. It prints the CPU per poll, the share of a core at a
// 1-minute interval and the RSS: a replica's idle cost.
//
//	go test ./bench -run '^$' -bench IdleStores -benchtime 1x -bench.idle 1000
func BenchmarkIdleStores(b *testing.B) {
	skipUnlessLinux(b)
	require.Positive(b, *idleRounds, "-bench.idle-rounds: the measured window needs at least one round")
	bridge, _ := buildBinaries(b)
	nb := newNATSBox(b)
	for _, k := range counts(b, "bench.idle", *idleFlag) {
		b.Run(fmt.Sprintf("chatbots=%d", k), func(b *testing.B) {
			interval := idleIntervalFor(k)
			for i := range b.N {
				r := runIdleNATS(b, bridge, nb, k, interval, fmt.Sprintf("lbidle%d", i))
				r.print()
				b.ReportMetric(r.corePerMinute()*100, "%core@1m")
				b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.polls), "µs-CPU/poll")
				b.ReportMetric(mb(r.rss), "RSS-MB")
			}
		})
	}
}

// runIdleNATS is one measured window of an idle daemon on the JetStream store prefix
// (R1, on the forwarder's server), deleted afterwards.
func runIdleNATS(b *testing.B, bridge string, nb *natsBox, k int, interval time.Duration, prefix string) idleResult {
	defer deleteStore(b, nb, prefix)
	return runIdle(b, bridge, nb, k, interval,
		fmt.Sprintf("store:\n  backend: nats\n  nats: {url: %q, prefix: %s, replicas: 1, timeout: 30s}", nb.url(), prefix))
}
