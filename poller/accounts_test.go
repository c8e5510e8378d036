package poller

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
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

// host is a LeadList stand-in with its own key that notes when each request came and
// which chatbot it named.
type host struct {
	*leadsim.Server
	url string

	mu    sync.Mutex
	times []time.Time
}

func startHost(t *testing.T, key string) *host {
	t.Helper()
	h := &host{Server: leadsim.New(key)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.times = append(h.times, time.Now())
		h.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// sentAt is when the client sent each request, in order: noted by its transport the
// moment the Budget let the request go.
type sentAt struct {
	mu    sync.Mutex
	times []time.Time
}

func (s *sentAt) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.times = append(s.times, time.Now())
	s.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (s *sentAt) all() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.times)
}

// accountClient is a Client of one account on h with key, a Budget of rps, noting when
// it sends.
func accountClient(h *host, key string, rps float64) (*Client, *sentAt) {
	c := NewClient(h.url, key, 5*time.Second)
	c.Budget = NewBudget(rps)
	sent := &sentAt{}
	c.HTTPClient = &http.Client{Transport: sent, Timeout: 5 * time.Second}
	return c, sent
}

// pollCounter counts successful and failed polls by serial, and tells when a chatbot
// reached a count.
type pollCounter struct {
	mu     sync.Mutex
	ok     map[string]int
	failed map[string]int
	want   map[string]int
	done   chan struct{}
}

func countPolls(want map[string]int) *pollCounter {
	return &pollCounter{ok: map[string]int{}, failed: map[string]int{}, want: want, done: make(chan struct{})}
}

func (p *pollCounter) hook(bot event.Chatbot, _ time.Duration, _ event.Ingested, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.failed[bot.Serial]++
		return
	}
	p.ok[bot.Serial]++
	for serial, n := range p.want {
		if p.ok[serial] < n {
			return
		}
	}
	if p.want != nil {
		close(p.done)
		p.want = nil
	}
}

func (p *pollCounter) counts() (ok, failed map[string]int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps(p.ok), maps(p.failed)
}

func maps(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// runUntil runs l until the counter is done (or fails the test after a generous bound,
// which is no measure of speed), then stops it.
func runUntil(t *testing.T, l *Loop, p *pollCounter) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	stopped := make(chan error, 1)
	go func() { stopped <- l.Run(ctx) }()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Error("the polls did not happen")
	}
	cancel()
	require.NoError(t, <-stopped)
}

// Chatbots of two accounts are polled each with its account's key and host, at their
// own intervals, and every event carries its account.
func TestAccountsArePolledWithTheirOwnKeyHostAndInterval(t *testing.T) {
	hostA, hostB := startHost(t, "key-a"), startHost(t, "key-b")
	hostA.Add("a1", leadsim.Sample(1, 31313, pollNow.Add(-time.Hour)))
	hostB.Add("b1", leadsim.Sample(2, 31314, pollNow.Add(-time.Hour)))
	clientA, _ := accountClient(hostA, "key-a", 1000)
	clientB, _ := accountClient(hostB, "key-b", 1000)
	store := openStore(t, dedupe.Options{Initial: dedupe.InitialEmit})
	polls := countPolls(map[string]int{"a1": 5, "b1": 5})
	l := &Loop{
		Clients: map[string]*Client{"client-a": clientA, "reseller": clientB},
		Store:   store,
		Chatbots: []event.Chatbot{
			{Serial: "a1", Name: "A one", Account: "client-a", Interval: 10 * time.Millisecond},
			{Serial: "a2", Name: "A two", Account: "client-a", Interval: time.Hour},
			{Serial: "b1", Name: "B one", Account: "reseller", Interval: 10 * time.Millisecond},
		},
		Interval: time.Hour,
		Now:      func() time.Time { return pollNow },
		OnPoll:   polls.hook,
	}
	runUntil(t, l, polls)

	ok, failed := polls.counts()
	assert.Empty(t, failed, "a chatbot polled with another account's key or host fails")
	assert.Equal(t, 1, ok["a2"], "a2 polls every hour: once, while a1 polled %d times", ok["a1"])
	assert.Equal(t, 0, hostA.RequestsFor("b1"))
	assert.Equal(t, 0, hostB.RequestsFor("a1")+hostB.RequestsFor("a2"))
	assert.GreaterOrEqual(t, hostA.RequestsFor("a1"), 5)

	accounts := map[string]string{}
	for _, d := range leadtest.Pending(t, store, testForwarder) {
		accounts[d.Event.Chatbot()] = d.Event.Data.Account
	}
	assert.Equal(t, map[string]string{"a1": "client-a", "b1": "reseller"}, accounts, "data.account of every event")
}

