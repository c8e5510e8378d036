package poller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/leadbridge/leadbridge/event"
)

// Loop defaults, used where the corresponding field is zero.
const (
	DefaultInterval   = time.Minute      // wait between successful polls of a chatbot
	DefaultLookback   = 48 * time.Hour   // how far back a poll's window starts
	DefaultMaxBackoff = 10 * time.Minute // longest wait between polls of a failing chatbot
)

const (
	// maxInitialBackoff caps the first wait after a failure, so a passing fault on a
	// long interval is retried soon; later waits double up to MaxBackoff.
	maxInitialBackoff = 5 * time.Second
	// maxFirstSpread bounds the span over which Run spreads the first polls: a chatbot
	// is first polled within min(Interval, maxFirstSpread) of the start.
	maxFirstSpread = time.Minute
	// pollAllConcurrency bounds how many chatbots PollAll polls at once.
	pollAllConcurrency = 4
	// catchUpMargin is how far before a chatbot's last success a catch-up window starts,
	// to cover CreateTime's local offsets and the API's day rounding.
	catchUpMargin = 24 * time.Hour
	// gapCutMessage is the warning for a gap wider than MaxLookback.
	gapCutMessage = "polling gap is wider than the store's retention allows; records created in its " +
		"older part are not read: run the backfill command to recover them"
	// futureMarkMessage is the warning for a last-success mark later than now.
	futureMarkMessage = "the last successful poll is recorded in the future (the clock was ahead, or was set back): " +
		"its gap is unknown, so the poll reads back as far as the store's retention allows"
	// clockSkew is how far in the future a last-success mark may lie and still be taken as
	// now (a small step of the clock); a mark further ahead is suspect.
	clockSkew = 5 * time.Minute
	// maxFaults bounds the malformed records remembered per chatbot, so that one the API
	// repeats on every poll is warned about once; the oldest is forgotten first.
	maxFaults = 1024
	// maxFaultWarnings bounds the malformed-record warnings of one page; the rest are
	// logged at debug and summed up in one warning.
	maxFaultWarnings = 20
)

// Store is what the loop needs of the dedupe store.
type Store interface {
	// IngestPage takes one polled page of a chatbot's records, handed over in parts: read
	// calls take with each part in order, and take has durably recorded that part's new
	// records, with their pending deliveries, when it returns (telling new records from
	// the ones every poll returns is the store's job), and says what it did. The parts
	// are one page (for the first start's baseline, decided once); the page is complete
	// with the part marked last, or once read returns nil. IngestPage returns read's error.
	IngestPage(ctx context.Context, serial string, read func(take func(leads []event.Lead, last bool) (event.Ingested, error)) error) error
	// RecordPoll notes that a chatbot was polled at the given time and how it went
	// (pollErr nil for success).
	RecordPoll(ctx context.Context, serial string, at time.Time, pollErr error) error
	// LastOK returns a chatbot's last successful poll, zero if none: the latest success
	// RecordPoll noted in this process as it was given (so with its monotonic clock
	// reading when it has one), else the one recorded before.
	LastOK(ctx context.Context, serial string) (time.Time, error)
}

