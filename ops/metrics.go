// Package ops is how an operator sees and steers a running leadbridge: Prometheus
// metrics, the /healthz and /readyz probes, and a loopback-only admin API (with its
// client) through which `leadbridge status`, `dlq` and `forwarder resume` work while
// the daemon holds the store.
package ops

import (
	"context"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

// StoreStats is what metrics and readiness read from the store at scrape time.
// The bbolt store implements it.
type StoreStats interface {
	Depth(ctx context.Context) (map[string]int, error)          // outbox entries per forwarder
	DeadCount(ctx context.Context) (map[string]int, error)      // dead letters per forwarder
	Paused(ctx context.Context) (map[string]event.Pause, error) // paused forwarders by name
	// PollStates is every chatbot's state by serial, its latest poll included; Seen may
	// be left zero (counting the seen keys is for status: see LocalStore.Chatbots).
	PollStates(ctx context.Context) (map[string]event.ChatbotState, error)
	// LastOK is a chatbot's last successful poll, zero if none; this process's as it
	// was recorded, with its monotonic clock reading.
	LastOK(ctx context.Context, serial string) (time.Time, error)
}

// Metrics holds leadbridge's Prometheus metrics in their own registry, with the Go and
// process collectors. Labels carry only chatbot serials, account names, configured
// forwarder names and fixed words: never a secret and never a person's data. The account
// label adds no series (a chatbot belongs to one account); it lets a dashboard sum by it.
//
// In leadbridge_records_total, new and updated records are counted by kind (lead,
// appointment) from the events the store produced; duplicate and baseline records are
// only known as totals, so they carry kind="".
type Metrics struct {
	reg          *prometheus.Registry
	polls        *prometheus.CounterVec
	pollDuration *prometheus.HistogramVec
	records      *prometheus.CounterVec
	skipped      *prometheus.CounterVec
	filtered     *prometheus.CounterVec
	filterErrors *prometheus.CounterVec
	deliveries   *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	attempts     *prometheus.HistogramVec
	reloads      *prometheus.CounterVec
	store        *storeCollector
	pollSeries   sync.Map // chatbotKey → *pollSeries
}

// chatbotKey names a chatbot in the metrics' labels.
type chatbotKey struct{ account, serial string }

// pollSeries are the series of one chatbot that ObservePoll updates, each looked up in
// its vector the first time it is needed (a series shows once it has been touched, as
// before), so that an idle poll does not hash its labels again.
type pollSeries struct {
	ok, failed, duplicate, baseline cached[prometheus.Counter]
	duration                        cached[prometheus.Observer]
}

// cached is a series looked up once.
type cached[T any] struct{ p atomic.Pointer[T] }

// get returns the series, looking it up with lookup the first time.
func (c *cached[T]) get(lookup func() T) T {
	if p := c.p.Load(); p != nil {
		return *p
	}
	v := lookup()
	c.p.Store(&v)
	return v
}

// NewMetrics registers every metric; src is read at each scrape for the outbox depth,
// dead letters, paused forwarders and each chatbot's last successful poll.
func NewMetrics(version string, src StoreStats) *Metrics {
	m := &Metrics{
		store: newStoreCollector(src),
		reg:   prometheus.NewRegistry(),
		polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_polls_total",
			Help: "LeadList polls by account, chatbot serial and result (ok, error).",
		}, []string{"account", "chatbot", "result"}),
		pollDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leadbridge_poll_duration_seconds",
			Help:    "Duration of a LeadList poll, request (with its wait for the account's max_rps) and store write, by account and chatbot serial.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"account", "chatbot"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_records_total",
			Help: "Polled records by account, chatbot serial, kind and outcome (new, duplicate, updated, baseline); kind is empty for duplicate and baseline.",
		}, []string{"account", "chatbot", "kind", "outcome"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_records_skipped_total",
			Help: "Polled records skipped as undecodable, by account, chatbot serial and the API field at fault (record: not an object); a record the API repeats counts on every poll.",
		}, []string{"account", "chatbot", "reason_field"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_records_filtered_total",
			Help: "Records a forwarder's filter kept out of its outbox (false, or failed), by forwarder.",
		}, []string{"forwarder"}),
		filterErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_filter_errors_total",
			Help: "Records on which a forwarder's filter failed or yielded no boolean (also counted as filtered), by forwarder.",
		}, []string{"forwarder"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_deliveries_total",
			Help: "Delivery attempts by forwarder and result: ok (delivered), retry (failed, will retry), dead (dead-lettered), paused (target gone).",
		}, []string{"forwarder", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "leadbridge_delivery_latency_seconds",
			Help: "Time from a record being taken into the store to its delivery, by forwarder.",
			Buckets: []float64{0.1, 0.5, 1, 2.5, 5, 15, 30, 60, 300, 900, 1800, 3600,
				3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600},
		}, []string{"forwarder"}),
		attempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "leadbridge_delivery_attempts",
			Help:    "Attempts a finished delivery took (delivered or dead-lettered), by forwarder.",
			Buckets: []float64{1, 2, 3, 5, 10, 20, 50, 100, 200, 500},
		}, []string{"forwarder"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "leadbridge_config_reloads_total",
			Help: "Config reloads (SIGHUP or leadbridge reload) by result: ok (applied) or rejected (the config had problems; the running one stays).",
		}, []string{"result"}),
	}
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "leadbridge_build_info",
		Help: "Always 1; labels name the leadbridge version and the Go version that built it.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.polls, m.pollDuration, m.records, m.skipped, m.filtered, m.filterErrors,
		m.deliveries, m.latency, m.attempts, m.reloads, buildInfo,
		m.store,
	)
	for _, result := range []string{"ok", "rejected"} {
		m.reloads.WithLabelValues(result) // shown at 0 before the first reload
	}
	return m
}