// Each host sees its account's budget and no more, from the first request: the k-th
// request of an account is never sent before start + (k-1)/max_rps, however many
// chatbots want a poll at once (jitter off: all of them at the start).
func TestEachAccountKeepsToItsBudget(t *testing.T) {
	hostA, hostB := startHost(t, "key-a"), startHost(t, "key-b")
	const rpsA, rpsB = 20, 50
	clientA, sentA := accountClient(hostA, "key-a", rpsA)
	clientB, sentB := accountClient(hostB, "key-b", rpsB)
	var bots []event.Chatbot
	for _, s := range []string{"a1", "a2", "a3", "a4", "a5"} {
		bots = append(bots, event.Chatbot{Serial: s, Account: "client-a"})
	}
	for _, s := range []string{"b1", "b2", "b3", "b4", "b5"} {
		bots = append(bots, event.Chatbot{Serial: s, Account: "reseller"})
	}
	// Fair: the run ends only when every chatbot of both accounts got at least two turns
	// (a starved one never does, and the test fails on its deadline).
	want := map[string]int{}
	for _, bot := range bots {
		want[bot.Serial] = 2
	}
	want["b1"], want["b5"] = 6, 6
	polls := countPolls(want)
	l := &Loop{
		Clients:  map[string]*Client{"client-a": clientA, "reseller": clientB},
		Store:    openStore(t, dedupe.Options{}),
		Chatbots: bots,
		Interval: time.Millisecond, // far above any budget: every poll waits its turn
		Now:      func() time.Time { return pollNow },
		OnPoll:   polls.hook,
	}
	start := time.Now()
	runUntil(t, l, polls)

	for _, acc := range []struct {
		name string
		rps  float64
		sent []time.Time
		h    *host
	}{{"client-a", rpsA, sentA.all(), hostA}, {"reseller", rpsB, sentB.all(), hostB}} {
		require.NotEmpty(t, acc.sent, acc.name)
		gap := time.Duration(float64(time.Second) / acc.rps)
		for k, at := range acc.sent {
			require.False(t, at.Before(start.Add(time.Duration(k)*gap)),
				"%s: request %d sent %s after the start, before its budget allows it (%s)", acc.name, k+1, at.Sub(start), time.Duration(k)*gap)
		}
		_, failed := polls.counts()
		assert.Empty(t, failed)
	}
}

// A 429 from one account's host holds that account's polls (all its chatbots) for its
// Retry-After; the other account goes on at its pace.
func TestA429SlowsOnlyItsAccount(t *testing.T) {
	hostA, hostB := startHost(t, "key-a"), startHost(t, "key-b")
	hostA.Inject(leadsim.Fault{Status: http.StatusTooManyRequests, RetryAfter: "3600"})
	clientA, _ := accountClient(hostA, "key-a", 2) // a2's first turn is 500ms after a1's
	clientB, _ := accountClient(hostB, "key-b", 1000)
	polls := countPolls(map[string]int{"b1": 20})
	l := &Loop{
		Clients: map[string]*Client{"client-a": clientA, "reseller": clientB},
		Store:   openStore(t, dedupe.Options{}),
		Chatbots: []event.Chatbot{
			{Serial: "a1", Account: "client-a"}, {Serial: "a2", Account: "client-a"},
			{Serial: "b1", Account: "reseller"},
		},
		Interval: 60 * time.Millisecond, // 20 polls of b1 take over a second
		Now:      func() time.Time { return pollNow },
		OnPoll:   polls.hook,
	}
	runUntil(t, l, polls)
	assert.Equal(t, 1, hostA.Requests(), "after the 429 no chatbot of client-a was polled")
	ok, failed := polls.counts()
	assert.GreaterOrEqual(t, ok["b1"], 20)
	assert.Equal(t, 1, failed["a1"]+failed["a2"], "one poll of client-a failed with the 429: %v", failed)
	assert.Zero(t, failed["b1"])
}

// A chatbot of an account the Loop has no Client for is an error, not a crash.
func TestPollOnceWithoutTheAccountsClient(t *testing.T) {
	l := &Loop{Clients: map[string]*Client{"client-a": NewClient("http://127.0.0.1:1", "k", time.Second)},
		Store: openStore(t, dedupe.Options{})}
	_, err := l.PollOnce(t.Context(), event.Chatbot{Serial: "r1", Account: "reseller"})
	assert.EqualError(t, err, `poller: no Client for chatbot "r1" (account "reseller")`)
	err = (&Loop{Clients: l.Clients, Store: l.Store, Chatbots: []event.Chatbot{{Serial: "r1", Account: "reseller"}}}).Run(t.Context())
	assert.ErrorContains(t, err, `no Client for chatbot "r1" (account "reseller")`)
}