// Loop polls every chatbot on its own schedule and feeds the records to the Store.
//
// A poll asks for the UTC days from now-Lookback to tomorrow. After a gap in a chatbot's
// successful polls (the daemon was stopped, or the API failed) that window would miss
// records from the gap's older part, so the window then starts a day before the chatbot's
// last success instead, but never before now-MaxLookback: the store forgets seen records
// after its retention, and records read again after that would look new. A gap cut short
// that way is logged as a warning with the backfill command that recovers it.
//
// Set the fields before calling Run, PollOnce or PollAll and do not change them after;
// SetChatbots, SetPace and SetClient change a running Loop (see live.go). A Loop must
// not be copied once used.
type Loop struct {
	// Client calls the LeadList API for every chatbot whose account is not in Clients.
	Client *Client
	// Clients are the Clients of the accounts, by account name (event.Chatbot.Account):
	// each with its own key, host, timeout and Budget, shared by the account's chatbots.
	Clients map[string]*Client
	// Store takes the records.
	Store Store
	// Chatbots are the chatbots to poll, each on its own schedule; SetChatbots changes
	// them while Run runs.
	Chatbots []event.Chatbot
	// Interval is the wait between successful polls of one chatbot (DefaultInterval if 0),
	// unless the chatbot has its own.
	Interval time.Duration
	// Lookback is how far back a poll's window starts when no gap needs catching up
	// (DefaultLookback if 0), unless the chatbot has its own.
	Lookback time.Duration
	// MaxLookback is the furthest back a catch-up window may start: the store's retention
	// less a margin. 0 (or anything below Lookback) means no catch-up beyond Lookback.
	MaxLookback time.Duration
	// BackfillFlags, when set, is appended to the backfill command logged for a gap too
	// long to catch up (e.g. "--config /etc/leadbridge/config.yaml").
	BackfillFlags string
	// Jitter spreads polls, as a fraction of Interval: each wait after a success varies
	// by ±Jitter, and may end up to half of that (at most 5s) early, so that polls due
	// close together share one wake-up of the process. With jitter on, the first
	// polls after Run starts are also spread, the chatbots of each account over
	// min(Interval, 1m), so that chatbots started together do not poll in phase. (Each account's Budget keeps its rate bounded whatever.)
	// 0 (or below) means none (every chatbot is first polled at once); above 1 counts as
	// 1. The default lives in the config.
	Jitter float64
	// MaxBackoff caps the wait between polls of a failing chatbot (DefaultMaxBackoff if 0).
	// A Retry-After longer than the backoff is honoured even beyond this cap.
	MaxBackoff time.Duration
	// Logger receives the loop's logs; nil discards them.
	Logger *slog.Logger
	// OnPoll, if set, is called after every poll, e.g. to update metrics. It must be safe
	// for concurrent use.
	OnPoll func(bot event.Chatbot, took time.Duration, res event.Ingested, err error)
	// OnSkip, if set, is called for every record a poll skipped because it could not be
	// decoded, with the API field at fault ("record" when it is not an object), whether or
	// not it was skipped before. It must be safe for concurrent use.
	OnSkip func(bot event.Chatbot, field string)
	// DropEvents leaves Events out of the results of PollOnce and PollAll and of OnPoll
	// (their counts stay), so that a large page's events are never all held at once:
	// each part's events are logged as it is taken and then dropped.
	DropEvents bool
	// Now tells the time for windows and RecordPoll (time.Now if nil).
	Now func() time.Time
	// Leaser, if set, shares the chatbots with other replicas of a shared store (see
	// lease.go): Run polls a chatbot only while this replica holds its lease. nil: Run
	// polls every chatbot. PollOnce and PollAll poll without leases.
	Leaser Leaser

	mu   sync.Mutex
	bots map[string]*botState // by serial, made on first use
	live *liveSet             // the running chatbots while Run runs; nil before

	leases  leases                             // what the Leaser gave this replica
	pace    atomic.Pointer[pace]               // Interval and Lookback as SetPace changed them; nil: the fields
	clients atomic.Pointer[map[string]*Client] // Clients as SetClients changed them; nil: the field
}

// botState is what the Loop remembers of a chatbot between polls.
type botState struct {
	caughtUp  time.Time  // catch-up progress: the days before this were read since the last success (in memory only)
	announced time.Time  // start of the last catch-up window logged
	warned    string     // backfill command last logged for a gap cut short
	future    time.Time  // last-success mark in the future last warned about
	faults    seenFaults // malformed records already warned about
	taken     takenPage  // the last plain-window answer taken whole
}

// takenPage is an answer the store took whole: the same answer to the same window again
// holds nothing the store has not seen, so it is not read record by record.
type takenPage struct {
	window Window
	sum    Sum
	at     time.Time // monotonic; the memo lasts takenFor
	// res is what the same answer makes of the store now: every record it took,
	// knew or took as baseline is a duplicate; stale and rejected ones stay so.
	res   event.Ingested
	skips []string // the fields of the records the decoder skipped, for the skip metric
}

// takenFor is how long an answer taken whole lets the same answer skip the store. The
// store refreshes a seen key's last-seen time when a poll returns it at most once per a
// tenth of its retention (at least 7h): reading every answer at least hourly keeps that.
const takenFor = time.Hour

// known returns the answer with sum to w if the store took it whole lately.
func (l *Loop) known(serial string, w Window, sum Sum) (takenPage, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.bots[serial]
	if st == nil || st.taken.window != w || st.taken.sum != sum || time.Since(st.taken.at) >= takenFor {
		return takenPage{}, false
	}
	return st.taken, true
}

