package bench

import (
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
)

var (
	recordsFlag     = flag.String("bench.records", "20000", "BenchmarkPipeline: comma-separated record counts, one LeadList answer each")
	concurrencyFlag = flag.Int("bench.concurrency", 0, "BenchmarkPipeline: concurrency of both forwarders of the real pipeline; 0 keeps the config default")
	idleFlag        = flag.String("bench.idle", "1000", "BenchmarkIdle: comma-separated chatbot counts")
	idleInterval    = flag.Duration("bench.idle-interval", 0, "BenchmarkIdle: poll.interval of the daemon (figures are scaled to 1m); 0 means 6ms per chatbot, at least 1s")
	idleRounds      = flag.Int("bench.idle-rounds", 5, "BenchmarkIdle: polls of every chatbot in the measured window")
)

// recordsPerIdleAnswer is the size of each answer the idle daemon gets, all seen before.
const recordsPerIdleAnswer = 20

// idleIntervalPerChatbot sets the default poll interval of the idle benchmark: 1,000
// chatbots every 6s, 10,000 every minute, the same polls per second (~167), ten times a
// production rate for 1,000 chatbots, so the measured window stays short. Scaled to a
// 1-minute interval its figure is an estimate, and a low one: polled ten times as often,
// each wake-up of the process is shared by more polls, and a wake-up costs more than a
// poll (1.10% of a core measured at 1m against 0.74% scaled, on one machine). Issue 14's
// figure is measured with -bench.idle-interval 1m.
const idleIntervalPerChatbot = 6 * time.Millisecond

// idleIntervalFor is the poll interval of an idle run of k chatbots: -bench.idle-interval,
// or by default idleIntervalPerChatbot times k, at least a second.
func idleIntervalFor(k int) time.Duration {
	if *idleInterval > 0 {
		return *idleInterval
	}
	return max(time.Duration(k)*idleIntervalPerChatbot, time.Second)
}

// counts parses a comma-separated list of positive integers.
func counts(b *testing.B, flagName, list string) []int {
	var out []int
	for f := range strings.SplitSeq(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		require.NoError(b, err, "-%s: %q is not a number", flagName, f)
		require.Positive(b, n, "-%s: %d", flagName, n)
		out = append(out, n)
	}
	return out
}

// skipUnlessLinux skips a benchmark that reads /proc and Linux's rusage units.
func skipUnlessLinux(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("the pipeline benchmark reads /proc and Linux rusage (KiB); it runs on Linux only")
	}
}

// runEnv is the environment of both pipelines: ours plus the API key.
func runEnv() []string { return append(os.Environ(), "LBBENCH_API_KEY="+apiKey) }

// row is one pipeline's figures in one run.
type row struct {
	pipeline string
	records  int
	repeats  int // deliveries beyond the first of an id (at least once allows them; a clean run has none)
	usage
}

func (r row) rate() float64 { return float64(r.records) / r.wall.Seconds() }

// BenchmarkPipeline delivers -bench.records new records (one LeadList answer) to
// JetStream and one webhook, first with the plain baseline, then with `leadbridge once`
// on a fresh store, each as its own process; it checks that both delivered every record
// to each target (repeats are counted and shown) and prints records/s, peak RSS and the
// ratio real/plain.
func BenchmarkPipeline(b *testing.B) {
	skipUnlessLinux(b)
	bridge, plain := buildBinaries(b)
	nb := newNATSBox(b)
	for _, n := range counts(b, "bench.records", *recordsFlag) {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			api := newStandIn(n)
			apiSrv := newServer(b, api)
			serial := serialName(0)
			want := api.ids(serial)
			require.Len(b, want, n, "the stand-in's records have distinct ids")
			var last [2]row
			for range b.N {
				for i, pipeline := range []string{"plain", "real"} {
					dir := b.TempDir()
					nb.resetStream(b)
					hook := newSink(b, want)
					var args []string
					bin := plain
					if pipeline == "plain" {
						args = []string{"-api", apiSrv, "-serial", serial, "-nats", nb.url(),
							"-webhook", hook.srv.URL + "/hooks/plain", "-store", filepath.Join(dir, "plain.db")}
					} else {
						bin = bridge
						cfg := writeOnceConfig(b, dir, apiSrv, serial, nb.url(), hook.srv.URL+"/hooks/real", *concurrencyFlag, "")
						args = []string{"once", "--config", cfg, "--max-wait", "30m"}
					}
					u, err := runToEnd(bin, args, runEnv(), filepath.Join(dir, pipeline+".log"))
					require.NoError(b, err)
					got, js := hook.tally(), nb.tally(b, want)
					for _, target := range []struct {
						name string
						t    tally
					}{{"webhook", got}, {"jetstream", js}} {
						require.Truef(b, target.t.distinct == n && target.t.unexpected == 0 && target.t.bad == 0,
							"%s pipeline, %s: %s; want all %d: a run that lost records has no figure",
							pipeline, target.name, target.t, n)
					}
					last[i] = row{pipeline: pipeline, records: n, repeats: got.repeats + js.repeats, usage: u}
				}
				printPipeline(last)
			}
			b.ReportMetric(last[0].rate(), "plain-records/s")
			b.ReportMetric(last[1].rate(), "real-records/s")
			b.ReportMetric(last[1].rate()/last[0].rate(), "ratio")
			b.ReportMetric(mb(last[0].peakRSS), "plain-peak-MB")
			b.ReportMetric(mb(last[1].peakRSS), "real-peak-MB")
		})
	}
}

