package poller

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// pollLog records OnPoll calls with the time each came.
type pollLog struct {
	mu    sync.Mutex
	calls []onPollCall
	at    []time.Time
}

func (p *pollLog) hook(bot event.Chatbot, _ time.Duration, res event.Ingested, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, onPollCall{serial: bot.Serial, res: res, err: err})
	p.at = append(p.at, time.Now())
}

// of returns serial's polls and when each was reported.
func (p *pollLog) of(serial string) ([]onPollCall, []time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var calls []onPollCall
	var at []time.Time
	for i, c := range p.calls {
		if c.serial == serial {
			calls, at = append(calls, c), append(at, p.at[i])
		}
	}
	return calls, at
}

func TestSetChatbotsStartsAddedAndStopsRemovedAfterTheirPoll(t *testing.T) {
	kept, removed, added := event.Chatbot{Serial: "bot-kept"}, event.Chatbot{Serial: "bot-removed"}, event.Chatbot{Serial: "bot-added"}
	srv := newLeadListServer(t)
	for _, b := range []event.Chatbot{kept, removed, added} {
		srv.setRecords(b.Serial, docLead, docAppointment)
	}
	store, polls := openStore(t, dedupe.Options{Initial: dedupe.InitialSkip}), &pollLog{}
	l := &Loop{Client: srv.client(5 * time.Second), Store: store, Chatbots: []event.Chatbot{kept, removed},
		Interval: 20 * time.Millisecond, OnPoll: polls.hook, Now: func() time.Time { return pollNow }}
	runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(removed.Serial)) >= 2 }, 10*time.Second, 5*time.Millisecond)

	// The removed chatbot's next poll is slow and finds a new record: it is under way when
	// the chatbot is removed, and must still be taken.
	srv.always(removed.Serial, reply{delay: 300 * time.Millisecond, body: okBody(docLead, docAppointment, docLater)})
	before := len(srv.hitsFor(removed.Serial))
	require.Eventually(t, func() bool { return len(srv.hitsFor(removed.Serial)) > before }, 10*time.Second, time.Millisecond)
	require.NoError(t, l.SetChatbots([]event.Chatbot{kept, {Serial: added.Serial, Name: "Added"}}))
	hitsAtRemoval := len(srv.hitsFor(removed.Serial))

	// The poll under way finishes and its new record is in the outbox.
	var doneAt time.Time
	require.Eventually(t, func() bool {
		calls, at := polls.of(removed.Serial)
		if len(calls) == 0 || calls[len(calls)-1].res.New != 1 {
			return false
		}
		doneAt = at[len(at)-1]
		return true
	}, 10*time.Second, 5*time.Millisecond, "the removed chatbot's poll under way was taken")
	pending := leadtest.Pending(t, store, testForwarder)
	require.Len(t, pending, 1)
	assert.Equal(t, removed.Serial, pending[0].Event.Chatbot())

	// The added chatbot polls, first with the rule for a chatbot never polled (skip:
	// baseline); the removed one never again, though ten more polls of the added one,
	// 20ms apart, came after its last.
	require.Eventually(t, func() bool {
		_, at := polls.of(added.Serial)
		n := 0
		for _, a := range at {
			if a.After(doneAt) {
				n++
			}
		}
		return n >= 10
	}, 10*time.Second, 5*time.Millisecond)
	assert.Len(t, srv.hitsFor(removed.Serial), hitsAtRemoval, "a removed chatbot is not polled again")
	addedPolls, _ := polls.of(added.Serial)
	assert.Equal(t, 2, addedPolls[0].res.Baseline, "the added chatbot's first poll follows poll.initial")
	assert.Equal(t, 2, addedPolls[1].res.Duplicate)
	keptPolls, _ := polls.of(kept.Serial)
	assert.Greater(t, len(keptPolls), 10, "the kept chatbot polled on")
	assert.Equal(t, []string{kept.Serial, added.Serial}, serials(l.chatbots()))
}

func serials(bots []event.Chatbot) []string {
	var out []string
	for _, b := range bots {
		out = append(out, b.Serial)
	}
	return out
}

func TestSetChatbotsRejectsABadListAndChangesNothing(t *testing.T) {
	l := &Loop{Chatbots: []event.Chatbot{mainSite}}
	err := l.SetChatbots([]event.Chatbot{{Serial: "a"}, {Serial: "a"}, {}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), `chatbot "a" listed twice`)
	assert.Contains(t, err.Error(), "chatbot 2 has no serial")
	assert.Equal(t, []event.Chatbot{mainSite}, l.chatbots())
}

func TestSetPaceAppliesToAWaitUnderWayAndTheNextWindow(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead)
	l := &Loop{Client: srv.client(5 * time.Second), Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{mainSite},
		Interval: time.Hour, Lookback: 48 * time.Hour, Now: func() time.Time { return pollNow }}
	runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) == 1 }, 10*time.Second, 5*time.Millisecond)
	assert.Equal(t, "2023-11-22", srv.hitsFor(mainSite.Serial)[0].start[:10])

	// The chatbot now waits out an hour; a shorter interval applies to that wait.
	l.SetPace(20*time.Millisecond, 96*time.Hour)
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) >= 3 }, 10*time.Second, 5*time.Millisecond,
		"the new interval replaced the hour under way")
	assert.Equal(t, "2023-11-20", srv.hitsFor(mainSite.Serial)[1].start[:10], "the next poll reads the new lookback")
}