// forget drops what the memo says of serial: the store is taking records for it that
// are not those of the remembered answer (another answer, taken whole or not, or a
// catch-up chunk), which may change what the remembered answer would do to it.
func (l *Loop) forget(serial string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.bots[serial]; st != nil {
		st.taken = takenPage{}
	}
}

// took notes that the store took the answer with sum to w whole, with result res and
// the decoder skipping records at fields skips.
func (l *Loop) took(serial string, w Window, sum Sum, res event.Ingested, skips []string) {
	again := event.Ingested{Duplicate: res.New + res.Duplicate + res.Updated + res.Baseline,
		Stale: res.Stale, Rejected: res.Rejected}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state(serial).taken = takenPage{window: w, sum: sum, at: time.Now(), res: again, skips: skips}
}

// seenFaults remembers the fingerprints of the last maxFaults malformed records warned
// about, forgetting the oldest first.
type seenFaults struct {
	set  map[uint64]struct{}
	ring []uint64
	next int
}

// add remembers sum and reports whether it is new.
func (f *seenFaults) add(sum uint64) bool {
	if _, ok := f.set[sum]; ok {
		return false
	}
	if f.set == nil {
		f.set = make(map[uint64]struct{})
	}
	if len(f.ring) < maxFaults {
		f.ring = append(f.ring, sum)
	} else {
		delete(f.set, f.ring[f.next])
		f.ring[f.next] = sum
		f.next = (f.next + 1) % maxFaults
	}
	f.set[sum] = struct{}{}
	return true
}

// span is the window a poll asks for and how it was chosen.
type span struct {
	Window
	lastOK   time.Time // the chatbot's last successful poll, zero if none
	future   bool      // lastOK is later than now: suspect, so Start is as early as MaxLookback allows
	catchUp  bool      // Start is earlier than the plain Lookback window's
	lostFrom time.Time // when the catch-up was cut at MaxLookback: the UTC day it wanted to start; else zero
}

// storeError is a failure of the store during a poll: our side, logged as an error.
type storeError struct {
	serial string
	op     string
	err    error
}

func (e *storeError) Error() string {
	return fmt.Sprintf("chatbot %q: store %s: %v", e.serial, e.op, e.err)
}

func (e *storeError) Unwrap() error { return e.err }

// Run polls every chatbot on its own schedule until ctx is done; a poll that falls due
// starts at once, whatever other polls are under way, so a slow or failing chatbot never
// delays another (see schedule). A failing chatbot is retried with exponential backoff
// (honouring Retry-After); a success returns it to Interval. Run returns nil once ctx is
// done and every poll under way has ended, or at once if the Loop is misconfigured.
// SetChatbots changes the running chatbots.
func (l *Loop) Run(ctx context.Context) error {
	if err := l.validate(); err != nil {
		return err
	}
	bots := l.chatbots()
	for account, group := range byAccount(bots) {
		l.warnOverBudget(account, group)
	}
	var leasing sync.WaitGroup
	l.joinLeases(ctx, &leasing)
	waits := l.firstWaits(bots)
	l.mu.Lock()
	live := &liveSet{ctx: ctx, running: make(map[string]*runner, len(bots)),
		kick: make(chan struct{}, 1), work: make(chan *runner)}
	l.live = live
	for _, bot := range bots {
		l.startLocked(bot, waits[bot.Serial])
	}
	for range min(idlePollers, len(bots)) {
		live.wg.Go(func() { l.poller(live) })
	}
	l.mu.Unlock()
	l.schedule(live) // until ctx is done
	l.mu.Lock()
	live.stopping = true // no chatbot starts from now on
	l.mu.Unlock()
	live.wg.Wait()
	l.releaseLeases(ctx)
	leasing.Wait()
	l.leaveLeases(ctx)
	return nil
}

// firstWaits are the waits before the first polls of bots, by serial: each account's
// chatbots spread over their interval (see firstWait).
func (l *Loop) firstWaits(bots []event.Chatbot) map[string]time.Duration {
	waits := make(map[string]time.Duration, len(bots))
	for _, group := range byAccount(bots) {
		for i, bot := range group {
			waits[bot.Serial] = l.firstWait(i, len(group), l.intervalOf(bot))
		}
	}
	return waits
}