// SetChatbots names the configured chatbots (at the start and after each reload): only
// their last successful polls are shown, so that a chatbot a reload removed does not
// show its last success, ever older, for an alert on its age to fire. Until it is
// called, every chatbot polled by this process is shown.
func (m *Metrics) SetChatbots(serials []string) {
	set := make(map[string]bool, len(serials))
	for _, s := range serials {
		set[s] = true
	}
	m.store.configured.Store(&set)
}

// ObserveReload counts one config reload: applied (ok) or rejected whole.
func (m *Metrics) ObserveReload(applied bool) {
	result := "rejected"
	if applied {
		result = "ok"
	}
	m.reloads.WithLabelValues(result).Inc()
}

// ObservePoll records one poll; it fits poller.Loop.OnPoll.
func (m *Metrics) ObservePoll(bot event.Chatbot, took time.Duration, res event.Ingested, err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	account, serial := bot.Account, bot.Serial
	key := chatbotKey{account, serial}
	v, ok := m.pollSeries.Load(key)
	if !ok {
		v, _ = m.pollSeries.LoadOrStore(key, &pollSeries{})
	}
	ps := v.(*pollSeries)
	polls := &ps.ok
	if err != nil {
		polls = &ps.failed
	}
	polls.get(func() prometheus.Counter { return m.polls.WithLabelValues(account, serial, result) }).Inc()
	ps.duration.get(func() prometheus.Observer { return m.pollDuration.WithLabelValues(account, serial) }).Observe(took.Seconds())
	for _, ev := range res.Events {
		outcome := "new"
		if ev.Action() == event.ActionUpdated {
			outcome = "updated"
		}
		m.records.WithLabelValues(account, serial, kindLabel(ev.Kind()), outcome).Inc()
	}
	if res.Duplicate > 0 {
		ps.duplicate.get(func() prometheus.Counter { return m.records.WithLabelValues(account, serial, "", "duplicate") }).Add(float64(res.Duplicate))
	}
	if res.Baseline > 0 {
		ps.baseline.get(func() prometheus.Counter { return m.records.WithLabelValues(account, serial, "", "baseline") }).Add(float64(res.Baseline))
	}
}

// ObserveSkip counts one record a poll skipped; it fits poller.Loop.OnSkip.
func (m *Metrics) ObserveSkip(bot event.Chatbot, field string) {
	m.skipped.WithLabelValues(bot.Account, bot.Serial, field).Inc()
}

// ObserveFiltered counts one record a forwarder's filter kept out; err is the filter's
// failure, nil when it said false. It fits config.Filtered.
func (m *Metrics) ObserveFiltered(forwarder string, _ event.Event, err error) {
	m.filtered.WithLabelValues(forwarder).Inc()
	if err != nil {
		m.filterErrors.WithLabelValues(forwarder).Inc()
	}
}

// kindLabel keeps the kind label to the known kinds.
func kindLabel(k event.Kind) string {
	if k == event.KindLead || k == event.KindAppointment {
		return string(k)
	}
	return "other"
}

