// Package natsstore is leadbridge's store on NATS JetStream, for several replicas
// sharing one state: the seen keys, the outbox of deliveries owed to forwarders, dead
// letters, per-chatbot state and paused forwarders, in KV buckets and streams that a
// JetStream cluster replicates. It behaves like the bbolt store (package dedupe): both
// pass the conformance suite in internal/storetest.
//
// Resources, all named after Options.Prefix (P):
//
//	KV P_seen        event id of a record's created event → seenValue (created, last seen,
//	                 content hash, serial); per-key TTL of twice the retention as a backstop
//	KV P_chatbots    serial → event.ChatbotState JSON
//	KV P_paused      forwarder → event.Pause JSON
//	KV P_retry       "<forwarder>.<seq>" → retry state of an outbox entry that failed
//	stream P_outbox  subjects P.outbox.<forwarder>; one message per delivery owed, its
//	                 stream sequence the Delivery's Seq; a work queue, so that an entry
//	                 acknowledged through its forwarder's consumer leaves with the ack
//	stream P_dead    subjects P.dead.<forwarder>; one event.DeadLetter per message
//	stream P_activity, P_activity_events
//	                 the activity log for the web console, bounded by JetStream's
//	                 limits (activity.go)
//
// The delivery guarantee rests on the order Ingest writes in: a record's outbox entries
// are published (with a Nats-Msg-Id derived from the event id, the forwarder and the
// claim's revision) and acknowledged before its seen key is claimed with an atomic
// create. A crash between the two leaves entries without a claim; the next poll finds the
// record unseen and publishes the same entries again, which the stream's duplicate window
// drops, then claims it. docs/reliability.md ("The JetStream store") has the argument.
package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
)

// Initial values for Options.Initial, as in package dedupe.
const (
	InitialSkip = event.InitialSkip // the first poll of a chatbot marks its records seen, sends nothing
	InitialEmit = event.InitialEmit // the first poll of a chatbot sends its records like any new ones
)

// Defaults for Options.
const (
	DefaultPrefix          = "leadbridge"
	DefaultTimeout         = 5 * time.Second
	DefaultDuplicateWindow = time.Hour
)

// Options configures Open.
type Options struct {
	Conn     *nats.Conn // the connection, owned by the caller (Close leaves it open)
	Prefix   string     // names of the buckets and streams; letters, digits, - and _; default DefaultPrefix
	Replicas int        // JetStream replicas of every bucket and stream, 1..5; default 1
	Timeout  time.Duration
	// DuplicateWindow is how long the outbox stream remembers a Nats-Msg-Id: an ingest
	// cut off between publishing a record's entries and claiming it, and taken again
	// within it, publishes nothing twice. Default: the larger of DefaultDuplicateWindow
	// and 20 PollIntervals (the next poll must come inside it, with room for a takeover
	// and restarts; see docs/reliability.md).
	DuplicateWindow time.Duration
	// PollInterval is the chatbots' poll interval, from which DuplicateWindow's default
	// is derived.
	PollInterval time.Duration

	Retention   time.Duration              // as dedupe.Options.Retention
	Initial     string                     // InitialSkip (default) or InitialEmit
	EmitUpdates bool                       // a seen record whose content changed is sent as an updated event
	Route       func(event.Event) []string // names of the forwarders that want an event; nil → none
	Logger      *slog.Logger               // nil → discard
	Now         func() time.Time           // the wall clock, default time.Now
	// Existing makes Open look, not build: it binds to the buckets and streams that
	// exist, creating and changing none, and fails with a *MissingError naming those
	// that do not (a store no daemon has started yet). For `config check`.
	Existing bool
}

// MissingError is Open's error, with Options.Existing, when some of the store's buckets
// and streams do not exist yet; a daemon's start creates them.
type MissingError struct {
	Names []string // "bucket P_seen", "stream P_outbox", ...
}

func (e *MissingError) Error() string {
	return "not created yet: " + strings.Join(e.Names, ", ")
}