// byAccount groups bots by account, each group in the order of bots.
func byAccount(bots []event.Chatbot) map[string][]event.Chatbot {
	groups := map[string][]event.Chatbot{}
	for _, bot := range bots {
		groups[bot.Account] = append(groups[bot.Account], bot)
	}
	return groups
}

// warnOverBudget logs when an account's chatbots, at their intervals, need more calls
// a second than its Budget allows: their polls then queue, in turn, and each chatbot
// is polled less often than its interval says.
func (l *Loop) warnOverBudget(account string, bots []event.Chatbot) {
	budget := l.clientFor(event.Chatbot{Account: account}).Budget
	if budget == nil {
		return
	}
	need := 0.0
	for _, bot := range bots {
		need += float64(time.Second) / float64(l.intervalOf(bot))
	}
	if rate := budget.Rate(); need > rate {
		every := time.Duration(float64(len(bots)) / rate * float64(time.Second)).Round(time.Second)
		l.logger().Warn("an account's chatbots need more LeadList calls a second than its max_rps allows: they are polled in turn, each about every "+every.String(),
			"account", account, "chatbots", len(bots), "calls_per_second_needed", need, "max_rps", rate)
	}
}

// clientFor is the Client that polls bot: its account's (in Clients, or as SetClients
// changed them), else Client.
func (l *Loop) clientFor(bot event.Chatbot) *Client {
	clients := l.Clients
	if set := l.clients.Load(); set != nil {
		clients = *set
	}
	if c := clients[bot.Account]; c != nil {
		return c
	}
	return l.Client
}

// PollOnce polls one chatbot once: List, Ingest, RecordPoll, logs and OnPoll. A failure
// is logged and returned; its error names the chatbot. A poll cut short because ctx is
// done is returned without being recorded, logged or reported to OnPoll.
func (l *Loop) PollOnce(ctx context.Context, bot event.Chatbot) (event.Ingested, error) {
	c := l.clientFor(bot)
	if c == nil {
		return event.Ingested{}, fmt.Errorf("poller: no Client for chatbot %q (account %q)", bot.Serial, bot.Account)
	}
	res, err := l.poll(ctx, bot, c)
	if err != nil && ctx.Err() == nil {
		l.logFailure(bot, err, 0)
	}
	return res, err
}