func TestSetClientsChangesOneAccountAndKeepsTheOthers(t *testing.T) {
	oldA, newA, hostB := newLeadListServer(t), newLeadListServer(t), newLeadListServer(t)
	botA := event.Chatbot{Serial: "a0000000000000000000000000000001", Name: "A", Account: "client-a"}
	botB := event.Chatbot{Serial: "b0000000000000000000000000000002", Name: "B", Account: "client-b"}
	oldA.always(botA.Serial, reply{status: 503})
	newA.setRecords(botA.Serial, docLead)
	hostB.setRecords(botB.Serial, docLead)
	clientB := hostB.client(5 * time.Second)
	polls := &pollLog{}
	l := &Loop{Clients: map[string]*Client{"client-a": oldA.client(5 * time.Second), "client-b": clientB},
		Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{botA, botB},
		Interval: 20 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
		OnPoll: polls.hook, Now: func() time.Time { return pollNow }}
	runLoop(t, l)
	require.Eventually(t, func() bool { c, _ := polls.of(botA.Serial); return len(c) >= 1 }, 10*time.Second, 5*time.Millisecond)
	calls, _ := polls.of(botA.Serial)
	require.Error(t, calls[0].err, "A's old host fails")

	l.SetClients(map[string]*Client{"client-a": newA.client(5 * time.Second), "client-b": clientB})
	require.Eventually(t, func() bool {
		c, _ := polls.of(botA.Serial)
		return c[len(c)-1].err == nil
	}, 10*time.Second, 5*time.Millisecond, "a poll after SetClients goes to A's new host")
	assert.NotEmpty(t, newA.hitsFor(botA.Serial))
	assert.Empty(t, newA.hitsFor(botB.Serial), "B stays on its own host")
	bHits := len(hostB.hitsFor(botB.Serial))
	require.Eventually(t, func() bool { return len(hostB.hitsFor(botB.Serial)) > bHits }, 10*time.Second, 5*time.Millisecond,
		"B polls on at its host")
	assert.Same(t, clientB, l.clientFor(botB))
}

func TestSetChatbotsWarnsOfAnAccountNowOverItsBudget(t *testing.T) {
	srv := newLeadListServer(t)
	logs := &logSink{}
	c := srv.client(5 * time.Second)
	c.Budget = NewBudget(1)
	bot := event.Chatbot{Serial: "a0000000000000000000000000000001", Account: "client-a", Interval: time.Hour}
	l := &Loop{Clients: map[string]*Client{"client-a": c}, Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{bot},
		Logger: logs.logger(), Now: func() time.Time { return pollNow }}
	runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(bot.Serial)) == 1 }, 10*time.Second, 5*time.Millisecond)
	const warning = "an account's chatbots need more LeadList calls a second than its max_rps allows: they are polled in turn, each about every 2s"
	require.Empty(t, logs.lines(t, warning))

	// A second chatbot polled every 100ms: 10 calls a second wanted, 1 allowed.
	fast := event.Chatbot{Serial: "a0000000000000000000000000000002", Account: "client-a", Interval: 100 * time.Millisecond}
	require.NoError(t, l.SetChatbots([]event.Chatbot{bot, fast}))
	lines := logs.lines(t, warning)
	require.Len(t, lines, 1, "logs:\n%s", logs)
	assert.Equal(t, "client-a", lines[0]["account"])
}

func TestSetChatbotsAppliesAChatbotsOwnIntervalToTheWaitUnderWay(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords(mainSite.Serial, docLead)
	bot := mainSite
	bot.Interval = time.Hour
	l := &Loop{Client: srv.client(5 * time.Second), Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{bot},
		Interval: time.Hour, Now: func() time.Time { return pollNow }}
	runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) == 1 }, 10*time.Second, 5*time.Millisecond)

	// The chatbot now waits out its own hour; its new interval applies to that wait.
	bot.Interval = 20 * time.Millisecond
	require.NoError(t, l.SetChatbots([]event.Chatbot{bot}))
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) >= 3 }, 10*time.Second, 5*time.Millisecond,
		"the chatbot's new interval replaced the hour under way")
}

func TestChatbotRemovedAndAddedBackIsNeverPolledTwiceAtOnce(t *testing.T) {
	srv := newLeadListServer(t)
	srv.always(mainSite.Serial, reply{delay: 200 * time.Millisecond, body: okBody(docLead)})
	polls := &pollLog{}
	l := &Loop{Client: srv.client(5 * time.Second), Store: openStore(t, dedupe.Options{}), Chatbots: []event.Chatbot{mainSite},
		Interval: 10 * time.Millisecond, OnPoll: polls.hook, Now: func() time.Time { return pollNow }}
	runLoop(t, l)
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) == 1 }, 10*time.Second, time.Millisecond)

	// Removed and added back while its poll is under way: the new schedule starts once
	// that poll is over, not beside it.
	require.NoError(t, l.SetChatbots(nil))
	require.NoError(t, l.SetChatbots([]event.Chatbot{mainSite}))
	require.Eventually(t, func() bool { return len(srv.hitsFor(mainSite.Serial)) >= 3 }, 10*time.Second, time.Millisecond)
	assert.Equal(t, 1, srv.peakConcurrency(), "one poll of the chatbot at a time")
	calls, _ := polls.of(mainSite.Serial)
	assert.NotEmpty(t, calls)
}
