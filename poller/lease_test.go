package poller_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
	"github.com/leadbridge/leadbridge/poller"
)

const leaseKey = "lease-key"

// sharedAPI is a LeadList stand-in for replicas: it counts, per chatbot, the polls in
// flight at once, and keeps the most seen.
type sharedAPI struct {
	*leadsim.Server
	url string

	mu       sync.Mutex
	inFlight map[string]int
	maxAtt   map[string]int
}

func startSharedAPI(t *testing.T) *sharedAPI {
	t.Helper()
	a := &sharedAPI{Server: leadsim.New(leaseKey), inFlight: map[string]int{}, maxAtt: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req struct {
			Serial string `json:"serialNumber"`
		}
		_ = json.Unmarshal(body, &req)
		a.mu.Lock()
		a.inFlight[req.Serial]++
		a.maxAtt[req.Serial] = max(a.maxAtt[req.Serial], a.inFlight[req.Serial])
		a.mu.Unlock()
		defer func() {
			a.mu.Lock()
			a.inFlight[req.Serial]--
			a.mu.Unlock()
		}()
		time.Sleep(20 * time.Millisecond) // a poll takes a while, so overlaps would show
		r.Body = io.NopCloser(bytes.NewReader(body))
		a.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a.url = srv.URL
	return a
}

// mostAtOnce is the most polls of one chatbot the API saw at once, over every chatbot.
func (a *sharedAPI) mostAtOnce() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	most := 0
	for _, n := range a.maxAtt {
		most = max(most, n)
	}
	return most
}

// leaseReplica is one leadbridge process's polling side: its own connection, store,
// lease owner and Loop.
type leaseReplica struct {
	name   string
	store  *natsstore.Store
	leases *natsstore.Leases
	loop   *poller.Loop
	cancel context.CancelFunc
	done   chan struct{}
	close  func() // its NATS connection

	mu      sync.Mutex
	polls   map[string][]time.Time // successful polls by serial, when they ended
	longest time.Duration          // the longest successful poll
}

const leaseInterval = time.Second

func startLeaseReplica(t *testing.T, ns *leadtest.NATS, api *sharedAPI, name string, bots []event.Chatbot, interval time.Duration) *leaseReplica {
	t.Helper()
	return startLeaseReplicaWith(t, ns, api, name, bots, interval, nil)
}