// PollAll polls every chatbot once, a few at a time, and returns their failures joined,
// each naming its chatbot.
func (l *Loop) PollAll(ctx context.Context) error {
	if err := l.validate(); err != nil {
		return err
	}
	bots := l.chatbots()
	errs := make([]error, len(bots))
	sem := make(chan struct{}, pollAllConcurrency)
	var wg sync.WaitGroup
	for i, bot := range bots {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, errs[i] = l.PollOnce(ctx, bot)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// windowFor is the window a poll of bot at now asks for, given its last success
// lastOK as the store answers it (zero if none). It ends on the UTC day after now and
// starts on the UTC day of now-Lookback (the chatbot's own, if it has one) or, when earlier, the day before the chatbot's
// last success, but not before the UTC day of now-max(MaxLookback, Lookback).
// The day before and the day after are wide enough for CreateTime's local offsets.
// A last success later than now (beyond clockSkew) tells nothing of the gap since the
// real one, so the window then starts as early as MaxLookback allows.
func (l *Loop) windowFor(bot event.Chatbot, now, lastOK time.Time) span {
	serial, lookback := bot.Serial, l.lookbackOf(bot)
	plain := utcDay(now.Add(-lookback))
	s := span{Window: Window{Start: plain, End: utcDay(now.Add(24 * time.Hour))}, lastOK: lastSuccess(lastOK, now)}
	if s.lastOK.IsZero() {
		return s
	}
	floor := utcDay(now.Add(-l.maxLookback(lookback)))
	switch wall := now.Round(0); {
	case s.lastOK.After(wall.Add(clockSkew)):
		s.future, s.Start = true, floor
	case s.lastOK.After(wall):
		s.lastOK = wall // a small step of the clock: taken as now
	}
	if want := utcDay(s.lastOK.Add(-catchUpMargin)); !s.future && want.Before(plain) {
		s.Start = want
	}
	if s.Start.Before(floor) {
		s.Start, s.lostFrom = floor, s.Start
	}
	if done := l.progress(serial); done.After(s.Start) {
		s.Start = done // the part of the gap read before a failure is not read again
	}
	s.catchUp = s.Start.Before(plain)
	return s
}

// lastSuccess is the last successful poll lastOK as a wall time, zero if none. For a
// success of this process (both readings carry a monotonic one: Now unset), now.Sub
// measures the time since on the monotonic clock, so a step of the wall clock since
// cannot shorten or lengthen it; of that and the wall reading, the earlier is kept, so
// that a forward step cannot hide a gap either. A stored success has no monotonic
// reading and is its wall reading.
func lastSuccess(lastOK, now time.Time) time.Time {
	if lastOK.IsZero() {
		return lastOK
	}
	elapsed := now.Add(-now.Sub(lastOK)).Round(0)
	if wall := lastOK.Round(0); !elapsed.Before(wall) {
		return wall
	}
	return elapsed
}

// succeeded forgets serial's catch-up progress after a successful poll: the gap is read.
func (l *Loop) succeeded(serial string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state(serial).caughtUp = time.Time{}
}

// progress is how far a catch-up interrupted by a failure got, zero if none.
func (l *Loop) progress(serial string) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.bots[serial]; st != nil {
		return st.caughtUp
	}
	return time.Time{}
}

// caughtUpTo notes that a catch-up chunk ending at end was read and taken, so that a
// retry after a later failure goes on from there instead of starting over.
func (l *Loop) caughtUpTo(serial string, end time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if st := l.state(serial); end.After(st.caughtUp) {
		st.caughtUp = end
	}
}

// announce logs a catch-up window, and a gap cut short at MaxLookback as a warning with
// the command that recovers it. Each is logged once, and again only if it changes (a
// failing chatbot's cut moves a day forward every day), not on every retry.
func (l *Loop) announce(serial string, s span) {
	if !s.catchUp && s.lostFrom.IsZero() && !s.future {
		return
	}
	var backfill string
	if !s.lostFrom.IsZero() {
		backfill = fmt.Sprintf("leadbridge backfill --since %s --until %s --chatbot %s",
			s.lostFrom.Format(time.DateOnly), s.Start.Format(time.DateOnly), serial)
		if l.BackfillFlags != "" {
			backfill += " " + l.BackfillFlags
		}
	}
	l.mu.Lock()
	st := l.state(serial)
	logCatchUp := s.catchUp && !st.announced.Equal(s.Start)
	if logCatchUp {
		st.announced = s.Start
	}
	logCut := backfill != "" && backfill != st.warned
	if logCut {
		st.warned = backfill
	}
	logFuture := s.future && !st.future.Equal(s.lastOK)
	if logFuture {
		st.future = s.lastOK
	}
	l.mu.Unlock()

	log := l.logger()
	if logFuture {
		log.Warn(futureMarkMessage, "chatbot", serial, "last_ok", s.lastOK, "since", s.Start.Format(time.DateOnly))
	}
	if logCut {
		log.Warn(gapCutMessage, "chatbot", serial, "last_ok", s.lastOK, "backfill", backfill)
	}
	if logCatchUp {
		log.Info("widened the poll window to cover the time since the last successful poll",
			"chatbot", serial, "last_ok", s.lastOK, "since", s.Start.Format(time.DateOnly))
	}
}

// state returns serial's botState, making it if needed. l.mu must be held.
func (l *Loop) state(serial string) *botState {
	st := l.bots[serial]
	if st == nil {
		if l.bots == nil {
			l.bots = map[string]*botState{}
		}
		st = &botState{}
		l.bots[serial] = st
	}
	return st
}

func (l *Loop) validate() error {
	var errs []error
	if l.Store == nil {
		errs = append(errs, errors.New("poller: Loop.Store is nil"))
	}
	bots := l.chatbots()
	if len(bots) == 0 {
		errs = append(errs, errors.New("poller: no chatbots to poll"))
	}
	errs = append(errs, l.checkChatbots(bots))
	return errors.Join(errs...)
}

// checkChatbots reports chatbots without a serial, listed twice, or of an account
// without a Client.
func (l *Loop) checkChatbots(bots []event.Chatbot) error {
	var errs []error
	seen := make(map[string]bool, len(bots))
	for i, bot := range bots {
		switch {
		case bot.Serial == "":
			errs = append(errs, fmt.Errorf("poller: chatbot %d has no serial", i))
		case seen[bot.Serial]:
			errs = append(errs, fmt.Errorf("poller: chatbot %q listed twice", bot.Serial))
		case l.clientFor(bot) == nil:
			errs = append(errs, fmt.Errorf("poller: no Client for chatbot %q (account %q): Loop.Client and Loop.Clients[account] are nil", bot.Serial, bot.Account))
		}
		seen[bot.Serial] = true
	}
	return errors.Join(errs...)
}

// firstWait is the wait before the first poll of the i-th of n chatbots (of one account)
// polled every interval: with jitter on,
// the first round is spread over min(interval, maxFirstSpread), each chatbot at a random
// point of its own n-th of that span, so that chatbots started together neither poll in
// phase (their CPU would come in bursts) nor clump; 0 with jitter off.
func (l *Loop) firstWait(i, n int, interval time.Duration) time.Duration {
	if l.jitter() == 0 || n <= 0 {
		return 0
	}
	span := min(interval, maxFirstSpread)
	return time.Duration((float64(i) + rand.Float64()) / float64(n) * float64(span))
}

// windows are the windows a poll of bot at at reads, from its last success as the
// store answers it: the plain window first, so that new leads flow while a long gap is
// read; then the gap, oldest first, in chunks no larger than a regular poll.
func (l *Loop) windows(ctx context.Context, bot event.Chatbot, at time.Time) ([]Window, error) {
	lastOK, err := l.Store.LastOK(ctx, bot.Serial)
	if err != nil {
		return nil, &storeError{serial: bot.Serial, op: "read last success", err: err}
	}
	window := l.windowFor(bot, at, lastOK)
	l.announce(bot.Serial, window)
	windows := []Window{window.Window}
	if window.catchUp {
		lookback := l.lookbackOf(bot)
		plain := utcDay(at.Add(-lookback))
		windows = append([]Window{{Start: plain, End: window.End}}, chunks(Window{Start: window.Start, End: plain}, lookback)...)
	}
	return windows, nil
}

// poll is one poll through c (bot's account's Client when the poll started, so that a
// poll under way finishes with it whatever SetClients does) without the failure log,
// which differs between PollOnce and run.
func (l *Loop) poll(ctx context.Context, bot event.Chatbot, c *Client) (event.Ingested, error) {
	if c == nil {
		return event.Ingested{}, fmt.Errorf("poller: no Client for chatbot %q (account %q)", bot.Serial, bot.Account)
	}
	log := l.logger()
	at := l.now()
	start := time.Now()
	windows, err := l.windows(ctx, bot, at)
	var (
		res      event.Ingested
		skipped  int
		canceled = err != nil && ctx.Err() != nil
		lines    logBudget
	)
	for i, w := range windows {
		var r event.Ingested
		var n int
		// Only the plain window's answer is remembered: a catch-up chunk is read once.
		r, n, err = l.pollWindow(ctx, c, bot, w, i == 0, &lines)
		res, skipped = res.Add(r), skipped+n
		if err != nil {
			// Cut short by the end of ctx (shutdown), wherever it was noticed (the store
			// checks ctx too): not a verdict on the chatbot or the store.
			canceled = ctx.Err() != nil
			break
		}
		if i > 0 {
			l.caughtUpTo(bot.Serial, w.End)
		}
	}
	lines.summarise(l.logger(), bot.Serial)
	if res.Baseline > 0 {
		log.Info("first poll: records already in the API were taken as known and not sent (poll.initial: skip)",
			"chatbot", bot.Serial, "baseline", res.Baseline)
	}
	if canceled {
		return res, err
	}
	if err == nil {
		l.succeeded(bot.Serial)
	}
	if rerr := l.Store.RecordPoll(context.WithoutCancel(ctx), bot.Serial, at, err); rerr != nil {
		err = errors.Join(err, &storeError{serial: bot.Serial, op: "record poll", err: rerr})
	}
	took := time.Since(start)
	if err == nil && log.Enabled(ctx, slog.LevelDebug) { // its attributes are not even built at info
		log.Debug("polled", "chatbot", bot.Serial, "new", res.New, "dup", res.Duplicate,
			"updated", res.Updated, "baseline", res.Baseline, "skipped", skipped, "took", took)
	}
	if l.OnPoll != nil {
		l.OnPoll(bot, took, res, err)
	}
	return res, err
}

// pollWindow reads the answer for w, through c, into the store, part by part, and says what the
// store made of it and how many records the decoder skipped. Events taken are logged as
// they are taken: they are in the store even if the answer fails later. With remember
// set (the plain window), an answer the store took whole is remembered, and the same
// answer again is not read: what the store would make of it is known. Its error is the
// client's, or a *storeError.
func (l *Loop) pollWindow(ctx context.Context, c *Client, bot event.Chatbot, w Window, remember bool, lines *logBudget) (res event.Ingested, skipped int, err error) {
	var (
		polled, stored error
		sum            Sum
		same           bool
		memo           takenPage
		skips          []string // the fields of the records the decoder skipped
	)
	known := func(s Sum) bool {
		sum = s
		if remember {
			memo, same = l.known(bot.Serial, w, s)
		}
		return same
	}
	err = l.Store.IngestPage(ctx, bot.Serial, func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		polled = c.StreamChanged(ctx, bot, w, known, func(page Page) error {
			for _, e := range page.Skipped {
				skips = append(skips, e.Field)
			}
			l.reportFaults(bot, page, lines)
			l.forget(bot.Serial)
			r, err := take(page.Leads, page.last)
			lines.announce(ctx, l.logger(), r.Events)
			if l.DropEvents {
				r.Events = nil
			}
			res, stored = res.Add(r), err
			return err
		})
		return polled
	})
	switch {
	case err != nil:
		if stored != nil || polled == nil { // the store failed, maybe only to finish the page
			err = &storeError{serial: bot.Serial, op: "ingest", err: err}
		}
		return res, len(skips), err
	case same:
		for _, field := range memo.skips {
			if l.OnSkip != nil {
				l.OnSkip(bot, field)
			}
		}
		return memo.res, len(memo.skips), nil
	case remember:
		l.took(bot.Serial, w, sum, res, skips)
	}
	return res, len(skips), nil
}