// Store is the JetStream-backed store. Its methods are safe for concurrent use, also
// by several processes on the same Prefix.
type Store struct {
	js          jetstream.JetStream
	prefix      string
	retention   time.Duration
	initialEmit bool
	emitUpdates bool
	route       func(event.Event) []string
	log         *slog.Logger
	now         func() time.Time
	server      serverClock   // the server's clock, as stamps from it show it
	timeout     time.Duration // of one request without a deadline of its own
	changes     chan struct{}

	seen, chatbots, paused, retry jetstream.KeyValue
	outbox, dead                  jetstream.Stream
	activity, activityEvents      jetstream.Stream // the activity log (activity.go)

	// workQueue: the outbox is a work queue (see prepare), so a consumer's ack removes
	// an entry; false for an outbox an earlier version created, whose acked entries are
	// deleted one by one.
	workQueue bool

	mu     sync.Mutex
	lastOK map[string]time.Time // last success by serial: read at Open, then RecordPoll's
}

// purgeTTL is how long the marker of a deleted key stays in a bucket.
const purgeTTL = time.Minute

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// Open creates (or updates to this shape) the buckets and streams and returns the store;
// with opts.Existing it only binds to them.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Conn == nil {
		return nil, errors.New("natsstore: no connection")
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if !namePattern.MatchString(opts.Prefix) {
		return nil, fmt.Errorf("natsstore: prefix %q: want letters, digits, - and _", opts.Prefix)
	}
	if opts.Replicas == 0 {
		opts.Replicas = 1
	}
	if opts.Replicas < 1 || opts.Replicas > 5 {
		return nil, fmt.Errorf("natsstore %s: replicas %d: want 1..5", opts.Prefix, opts.Replicas)
	}
	initialEmit, err := event.InitialEmits(opts.Initial)
	if err != nil {
		return nil, fmt.Errorf("natsstore %s: %w", opts.Prefix, err)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.DuplicateWindow <= 0 {
		opts.DuplicateWindow = max(DefaultDuplicateWindow, 20*opts.PollInterval)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	js, err := jetstream.New(opts.Conn, jetstream.WithDefaultTimeout(opts.Timeout))
	if err != nil {
		return nil, fmt.Errorf("natsstore %s: %w", opts.Prefix, err)
	}
	s := &Store{js: js, prefix: opts.Prefix, retention: opts.Retention, initialEmit: initialEmit,
		emitUpdates: opts.EmitUpdates, route: opts.Route, log: log, now: now, timeout: opts.Timeout,
		changes: make(chan struct{}, 1), lastOK: map[string]time.Time{}}
	if err := s.prepare(ctx, opts); err != nil {
		return nil, s.wrap("open", err)
	}
	s.server.observe(s.outbox.CachedInfo().TimeStamp) // the server's clock when it answered
	bots, err := s.Chatbots(ctx)
	if err != nil {
		return nil, err
	}
	for serial, st := range bots {
		if !st.LastOK.IsZero() {
			s.lastOK[serial] = st.LastOK
		}
	}
	log.Debug("store opened", "prefix", s.prefix)
	return s, nil
}

// prepare creates or updates the buckets and streams, or with opts.Existing binds to
// them.
func (s *Store) prepare(ctx context.Context, opts Options) error {
	res := &resources{js: s.js, existing: opts.Existing}
	kv := func(name string, markers bool) (jetstream.KeyValue, error) {
		cfg := jetstream.KeyValueConfig{Bucket: s.prefix + "_" + name, Replicas: opts.Replicas,
			Storage: jetstream.FileStorage, History: 1}
		if markers {
			// Keys expire (the seen keys' backstop TTL), and deletes leave markers that
			// expire too (purgeTTL), so that a bucket whose keys come and go does not
			// grow by one marker per key forever.
			cfg.LimitMarkerTTL = purgeTTL
		}
		return res.kv(ctx, cfg)
	}
	var err error
	if s.seen, err = kv("seen", true); err != nil {
		return err
	}
	if s.chatbots, err = kv("chatbots", false); err != nil {
		return err
	}
	if s.paused, err = kv("paused", true); err != nil {
		return err
	}
	if s.retry, err = kv("retry", true); err != nil {
		return err
	}
	stream := func(name string, dup time.Duration, retention jetstream.RetentionPolicy) (jetstream.Stream, error) {
		return res.stream(ctx, jetstream.StreamConfig{Name: s.prefix + "_" + name, Subjects: []string{s.subject(name, "*")},
			Storage: jetstream.FileStorage, Replicas: opts.Replicas, Duplicates: dup,
			Retention: retention, Discard: jetstream.DiscardNew})
	}
	// A new outbox is a work queue: an entry that a forwarder's consumer acknowledges
	// leaves the stream with the ack, without a delete request of its own (a third of
	// the cost of an outcome). An outbox an earlier version created keeps its limits
	// retention, which JetStream cannot change to a work queue.
	retention := jetstream.WorkQueuePolicy
	old, err := retryTimeout(ctx, func(ctx context.Context) (jetstream.Stream, error) { return s.js.Stream(ctx, s.prefix+"_outbox") })
	switch {
	case err == nil:
		retention = old.CachedInfo().Config.Retention
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("stream %s_outbox: %w", s.prefix, err)
	}
	if s.outbox, err = stream("outbox", opts.DuplicateWindow, retention); err != nil {
		return err
	}
	s.workQueue = retention == jetstream.WorkQueuePolicy
	if s.dead, err = stream("dead", opts.DuplicateWindow, jetstream.LimitsPolicy); err != nil {
		return err
	}
	if err := s.prepareActivity(ctx, res, opts.Replicas); err != nil {
		return err
	}
	if len(res.missing) > 0 {
		return &MissingError{Names: res.missing}
	}
	return nil
}

// resources makes the store's buckets and streams: creates or updates each, or when
// existing only binds to those that exist and notes the others in missing.
type resources struct {
	js       jetstream.JetStream
	existing bool
	missing  []string
}

// kv is bucket cfg (nil when existing and it is missing).
func (r *resources) kv(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if r.existing {
		b, err := r.js.KeyValue(ctx, cfg.Bucket)
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			r.missing = append(r.missing, "bucket "+cfg.Bucket)
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
		}
		return b, nil
	}
	b, err := retryTimeout(ctx, func(ctx context.Context) (jetstream.KeyValue, error) { return r.js.CreateOrUpdateKeyValue(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", cfg.Bucket, err)
	}
	return b, nil
}

// stream is stream cfg (nil when existing and it is missing).
func (r *resources) stream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if r.existing {
		st, err := r.js.Stream(ctx, cfg.Name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			r.missing = append(r.missing, "stream "+cfg.Name)
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
		}
		return st, nil
	}
	st, err := retryTimeout(ctx, func(ctx context.Context) (jetstream.Stream, error) { return r.js.CreateOrUpdateStream(ctx, cfg) })
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return st, nil
}

// subject is the subject of forwarder's messages in stream kind ("outbox", "dead").
func (s *Store) subject(kind, forwarder string) string {
	return s.prefix + "." + kind + "." + forwarder
}

// checkName refuses a forwarder name that cannot be a subject token or key part.
func checkName(forwarder string) error {
	if !namePattern.MatchString(forwarder) {
		return fmt.Errorf("forwarder name %q: want letters, digits, - and _", forwarder)
	}
	return nil
}

// Close releases nothing but marks the end of use; the connection stays the caller's.
func (s *Store) Close() error { return nil }

// Changes is signalled (buffer 1, never blocking the writer) after this store added
// outbox entries, so a dispatcher can wake up instead of polling.
func (s *Store) Changes() <-chan struct{} { return s.changes }

func (s *Store) signal() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// wrap names the store and the operation in an error.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("natsstore %s: %s: %w", s.prefix, op, err)
}

// getJSON reads key of kv into v; found is false when there is none.
func getJSON(ctx context.Context, kv jetstream.KeyValue, key string, v any) (rev uint64, found bool, err error) {
	e, err := kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return e.Revision(), true, fmt.Errorf("decode %s: %w", key, err)
	}
	return e.Revision(), true, nil
}

// updateJSON applies fn to the value of key in kv (zero if none) and writes it back if
// no other writer changed it meanwhile, trying again otherwise.
func updateJSON[T any](ctx context.Context, kv jetstream.KeyValue, key string, fn func(*T)) error {
	for {
		var v T
		rev, found, err := getJSON(ctx, kv, key, &v)
		if err != nil && !found {
			return err
		}
		if err != nil {
			var zero T
			v = zero // a value that cannot be read is replaced
		}
		fn(&v)
		raw, err := json.Marshal(v)
		if err != nil {
			return err
		}
		if found {
			_, err = kv.Update(ctx, key, raw, rev)
		} else {
			_, err = kv.Create(ctx, key, raw)
		}
		if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			continue // another writer came first: apply fn to its value
		}
		return err
	}
}