// startLeaseReplicaWith is startLeaseReplica whose Loop reaches the leases through
// wrap (nil: directly).
func startLeaseReplicaWith(t *testing.T, ns *leadtest.NATS, api *sharedAPI, name string, bots []event.Chatbot,
	interval time.Duration, wrap func(poller.Leaser) poller.Leaser) *leaseReplica {
	t.Helper()
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	st, err := natsstore.Open(t.Context(), natsstore.Options{Conn: nc, Initial: natsstore.InitialSkip,
		Route: leadtest.RouteTo("crm"), Retention: 72 * time.Hour})
	require.NoError(t, err)
	leases, err := st.Leases(t.Context(), 1)
	require.NoError(t, err)
	r := &leaseReplica{name: name, store: st, leases: leases, done: make(chan struct{}), close: nc.Close,
		polls: map[string][]time.Time{}}
	var leaser poller.Leaser = leases.Replica(name)
	if wrap != nil {
		leaser = wrap(leaser)
	}
	r.loop = &poller.Loop{Client: poller.NewClient(api.url, leaseKey, 5*time.Second), Store: st,
		Chatbots: bots, Interval: interval, Leaser: leaser,
		Logger: debugLogger(name),
		OnPoll: func(bot event.Chatbot, took time.Duration, _ event.Ingested, err error) {
			if err != nil {
				return
			}
			r.mu.Lock()
			r.longest = max(r.longest, took)
			r.polls[bot.Serial] = append(r.polls[bot.Serial], time.Now())
			r.mu.Unlock()
		}}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { defer close(r.done); _ = r.loop.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// polledSince is how many successful polls of serial ended after at.
func (r *leaseReplica) polledSince(serial string, at time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, p := range r.polls[serial] {
		if p.After(at) {
			n++
		}
	}
	return n
}

// split is how many leases each owner holds.
func split(t *testing.T, l *natsstore.Leases) map[string]int {
	t.Helper()
	holders, err := l.Holders(t.Context())
	require.NoError(t, err)
	out := map[string]int{}
	for _, owner := range holders {
		out[owner]++
	}
	return out
}

func leaseBots(n int) []event.Chatbot {
	bots := make([]event.Chatbot, n)
	for i := range bots {
		bots[i] = event.Chatbot{Serial: "bot" + string(rune('a'+i)), Name: "Bot"}
	}
	return bots
}

// Two replicas over one JetStream store share six chatbots through leases: each chatbot
// is polled by one replica at a time, they split 3/3, and when one dies (no release)
// the other takes its chatbots over once their leases expire. The records already in the
// API at the start are the baseline (taken once, whichever replica polls), and every
// record that comes later is queued once for the target, across the takeover.
func TestLeasesShareChatbotsAmongReplicas(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api := startSharedAPI(t)
	bots := leaseBots(6)
	start := time.Now()
	for i, b := range bots {
		api.Add(b.Serial, leadsim.Sample(i, int64(1000+i), start.Add(-time.Hour))) // baseline: never sent
	}

	a := startLeaseReplica(t, ns, api, "replica-a", bots, leaseInterval)
	b := startLeaseReplica(t, ns, api, "replica-b", bots, leaseInterval)

	// A fair split: whichever came first gives up its surplus once it counts two replicas.
	require.Eventually(t, func() bool {
		s := split(t, a.leases)
		return s["replica-a"] == 3 && s["replica-b"] == 3
	}, 20*time.Second, 50*time.Millisecond, "the replicas split six chatbots 3/3")
	holders, err := a.leases.Holders(t.Context())
	require.NoError(t, err)

	// New records while both run: each polled and queued once.
	var want []string
	add := func(i int) {
		bot := bots[i%len(bots)]
		api.Add(bot.Serial, leadsim.Sample(100+i, int64(2000+i), time.Now()))
		want = append(want, bot.Serial)
	}
	for i := range 6 {
		add(i)
	}
	queued := func() []event.Delivery {
		ds, err := a.store.Pending(t.Context(), "crm", 0, 0)
		require.NoError(t, err)
		return ds
	}
	require.Eventually(t, func() bool { return len(queued()) == len(want) }, 20*time.Second, 50*time.Millisecond)

	// b dies: its connection drops with its leases held (nothing released), then its loop ends.
	died := time.Now()
	b.close()
	b.cancel()
	<-b.done
	var bs []string
	for serial, owner := range holders {
		if owner == "replica-b" {
			bs = append(bs, serial)
		}
	}
	require.Len(t, bs, 3)
	for i := 6; i < 12; i++ {
		add(i)
	}
	// a polls each of b's chatbots, once their leases expired.
	require.Eventually(t, func() bool {
		for _, serial := range bs {
			if a.polledSince(serial, died) == 0 {
				return false
			}
		}
		return true
	}, 30*time.Second, 50*time.Millisecond, "the survivor takes over the dead replica's chatbots")
	t.Logf("takeover of the dead replica's chatbots took %s (lease TTL %s, interval %s)",
		time.Since(died).Round(100*time.Millisecond), 3*leaseInterval, leaseInterval)
	assert.Equal(t, map[string]int{"replica-a": 6}, split(t, a.leases))

	require.Eventually(t, func() bool { return len(queued()) >= len(want) }, 20*time.Second, 50*time.Millisecond)
	ds := queued()
	got := map[string]int{}
	var chatbots []string
	for _, d := range ds {
		got[d.Event.ID]++
		chatbots = append(chatbots, d.Event.Chatbot())
	}
	for id, n := range got {
		assert.Equal(t, 1, n, "event %s queued once", id)
	}
	assert.ElementsMatch(t, want, chatbots, "every new record queued once, no baseline record")
	assert.Equal(t, 1, api.mostAtOnce(), "a chatbot is never polled by two replicas at once")
}

// A third replica gets its share: the two others give up their surplus at renewal and
// the chatbots split 2/2/2. A clean stop releases its leases at once, and the others
// take them up.
func TestLeasesNewReplicaTakesAShareAndAStopReleases(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api := startSharedAPI(t)
	bots := leaseBots(6)
	a := startLeaseReplica(t, ns, api, "replica-a", bots, leaseInterval)
	b := startLeaseReplica(t, ns, api, "replica-b", bots, leaseInterval)
	require.Eventually(t, func() bool {
		s := split(t, a.leases)
		return s["replica-a"] == 3 && s["replica-b"] == 3
	}, 20*time.Second, 50*time.Millisecond)

	c := startLeaseReplica(t, ns, api, "replica-c", bots, leaseInterval)
	require.Eventually(t, func() bool {
		s := split(t, a.leases)
		return s["replica-a"] == 2 && s["replica-b"] == 2 && s["replica-c"] == 2
	}, 20*time.Second, 50*time.Millisecond, "a new replica takes its share")

	// c stops cleanly: its leases are free as soon as its loop returns.
	c.cancel()
	<-c.done
	assert.Zero(t, split(t, a.leases)["replica-c"], "a clean stop releases every lease")
	require.Eventually(t, func() bool {
		s := split(t, a.leases)
		return s["replica-a"] == 3 && s["replica-b"] == 3
	}, 20*time.Second, 50*time.Millisecond, "the others take the stopped replica's chatbots")
	_ = b
}

// slowLeases is a lease store whose answers to Acquire for some chatbots are held back
// until the test lets them go (a slow store, a congested link): each such Acquire sends
// its chatbot on tried when it starts.
type slowLeases struct {
	poller.Leaser
	slow  map[string]bool
	tried chan string
	gate  chan struct{} // closed: the held-back answers come
}

func (s *slowLeases) Acquire(ctx context.Context, serial string, ttl time.Duration) (bool, error) {
	if s.slow[serial] {
		select {
		case s.tried <- serial:
		default:
		}
		select {
		case <-s.gate:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return s.Leaser.Acquire(ctx, serial, ttl)
}

// A replica below its share takes a free chatbot at its next try, however many of its
// tries at chatbots another replica holds are still under way (they were counted as
// taken, so that with every chatbot due at once each interval the free one was refused
// round after round: the fair-share flake of issue 10).
func TestLeasesFreeChatbotTakenWhileOtherTriesAreUnderWay(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api := startSharedAPI(t)
	bots := leaseBots(3) // share of 3 among 2 replicas: 2
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	st, err := natsstore.Open(t.Context(), natsstore.Options{Conn: nc, Initial: natsstore.InitialSkip,
		Route: leadtest.RouteTo("crm"), Retention: 72 * time.Hour})
	require.NoError(t, err)
	leases, err := st.Leases(t.Context(), 1)
	require.NoError(t, err)
	other := leases.Replica("replica-a") // a live replica holding every chatbot for a minute
	_, err = other.Join(t.Context(), time.Minute)
	require.NoError(t, err)
	for _, b := range bots {
		held, err := other.Acquire(t.Context(), b.Serial, time.Minute)
		require.NoError(t, err)
		require.True(t, held)
	}

	slow := &slowLeases{slow: map[string]bool{bots[0].Serial: true, bots[1].Serial: true},
		tried: make(chan string, 16), gate: make(chan struct{})}
	t.Cleanup(func() { close(slow.gate) })
	b := startLeaseReplicaWith(t, ns, api, "replica-b", bots, leaseInterval, func(l poller.Leaser) poller.Leaser {
		slow.Leaser = l
		return slow
	})
	// Both tries at the chatbots still held are under way, and stay so.
	seen := map[string]bool{}
	for len(seen) < 2 {
		select {
		case serial := <-slow.tried:
			seen[serial] = true
		case <-time.After(20 * time.Second):
			t.Fatal("replica-b did not try the held chatbots")
		}
	}
	free := bots[2].Serial
	require.NoError(t, other.Release(t.Context(), free))
	require.Eventually(t, func() bool {
		holders, err := leases.Holders(t.Context())
		require.NoError(t, err)
		return holders[free] == "replica-b" && b.polledSince(free, time.Time{}) > 0
	}, 15*time.Second, 20*time.Millisecond, "replica-b takes and polls the released chatbot")
}

// A chatbot a reload removes gives its lease up at once.
func TestLeasesRemovedChatbotReleases(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api := startSharedAPI(t)
	bots := leaseBots(2)
	// Leases of three minutes: none lapses during the test, a release alone frees one.
	a := startLeaseReplica(t, ns, api, "replica-a", bots, time.Minute)
	require.Eventually(t, func() bool { return split(t, a.leases)["replica-a"] == 2 }, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, a.loop.SetChatbots(bots[:1]))
	require.Eventually(t, func() bool {
		holders, err := a.leases.Holders(t.Context())
		require.NoError(t, err)
		_, held := holders[bots[1].Serial]
		return !held && holders[bots[0].Serial] == "replica-a"
	}, 10*time.Second, 20*time.Millisecond, "the removed chatbot's lease is released, the other kept")
}

// slowRelease is a lease store whose Release waits until the test lets it go, and says
// when it starts and when it returned.
type slowRelease struct {
	poller.Leaser
	started, returned chan string
	gate              chan struct{}
}

func (s *slowRelease) Release(ctx context.Context, serial string) error {
	s.started <- serial
	<-s.gate
	err := s.Leaser.Release(ctx, serial)
	s.returned <- serial
	return err
}

// A chatbot a reload removes and the next one adds again (a config edited twice in a
// row) is polled again only once its old lease went, and then under a lease of its
// own: the release, slow to come back, can no longer drop the lease a new poll took
// (another replica would then poll it too).
func TestLeasesChatbotRemovedAndAddedAgainWaitsForItsRelease(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api := startSharedAPI(t)
	bots := leaseBots(3)
	slow := &slowRelease{started: make(chan string, 4), returned: make(chan string, 4), gate: make(chan struct{})}
	// Leases of three minutes and a poll a minute: none lapses, each poll is an event.
	a := startLeaseReplicaWith(t, ns, api, "replica-a", bots[:2], time.Minute, func(l poller.Leaser) poller.Leaser {
		slow.Leaser = l
		return slow
	})
	opened := false
	t.Cleanup(func() {
		if !opened {
			close(slow.gate)
		}
	})
	require.Eventually(t, func() bool { return split(t, a.leases)["replica-a"] == 2 }, 20*time.Second, 50*time.Millisecond)
	require.NoError(t, a.loop.SetChatbots(bots[:1]))
	require.Equal(t, bots[1].Serial, <-slow.started)
	readded := time.Now()
	// bots[1] comes back, and bots[2] is new: both due at once, bots[1] first.
	require.NoError(t, a.loop.SetChatbots(bots))
	require.Eventually(t, func() bool { return a.polledSince(bots[2].Serial, readded) > 0 }, 10*time.Second, 10*time.Millisecond)
	assert.Zero(t, a.polledSince(bots[1].Serial, readded), "not polled while its old lease is being released")

	close(slow.gate)
	opened = true
	require.Equal(t, bots[1].Serial, <-slow.returned)
	require.Eventually(t, func() bool {
		holders, err := a.leases.Holders(t.Context())
		require.NoError(t, err)
		return a.polledSince(bots[1].Serial, readded) > 0 && holders[bots[1].Serial] == "replica-a"
	}, 10*time.Second, 20*time.Millisecond, "polled again, under a lease held")
}

// A poll longer than the lease's TTL (a slow API, a long catch-up) keeps the lease: the
// other replica, trying every interval meanwhile, never polls the chatbot at once.
func TestLeasesLongPollKeepsTheLease(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api := startSharedAPI(t)
	bots := leaseBots(1)
	a := startLeaseReplica(t, ns, api, "replica-a", bots, leaseInterval)
	b := startLeaseReplica(t, ns, api, "replica-b", bots, leaseInterval)
	var holder *leaseReplica
	require.Eventually(t, func() bool {
		holders, err := a.leases.Holders(t.Context())
		require.NoError(t, err)
		switch holders[bots[0].Serial] {
		case "replica-a":
			holder = a
		case "replica-b":
			holder = b
		}
		return holder != nil
	}, 10*time.Second, 20*time.Millisecond)
	slow := 3*leaseInterval + 1500*time.Millisecond // longer than the lease's TTL
	api.InjectFor(bots[0].Serial, leadsim.Fault{Delay: slow})
	require.Eventually(t, func() bool {
		holder.mu.Lock()
		defer holder.mu.Unlock()
		return holder.longest >= slow
	}, 20*time.Second, 50*time.Millisecond, "the slow poll ended")
	assert.Equal(t, 1, api.mostAtOnce(), "the other replica did not poll the chatbot during the slow poll")
	assert.Equal(t, map[string]int{holder.name: 1}, split(t, a.leases))
}

// debugLogger is a replica's logger: none, or with LEADBRIDGE_LEASE_DEBUG=1 everything
// to stderr, named by replica (how the fair-share flake was found).
func debugLogger(name string) *slog.Logger {
	if os.Getenv("LEADBRIDGE_LEASE_DEBUG") != "1" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("replica", name)
}