// maxAnnounced is how many new events of one poll are logged one by one at info ("new
// event"); the rest are logged at debug and counted in one info line, so that a burst of
// 100,000 records does not write 100,000 log lines (and a write system call each).
const maxAnnounced = 20

// announce logs the events a part of the poll took: at info up to maxAnnounced a poll,
// then at debug.
func (f *logBudget) announce(ctx context.Context, log *slog.Logger, events []event.Event) {
	for _, ev := range events {
		level := slog.LevelInfo
		if f.announced >= maxAnnounced {
			level, f.quiet = slog.LevelDebug, f.quiet+1
		} else {
			f.announced++
		}
		if log.Enabled(ctx, level) {
			log.Log(ctx, level, "new event", append(ev.LogAttrs(), "action", string(ev.Action()))...)
		}
	}
}

// logBudget is what one poll logged one by one: malformed records warned about (and how
// many were not, past maxFaultWarnings) and new events at info (and how many at debug
// only, past maxAnnounced).
type logBudget struct {
	warned, unwarned int
	announced, quiet int // new events logged at info, and past maxAnnounced at debug
}

// summarise logs, once per poll, that some malformed records or new events were logged at
// debug only.
func (f *logBudget) summarise(log *slog.Logger, serial string) {
	if f.unwarned > 0 {
		log.Warn("more malformed LeadList records than are warned about one by one: the rest are logged at debug",
			"chatbot", serial, "not_warned", f.unwarned)
	}
	if f.quiet > 0 {
		log.Info("more new events than are logged one by one: the rest are logged at debug",
			"chatbot", serial, "new_events", f.announced+f.quiet, "not_logged", f.quiet)
	}
}

