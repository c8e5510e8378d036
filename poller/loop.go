package poller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"

	"github.com/leadbridge/leadbridge/event"
)

// Loop defaults, used where the corresponding field is zero.
const (
	DefaultInterval   = time.Minute      // wait between successful polls of a chatbot
	DefaultLookback   = 48 * time.Hour   // how far back a poll's window starts
	DefaultJitter     = 0.1              // spread of poll times, as a fraction of Interval
	DefaultMaxBackoff = 10 * time.Minute // longest wait between polls of a failing chatbot
)

const (
	// maxInitialBackoff caps the first wait after a failure, so a passing fault on a
	// long interval is retried soon; later waits double up to MaxBackoff.
	maxInitialBackoff = 5 * time.Second
	// pollAllConcurrency bounds how many chatbots PollAll polls at once.
	pollAllConcurrency = 4
)

// Store is what the loop needs of the dedupe store.
type Store interface {
	// Ingest takes one polled page of a chatbot's records. It decides which are new (the
	// same records arrive on every poll; telling them apart is the store's job) and has
	// durably recorded them, with their pending deliveries, when it returns nil.
	Ingest(serial string, leads []event.Lead) (event.Ingested, error)
	// RecordPoll notes that a chatbot was polled at the given time and how it went
	// (pollErr nil for success).
	RecordPoll(serial string, at time.Time, pollErr error) error
}