// ObserveDelivery records one delivery attempt; it fits forwarders.Dispatcher.OnResult.
// A delivered event adds its latency since it was taken into the store and its attempt
// count; a dead-lettered one adds its attempt count. The attempt's duration and error
// are not recorded (an error text is no label).
func (m *Metrics) ObserveDelivery(d event.Delivery, res forwarders.Result, _ time.Duration, _ error) {
	m.deliveries.WithLabelValues(d.Forwarder, string(res)).Inc()
	switch res {
	case forwarders.ResultOK:
		if !d.Enqueued.IsZero() {
			m.latency.WithLabelValues(d.Forwarder).Observe(time.Since(d.Enqueued).Seconds())
		}
		m.attempts.WithLabelValues(d.Forwarder).Observe(float64(d.Attempts + 1))
	case forwarders.ResultDead:
		m.attempts.WithLabelValues(d.Forwarder).Observe(float64(max(d.Attempts, 1)))
	}
}

// Handler serves the metrics in the Prometheus exposition format. A store that cannot
// be read leaves out its gauges; everything else is still served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.reg,
	})
}

// storeCollector reads the outbox depth, dead letters, pauses and last successful polls
// at scrape time.
type storeCollector struct {
	src    StoreStats
	depth  *prometheus.Desc
	dead   *prometheus.Desc
	paused *prometheus.Desc
	lastOK *prometheus.Desc
	start  time.Time // successes before it are a previous process's
	// configured are the chatbots SetChatbots named (nil: every chatbot).
	configured atomic.Pointer[map[string]bool]
}

func newStoreCollector(src StoreStats) *storeCollector {
	return &storeCollector{
		src:   src,
		start: time.Now(),
		depth: prometheus.NewDesc("leadbridge_outbox_depth",
			"Deliveries waiting in the outbox, by forwarder.", []string{"forwarder"}, nil),
		dead: prometheus.NewDesc("leadbridge_dead_letters",
			"Dead-lettered deliveries, by forwarder.", []string{"forwarder"}, nil),
		paused: prometheus.NewDesc("leadbridge_forwarder_paused",
			"1 while a forwarder is paused because its target said it is gone, else 0.", []string{"forwarder"}, nil),
		lastOK: prometheus.NewDesc("leadbridge_last_successful_poll_timestamp_seconds",
			"Unix time of the last successful poll, by chatbot serial.", []string{"chatbot"}, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.depth
	ch <- c.dead
	ch <- c.paused
	ch <- c.lastOK
}

// Collect implements prometheus.Collector. Every forwarder the store knows of gets all
// three forwarder gauges, so a paused one shows 0 pending rather than nothing; every
// chatbot with a successful poll in this process gets its time.
func (c *storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx := context.Background() // a scrape's request does not reach a Collector
	c.collectPolls(ctx, ch)
	depth, err := c.src.Depth(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.depth, err)
		return
	}
	dead, err := c.src.DeadCount(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.dead, err)
		return
	}
	paused, err := c.src.Paused(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.paused, err)
		return
	}
	var names []string
	for _, m := range []map[string]int{depth, dead} {
		for name := range m {
			names = append(names, name)
		}
	}
	for name := range paused {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range slices.Compact(names) {
		p := 0.0
		if _, ok := paused[name]; ok {
			p = 1
		}
		ch <- prometheus.MustNewConstMetric(c.depth, prometheus.GaugeValue, float64(depth[name]), name)
		ch <- prometheus.MustNewConstMetric(c.dead, prometheus.GaugeValue, float64(dead[name]), name)
		ch <- prometheus.MustNewConstMetric(c.paused, prometheus.GaugeValue, p, name)
	}
}

// collectPolls sends each configured chatbot's last successful poll, as the store holds
// it, if it was this process's: a chatbot since removed from the config (by a restart
// or a reload) would otherwise show its last success forever, and an alert on its age
// would never clear.
func (c *storeCollector) collectPolls(ctx context.Context, ch chan<- prometheus.Metric) {
	states, err := c.src.PollStates(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.lastOK, err)
		return
	}
	configured := c.configured.Load()
	for serial, st := range states {
		if configured != nil && !(*configured)[serial] {
			continue
		}
		if !st.LastOK.Before(c.start) {
			ch <- prometheus.MustNewConstMetric(c.lastOK, prometheus.GaugeValue, float64(st.LastOK.UnixNano())/1e9, serial)
		}
	}
}