// reportFaults logs the records of page (one chunk of a poll) that were skipped, or
// taken without a field that could not be read: a warning the first time the chatbot's
// API serves that record with that fault (at most maxFaultWarnings per poll, counted in
// fc), a debug line on each repeat, so that a record the API keeps serving does not
// flood the log. Every skip goes to OnSkip.
func (l *Loop) reportFaults(bot event.Chatbot, page Page, fc *logBudget) {
	serial := bot.Serial
	report := func(msg string, e RecordError) {
		l.mu.Lock()
		first := l.state(serial).faults.add(e.sum)
		l.mu.Unlock()
		level := slog.LevelDebug
		if first && fc.warned < maxFaultWarnings {
			level, fc.warned = slog.LevelWarn, fc.warned+1
		} else if first {
			fc.unwarned++
		}
		l.logger().Log(context.Background(), level, msg, "chatbot", serial, "index", e.Index,
			"field", e.Field, "reason", e.Err.Error(), "repeat", !first)
	}
	for _, e := range page.Skipped {
		report("skipped undecodable LeadList record", e)
		if l.OnSkip != nil {
			l.OnSkip(bot, e.Field)
		}
	}
	for _, e := range page.Warned {
		report("took a LeadList record without a field it could not read", e)
	}
}

// logFailure logs a failed poll: an error when the store failed (records may be piling
// up unrecorded), a warning when the API did. retryIn is the wait before the next try,
// 0 when there is none.
func (l *Loop) logFailure(bot event.Chatbot, err error, retryIn time.Duration) {
	level, msg := slog.LevelWarn, "LeadList poll failed"
	var se *storeError
	if errors.As(err, &se) {
		level, msg = slog.LevelError, "store failed to take polled records"
	}
	attrs := []any{"chatbot", bot.Serial, "error", err.Error()}
	if retryIn > 0 {
		attrs = append(attrs, "retry_in", retryIn)
	}
	l.logger().Log(context.Background(), level, msg, attrs...)
}