// Loop polls every chatbot on its own schedule and feeds the records to the Store.
// Set the fields before calling Run, PollOnce or PollAll and do not change them after.
type Loop struct {
	// Client calls the LeadList API.
	Client *Client
	// Store takes the records.
	Store Store
	// Chatbots are the chatbots to poll, each in its own goroutine.
	Chatbots []Chatbot
	// Interval is the wait between successful polls of one chatbot (DefaultInterval if 0).
	Interval time.Duration
	// Lookback is how far back each poll's window starts (DefaultLookback if 0).
	Lookback time.Duration
	// Jitter spreads polls, as a fraction of Interval: a chatbot's first poll comes at a
	// random offset in [0, Jitter*Interval] and each later wait varies by ±Jitter.
	// 0 means DefaultJitter; a negative value turns jitter off; above 1 counts as 1.
	Jitter float64
	// MaxBackoff caps the wait between polls of a failing chatbot (DefaultMaxBackoff if 0).
	// A Retry-After longer than the backoff is honoured even beyond this cap.
	MaxBackoff time.Duration
	// Logger receives the loop's logs; nil discards them.
	Logger *slog.Logger
	// OnPoll, if set, is called after every poll, e.g. to update metrics. It must be safe
	// for concurrent use.
	OnPoll func(serial string, took time.Duration, res event.Ingested, err error)
	// Now tells the time for windows and RecordPoll (time.Now if nil).
	Now func() time.Time
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

// Run polls every chatbot until ctx is done, one goroutine per chatbot, so a slow or
// failing chatbot never delays another. A failing chatbot is retried with exponential
// backoff (honouring Retry-After); a success returns it to Interval. Run returns nil once
// ctx is done and every goroutine has stopped, or at once if the Loop is misconfigured.
func (l *Loop) Run(ctx context.Context) error {
	if err := l.validate(); err != nil {
		return err
	}
	var wg sync.WaitGroup
	for _, bot := range l.Chatbots {
		wg.Go(func() { l.run(ctx, bot) })
	}
	wg.Wait()
	return nil
}

// PollOnce polls one chatbot once: List, Ingest, RecordPoll, logs and OnPoll. A failure
// is logged and returned; its error names the chatbot. A poll cut short because ctx is
// done is returned without being recorded, logged or reported to OnPoll.
func (l *Loop) PollOnce(ctx context.Context, bot Chatbot) (event.Ingested, error) {
	res, err := l.poll(ctx, bot)
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
	errs := make([]error, len(l.Chatbots))
	sem := make(chan struct{}, pollAllConcurrency)
	var wg sync.WaitGroup
	for i, bot := range l.Chatbots {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			_, errs[i] = l.PollOnce(ctx, bot)
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WindowAt is the window a poll at now asks for: from the UTC day of now-Lookback to the
// UTC day after now, wide enough for CreateTime's local offsets.
func (l *Loop) WindowAt(now time.Time) Window {
	return Window{
		Start: utcDay(now.Add(-l.lookback())),
		End:   utcDay(now.Add(24 * time.Hour)),
	}
}

func (l *Loop) validate() error {
	var errs []error
	if l.Client == nil {
		errs = append(errs, errors.New("poller: Loop.Client is nil"))
	}
	if l.Store == nil {
		errs = append(errs, errors.New("poller: Loop.Store is nil"))
	}
	if len(l.Chatbots) == 0 {
		errs = append(errs, errors.New("poller: no chatbots to poll"))
	}
	seen := make(map[string]bool, len(l.Chatbots))
	for i, bot := range l.Chatbots {
		switch {
		case bot.Serial == "":
			errs = append(errs, fmt.Errorf("poller: chatbot %d has no serial", i))
		case seen[bot.Serial]:
			errs = append(errs, fmt.Errorf("poller: chatbot %q listed twice", bot.Serial))
		}
		seen[bot.Serial] = true
	}
	return errors.Join(errs...)
}

// run is one chatbot's schedule.
func (l *Loop) run(ctx context.Context, bot Chatbot) {
	interval, jitter := l.interval(), l.jitter()
	bo := l.newBackOff()
	wait := time.Duration(rand.Float64() * jitter * float64(interval))
	for sleep(ctx, wait) {
		_, err := l.poll(ctx, bot)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			bo.Reset()
			wait = jittered(interval, jitter)
			continue
		}
		wait = retryWait(bo, err)
		l.logFailure(bot, err, wait)
	}
}

// poll is one poll without the failure log, which differs between PollOnce and run.
func (l *Loop) poll(ctx context.Context, bot Chatbot) (event.Ingested, error) {
	log := l.logger()
	at := l.now()
	start := time.Now()
	page, err := l.Client.List(ctx, bot, l.WindowAt(at))
	if err != nil && ctx.Err() != nil {
		return event.Ingested{}, err
	}
	var res event.Ingested
	if err == nil {
		for _, s := range page.Skipped {
			log.Warn("skipped undecodable LeadList record",
				"chatbot", bot.Serial, "index", s.Index, "reason", s.Err.Error())
		}
		if res, err = l.Store.Ingest(bot.Serial, page.Leads); err != nil {
			res, err = event.Ingested{}, &storeError{serial: bot.Serial, op: "ingest", err: err}
		}
	}
	if rerr := l.Store.RecordPoll(bot.Serial, at, err); rerr != nil {
		err = errors.Join(err, &storeError{serial: bot.Serial, op: "record poll", err: rerr})
	}
	took := time.Since(start)
	for _, ev := range res.Events {
		log.Info("new event", "chatbot", ev.Chatbot(), "kind", string(ev.Kind()),
			"action", string(ev.Action()), "event_id", ev.ID, "session_id", ev.Data.SessionID)
	}
	if err == nil {
		log.Debug("polled", "chatbot", bot.Serial, "new", res.New, "dup", res.Duplicate,
			"updated", res.Updated, "baseline", res.Baseline, "skipped", len(page.Skipped), "took", took)
	}
	if l.OnPoll != nil {
		l.OnPoll(bot.Serial, took, res, err)
	}
	return res, err
}

// logFailure logs a failed poll: an error when the store failed (records may be piling
// up unrecorded), a warning when the API did. retryIn is the wait before the next try,
// 0 when there is none.
func (l *Loop) logFailure(bot Chatbot, err error, retryIn time.Duration) {
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

// newBackOff is a failing chatbot's backoff: from min(Interval, 5s), doubling, up to
// MaxBackoff, randomised by ±Jitter, never giving up.
func (l *Loop) newBackOff() *backoff.ExponentialBackOff {
	maxWait := l.maxBackoff()
	return backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(min(l.interval(), maxInitialBackoff, maxWait)),
		backoff.WithMultiplier(2),
		backoff.WithRandomizationFactor(l.jitter()),
		backoff.WithMaxInterval(maxWait),
		backoff.WithMaxElapsedTime(0),
	)
}

// retryWait is the wait after a failure: the next backoff, or the server's Retry-After
// when that is longer.
func retryWait(bo backoff.BackOff, err error) time.Duration {
	wait := bo.NextBackOff()
	var se *StatusError
	if errors.As(err, &se) && se.RetryAfter > wait {
		wait = se.RetryAfter
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

func (l *Loop) interval() time.Duration {
	if l.Interval > 0 {
		return l.Interval
	}
	return DefaultInterval
}

func (l *Loop) lookback() time.Duration {
	if l.Lookback > 0 {
		return l.Lookback
	}
	return DefaultLookback
}

func (l *Loop) jitter() float64 {
	switch {
	case l.Jitter == 0:
		return DefaultJitter
	case l.Jitter < 0:
		return 0
	}
	return min(l.Jitter, 1)
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