// newServer serves h on a loopback port until the benchmark ends and returns its URL.
func newServer(b *testing.B, h http.Handler) string {
	srv := httptest.NewServer(h)
	b.Cleanup(srv.Close)
	return srv.URL
}

func printPipeline(rows [2]row) {
	fmt.Printf("\npipeline benchmark (issue 14) %s, %d CPUs, %s\n", time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), runtime.Version())
	fmt.Printf("%-9s %9s %9s %11s %12s %8s %8s %7s\n", "pipeline", "records", "seconds", "records/s", "peak RSS MB", "CPU s", "repeats", "ratio")
	for _, r := range rows {
		fmt.Printf("%-9s %9d %9.2f %11.0f %12.1f %8.2f %8d %7.3f\n",
			r.pipeline, r.records, r.wall.Seconds(), r.rate(), mb(r.peakRSS), r.cpu.Seconds(), r.repeats, r.rate()/rows[0].rate())
	}
}

// writeOnceConfig writes the real pipeline's config: one chatbot, initial emit (every
// record is new), JetStream and one webhook, no listener, JSON logs at info; store is
// the config's store section, "" for bbolt in dir.
func writeOnceConfig(b *testing.B, dir, apiURL, serial, natsURL, hookURL string, concurrency int, store string) string {
	if store == "" {
		store = fmt.Sprintf("store: {path: %s}", filepath.Join(dir, "leadbridge.db"))
	}
	conc := ""
	if concurrency > 0 {
		conc = fmt.Sprintf("\n    concurrency: %d", concurrency)
	}
	body := fmt.Sprintf(`neoagent:
  base_url: %s
  api_key: "${LBBENCH_API_KEY}"
  timeout: 5m
  chatbots:
    - {serial: %s, name: Bench bot}
poll: {interval: 1m, lookback: 48h, initial: emit, jitter: 0}
%s
forwarders:
  - name: bus
    type: nats
    url: %s
    jetstream: true%s
  - name: crm
    type: webhook
    url: %s%s
http: {listen: ""}
log: {level: info, format: json}
`, apiURL, serial, store, natsURL, conc, hookURL, conc)
	path := filepath.Join(dir, "leadbridge.yaml")
	require.NoError(b, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// BenchmarkIdle runs the daemon (`leadbridge run`) polling -bench.idle chatbots every
// -bench.idle-interval (default: idleIntervalPerChatbot times the chatbots), each answer
// recordsPerIdleAnswer records seen before. The first round of polls marks them seen
// (initial: skip), the second settles; the next -bench.idle-rounds rounds are measured:
// CPU from /proc/<pid>/stat, memory from /proc/<pid>/status. CPU per poll, scaled to a
// 1-minute interval, is the idle cost (measured, not scaled, with -bench.idle-interval
// 1m). Any delivery, or any warning or error in the log, fails the run.
func BenchmarkIdle(b *testing.B) {
	skipUnlessLinux(b)
	require.Positive(b, *idleRounds, "-bench.idle-rounds: the measured window needs at least one round")
	bridge, _ := buildBinaries(b)
	nb := newNATSBox(b)
	for _, k := range counts(b, "bench.idle", *idleFlag) {
		b.Run(fmt.Sprintf("chatbots=%d", k), func(b *testing.B) {
			interval := idleIntervalFor(k)
			for range b.N {
				r := runIdle(b, bridge, nb, k, interval, "")
				r.print()
				b.ReportMetric(r.corePerMinute()*100, "%core@1m")
				b.ReportMetric(float64(r.cpu.Microseconds())/float64(r.polls), "µs-CPU/poll")
				b.ReportMetric(mb(r.rss), "RSS-MB")
				b.ReportMetric(mb(r.hwm), "peak-MB")
			}
		})
	}
}

// BenchmarkIdleFloor runs bench/floor, the LeadList calls of 1,000 idle chatbots polled
// each minute with nothing else (no store, no schedule), against the idle benchmark's
// stand-in, in the bursts a schedule that lets polls due close together share a
// wake-up makes of them: 8 every 0.48 s (an early window of 0.5 s), 50 every 3 s (3 s),
// one after the other and 8 at a time. It prints the CPU per call and what that is at
// 1,000 calls a minute: what net/http alone costs on this machine, the floor under
// BenchmarkIdle's figure.
func BenchmarkIdleFloor(b *testing.B) {
	skipUnlessLinux(b)
	buildBinaries(b)
	apiSrv := newServer(b, newStandIn(recordsPerIdleAnswer))
	fmt.Printf("\nidle floor (issue 14) %s, %d CPUs, %s: bare net/http LeadList calls, %d records per answer, 1,000 a minute\n",
		time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), runtime.Version(), recordsPerIdleAnswer)
	for _, p := range []struct {
		burst    int
		every    time.Duration
		parallel int
	}{{8, 480 * time.Millisecond, 1}, {8, 480 * time.Millisecond, 8}, {50, 3 * time.Second, 1}, {50, 3 * time.Second, 8}} {
		for range b.N {
			out, err := runFloor(apiSrv, p.burst, p.every, p.parallel)
			require.NoError(b, err, out)
			var calls int
			var perCall float64
			_, err = fmt.Sscanf(out, "calls=%d cpu_us_per_call=%f", &calls, &perCall)
			require.NoError(b, err, "floor printed %q", out)
			fmt.Printf("bursts of %2d every %-5s %d at a time: %d calls, %.0f µs per call = %.3f%% of a core at 1,000 a minute\n",
				p.burst, p.every, p.parallel, calls, perCall, perCall*1000/60/1e6*100)
		}
	}
}

// runFloor runs bench/floor against apiURL and returns what it printed.
func runFloor(apiURL string, burst int, every time.Duration, parallel int) (string, error) {
	cmd := exec.Command(floorBin, "-api", apiURL, "-burst", strconv.Itoa(burst), "-every", every.String(),
		"-parallel", strconv.Itoa(parallel), "-calls", "400")
	cmd.Env = runEnv()
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

// idleResult is one measured window of an idle daemon.
type idleResult struct {
	chatbots int
	interval time.Duration
	polls    int64
	window   time.Duration
	cpu      time.Duration
	switches int64 // context switches of the daemon's threads in the window
	rss, hwm int64
	procs    [2]int // the daemon's GOMAXPROCS at the window's start and end (its metrics)
}

// corePerMinute is the share of one core the daemon would use polling every chatbot
// once a minute: the CPU of one poll times the polls per second.
func (r idleResult) corePerMinute() float64 {
	perPoll := r.cpu.Seconds() / float64(r.polls)
	return perPoll * float64(r.chatbots) / 60
}

func (r idleResult) print() {
	fmt.Printf("\nidle cost (issue 14) %s, %d CPUs, %s: chatbots=%d, %d records per answer all seen, interval %s\n",
		time.Now().UTC().Format(time.DateOnly), runtime.NumCPU(), runtime.Version(), r.chatbots, recordsPerIdleAnswer, r.interval)
	fmt.Printf("measured %d polls in %.1fs: CPU %.2fs = %.0fµs per poll, %.2f%% of a core at this interval\n",
		r.polls, r.window.Seconds(), r.cpu.Seconds(), float64(r.cpu.Microseconds())/float64(r.polls), 100*r.cpu.Seconds()/r.window.Seconds())
	at := "at a 1m interval"
	if r.interval != time.Minute {
		at = "scaled to a 1m interval (a low estimate: measure it with -bench.idle-interval 1m)"
	}
	fmt.Printf("%s: %.3f%% of a core; RSS %.1f MB, peak RSS %.1f MB; %.1f context switches per poll; GOMAXPROCS %d at the window's start, %d at its end\n",
		at, 100*r.corePerMinute(), mb(r.rss), mb(r.hwm), float64(r.switches)/float64(r.polls), r.procs[0], r.procs[1])
}

// gomaxprocs reads the daemon's GOMAXPROCS from its metrics at addr
// (go_sched_gomaxprocs_threads).
func gomaxprocs(b *testing.B, addr string) int {
	b.Helper()
	mf := leadtest.Metrics(b, addr)["go_sched_gomaxprocs_threads"]
	require.NotNil(b, mf, "the daemon's metrics have go_sched_gomaxprocs_threads")
	require.Len(b, mf.GetMetric(), 1, "go_sched_gomaxprocs_threads has one series")
	return int(mf.GetMetric()[0].GetGauge().GetValue())
}

func runIdle(b *testing.B, bridge string, nb *natsBox, k int, interval time.Duration, store string) idleResult {
	dir := b.TempDir()
	nb.resetStream(b)
	api := newStandIn(recordsPerIdleAnswer)
	apiSrv := newServer(b, api)
	hook := newSink(b, nil)
	metricsAddr := fmt.Sprintf("127.0.0.1:%d", leadtest.FreePort(b))
	cfg := writeIdleConfig(b, dir, apiSrv, nb.url(), hook.srv.URL+"/hooks/idle", metricsAddr, k, interval, store)
	logPath := filepath.Join(dir, "run.log")
	logFile, err := os.Create(logPath)
	require.NoError(b, err)
	defer logFile.Close()
	cmd := exec.Command(bridge, "run", "--config", cfg)
	cmd.Env = runEnv()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	require.NoError(b, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	// waitPolls waits until the stand-in has answered n polls in all, giving up after
	// twice the rounds' intervals plus a minute (and a millisecond per chatbot).
	waitPolls := func(n int64, rounds int, what string) {
		deadline := time.Now().Add(2*time.Duration(rounds)*interval + time.Minute + time.Duration(k)*time.Millisecond)
		for api.requests.Load() < n {
			select {
			case err := <-exited:
				stopped = true
				b.Fatalf("the daemon exited %s: %v; log ends:\n%s", what, err, tail(logPath, 20))
			case <-time.After(20 * time.Millisecond):
			}
			require.Truef(b, time.Now().Before(deadline), "%s: %d of %d polls answered", what, api.requests.Load(), n)
		}
	}
	pid := cmd.Process.Pid
	waitPolls(int64(2*k), 2, "before the measured window (baseline round, then one settling round)")
	procs0 := gomaxprocs(b, metricsAddr) // before the window: the scrape is not an idle poll's CPU
	cpu0, err := procCPU(pid)
	require.NoError(b, err)
	sw0, err := procSwitches(pid)
	require.NoError(b, err)
	polls0, t0 := api.requests.Load(), time.Now()
	waitPolls(polls0+int64(*idleRounds*k), *idleRounds, "during the measured window")
	cpu1, err := procCPU(pid)
	require.NoError(b, err)
	sw1, err := procSwitches(pid)
	require.NoError(b, err)
	polls1, window := api.requests.Load(), time.Since(t0)
	rss, hwm, err := procMemory(pid)
	require.NoError(b, err)
	procs1 := gomaxprocs(b, metricsAddr) // after the window's readings

	require.NoError(b, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		stopped = true
		require.NoError(b, err, "exit after SIGTERM; log ends:\n%s", tail(logPath, 20))
	case <-time.After(time.Minute):
		b.Fatalf("the daemon did not exit within a minute of SIGTERM")
	}
	got := hook.tally()
	require.Zero(b, got.total, "the idle daemon delivered to the webhook: every record was seen before")
	require.Zero(b, nb.tally(b, nil).total, "the idle daemon published to JetStream: every record was seen before")
	log, err := os.ReadFile(logPath)
	require.NoError(b, err)
	for line := range strings.SplitSeq(string(log), "\n") {
		if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) {
			b.Fatalf("the idle daemon logged a problem; its figures would not be idle ones:\n%s", line)
		}
	}
	return idleResult{chatbots: k, interval: interval, polls: polls1 - polls0, window: window,
		cpu: cpu1 - cpu0, switches: sw1 - sw0, rss: rss, hwm: hwm, procs: [2]int{procs0, procs1}}
}

// writeIdleConfig writes the idle daemon's config: k chatbots, initial skip, the same
// two targets, metrics on metricsAddr (a loopback port, as in production), JSON logs at
// info; store is the config's store section, "" for bbolt in dir.
func writeIdleConfig(b *testing.B, dir, apiURL, natsURL, hookURL, metricsAddr string, k int, interval time.Duration, store string) string {
	if store == "" {
		store = fmt.Sprintf("store: {path: %s}", filepath.Join(dir, "leadbridge.db"))
	}
	var bots strings.Builder
	for i := range k {
		fmt.Fprintf(&bots, "    - {serial: %s}\n", serialName(i))
	}
	// The stand-in takes any rate: max_rps at its cap, so the budget (5/s by default)
	// neither paces the measured polls nor warns.
	body := fmt.Sprintf(`neoagent:
  base_url: %s
  api_key: "${LBBENCH_API_KEY}"
  max_rps: 1000
  chatbots:
%spoll: {interval: %s, lookback: 48h, initial: skip}
%s
forwarders:
  - {name: bus, type: nats, url: %s, jetstream: true}
  - {name: crm, type: webhook, url: %s}
http: {listen: "%s"}
log: {level: info, format: json}
`, apiURL, bots.String(), interval, store, natsURL, hookURL, metricsAddr)
	path := filepath.Join(dir, "leadbridge.yaml")
	require.NoError(b, os.WriteFile(path, []byte(body), 0o600))
	return path
}