// newBackOff is the backoff of a failing chatbot polled every interval: from
// min(interval, 5s), doubling, up to MaxBackoff, randomised by ±Jitter, never giving up.
func (l *Loop) newBackOff(interval time.Duration) *backoff.ExponentialBackOff {
	maxWait := l.maxBackoff()
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(interval, maxInitialBackoff, maxWait)),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(l.jitter()),
		backoff.WithMaxInterval(maxWait),
		backoff.WithMaxElapsedTime(0),
	)
}

// maxRetryAfter bounds how long a Retry-After may keep a chatbot from being polled, so a
// broken or hostile answer ("Retry-After: 86400") cannot silence it for a day.
const maxRetryAfter = time.Hour

// retryWait is the wait after a failure: the next backoff, or the server's Retry-After
// (at most maxRetryAfter) when that is longer.
func retryWait(bo backoff.BackOff, err error) time.Duration {
	wait := bo.NextBackOff()
	var se *StatusError
	if errors.As(err, &se) && min(se.RetryAfter, maxRetryAfter) > wait {
		wait = min(se.RetryAfter, maxRetryAfter)
	}
	return wait
}

// jittered returns d varied randomly by up to ±jitter of itself.
func jittered(d time.Duration, jitter float64) time.Duration {
	return time.Duration(float64(d) * (1 + jitter*(2*rand.Float64()-1)))
}

// sleep waits d, reporting false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func utcDay(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
}

// intervalOf is bot's wait between successful polls: its own, else Interval (as SetPace
// changed it), else DefaultInterval.
func (l *Loop) intervalOf(bot event.Chatbot) time.Duration {
	interval, _ := l.paced()
	return cmp.Or(max(bot.Interval, 0), max(interval, 0), DefaultInterval)
}

// lookbackOf is how far back bot's plain window starts: its own, else Lookback (as
// SetPace changed it), else DefaultLookback.
func (l *Loop) lookbackOf(bot event.Chatbot) time.Duration {
	_, lookback := l.paced()
	return cmp.Or(max(bot.Lookback, 0), max(lookback, 0), DefaultLookback)
}

// paced is the loop's Interval and Lookback as SetPace last set them.
func (l *Loop) paced() (interval, lookback time.Duration) {
	if p := l.pace.Load(); p != nil {
		return p.interval, p.lookback
	}
	return l.Interval, l.Lookback
}

// maxLookback is how far back a catch-up window may start: MaxLookback, but at least the
// plain lookback.
func (l *Loop) maxLookback(lookback time.Duration) time.Duration {
	return max(l.MaxLookback, lookback)
}

func (l *Loop) jitter() float64 {
	return min(max(l.Jitter, 0), 1)
}

func (l *Loop) maxBackoff() time.Duration {
	if l.MaxBackoff > 0 {
		return l.MaxBackoff
	}
	return DefaultMaxBackoff
}

func (l *Loop) logger() *slog.Logger {
	if l.Logger != nil {
		return l.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (l *Loop) now() time.Time {
	if l.Now != nil {
		return l.Now()
	}
	return time.Now()
}
