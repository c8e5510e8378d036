// Package dedupe is leadbridge's durable state in one bbolt file: which records were seen,
// the outbox of deliveries still owed to forwarders, dead letters, per-chatbot poll state
// and paused forwarders.
//
// The delivery guarantee rests on Ingest: one polled page is one bbolt transaction that
// marks its new records seen and puts one outbox entry per interested forwarder. Either
// both happen or neither does, so a record is never seen-but-unsent, and a crash can at
// worst repeat a delivery whose Ack was not yet committed (with the same event id).
//
// Bucket layout (schema version 3):
//
//	meta                  "schema" → uint32 big-endian schema version
//	                      "clock"  → two int64 big-endian Unix nanoseconds: the time the
//	                      store vouched for at its last write and the latest time it used
//	                      (see storeClock)
//	seen                  lead.Key() → 8-byte big-endian Unix seconds + 4-byte big-endian
//	                      nanoseconds of the record's CreatedAt, 8-byte big-endian Unix
//	                      seconds when the record was last seen, then the 32-byte content
//	                      hash (52 bytes). Version 1 had no last-seen time (44 bytes); such a
//	                      value is still read, its CreatedAt standing for its last-seen time,
//	                      and is rewritten in the new form when its last-seen time is next
//	                      refreshed. Opening an older file for writing marks it version 3,
//	                      which an older leadbridge then refuses rather than misreads.
//	events                8-byte big-endian event seq (the bucket's NextSequence) → the
//	                      event, stored once for all the outbox entries and activity log
//	                      attempts referring to it: a count of those and its binary form
//	                      (see entry.go, activity.go)
//	outbox/<forwarder>    8-byte big-endian seq (the sub-bucket's NextSequence) → a
//	                      binary entry: the event seq and the retry state; version 2
//	                      wrote event.Delivery JSON, still read (see entry.go)
//	dead/<forwarder>      8-byte big-endian seq (own sequence, in order of failure)
//	                      → event.DeadLetter JSON
//	chatbots              serial → event.ChatbotState JSON; its "seen" is not read:
//	                      Chatbots counts the chatbot's keys in seen
//	paused                forwarder → Pause JSON
//
// bbolt allows one writing process per file; the file is opened with an exclusive lock,
// or with a shared one (Options.ReadOnly) that still conflicts with a writer's. The
// methods are cohesive enough that a second backend (NATS JetStream KV plus a stream for
// the outbox) can provide the same ones; consumers define the small interfaces they need.
package dedupe

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"runtime/debug"
	"sync"
	"time"

	"github.com/leadbridge/leadbridge/event"
	bolt "go.etcd.io/bbolt"
)

// schemaVersion is the bucket layout this package writes; it also reads the versions
// from oldestSchemaVersion on: version 1's seen values are upgraded as they are
// refreshed, version 2's JSON outbox entries as their retry state changes (entry.go).
const (
	schemaVersion       = 3
	oldestSchemaVersion = 1
)

var (
	bucketMeta     = []byte("meta")
	bucketSeen     = []byte("seen")
	bucketOutbox   = []byte("outbox")
	bucketDead     = []byte("dead")
	bucketChatbots = []byte("chatbots")
	bucketPaused   = []byte("paused")
	keySchema      = []byte("schema")
)

// ErrReadOnly is returned (wrapped) by every method that writes, on a store opened with
// Options.ReadOnly.
var ErrReadOnly = errors.New("store opened read-only")

// Initial values for Options.Initial (event.InitialEmits reads them).
const (
	InitialSkip = event.InitialSkip // the first poll of a chatbot marks its records seen, sends nothing
	InitialEmit = event.InitialEmit // the first poll of a chatbot sends its records like any new ones
)

// Options configures Open.
type Options struct {
	Path        string                     // bbolt file, created 0600 if missing (unless ReadOnly)
	Retention   time.Duration              // Prune removes seen keys neither created nor seen within it, Ingest ignores older records; <= 0 keeps everything
	Initial     string                     // InitialSkip (default) or InitialEmit
	EmitUpdates bool                       // a seen record whose content changed is sent as an updated event
	Route       func(event.Event) []string // names of the forwarders that want an event; nil → none. Called outside the write transaction (unless CheapRoute), so it may be slow (jq filters)
	Logger      *slog.Logger               // nil → discard
	OpenTimeout time.Duration              // how long to wait for the file lock, default 1s
	ReadOnly    bool                       // for operator commands: never create, change or write the file
	Now         func() time.Time           // the wall clock Ingest reads, default time.Now (tests inject one)
	// PollFlushInterval is how often RecordPoll's bookkeeping is written to the file
	// (DefaultPollFlushInterval if <= 0); a crash loses at most this much of it.
	PollFlushInterval time.Duration
	// CheapRoute reports whether Route is cheap and bounded now (no forwarder has a jq
	// filter): then Ingest calls it inside its write transaction and takes a chunk in
	// one run instead of two. It is asked once per chunk; nil → never.
	CheapRoute func() bool
}

// Store is the bbolt-backed store. Its methods are safe for concurrent use. Every I/O
// method takes a ctx and, when ctx is done as it starts, returns ctx's error (wrapped)
// without touching the file; bbolt takes no context, so an operation once begun runs to
// its end.
type Store struct {
	db          *bolt.DB
	path        string
	retention   time.Duration
	initialEmit bool
	emitUpdates bool
	route       func(event.Event) []string
	cheapRoute  func() bool
	log         *slog.Logger
	changes     chan struct{}
	readOnly    bool
	now         func() time.Time
	clock       *storeClock

	staleMu     sync.Mutex
	staleLogged map[string]bool // chatbots whose records older than retention were logged

	pollMu    sync.Mutex
	polls     map[string]pollMark  // poll bookkeeping not yet flushed, by serial
	durableOK map[string]bool      // chatbots whose file holds a last success
	lastOK    map[string]time.Time // last success by serial: the file's at Open, then RecordPoll's
	closed    bool                 // Close began: RecordPoll refuses, as the file would never get it
	flushMu   sync.Mutex           // one FlushPolls at a time
	stopFlush func()               // stops the periodic flush and waits for it; nil if none runs
}

// Open opens (creating if needed) the store file, takes its lock and creates the buckets.
// A file held by another process fails within OpenTimeout with a "locked" error; a file
// that is not a bbolt database, or whose schema version is not this package's, is refused
// untouched.
//
// With opts.ReadOnly the file must exist; it is opened read-only under a shared lock
// (which a running daemon's exclusive lock still refuses, with the same "locked" error),
// and neither its permissions nor its content are changed. Reads work, a bucket missing
// from the file reads as empty, and every write method returns ErrReadOnly.
func Open(opts Options) (*Store, error) {
	s, err := open(opts)
	if err != nil || opts.ReadOnly {
		return s, err
	}
	interval := opts.PollFlushInterval
	if interval <= 0 {
		interval = DefaultPollFlushInterval
	}
	ticker := time.NewTicker(interval)
	s.startFlush(ticker.C, ticker.Stop)
	return s, nil
}

// startFlush runs FlushPolls at every tick until Close, which then calls release.
func (s *Store) startFlush(tick <-chan time.Time, release func()) {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		s.flushPolls(tick, stop)
	}()
	s.stopFlush = sync.OnceFunc(func() {
		close(stop)
		<-done
		release()
	})
}

// open is Open without the periodic flush of the poll bookkeeping.
func open(opts Options) (*Store, error) {
	if opts.Path == "" {
		return nil, errors.New("store: path is empty")
	}
	initialEmit, err := event.InitialEmits(opts.Initial)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", opts.Path, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	db, err := openBolt(opts, log)
	if err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	clock := &storeClock{now: now, log: log, baseMono: time.Now()}
	_ = db.View(func(tx *bolt.Tx) error {
		clock.base, clock.last = loadClock(tx, now())
		return nil
	})
	lastOK := map[string]time.Time{}
	_ = db.View(func(tx *bolt.Tx) error { loadLastOK(tx, lastOK); return nil })
	durableOK := make(map[string]bool, len(lastOK))
	for serial := range lastOK {
		durableOK[serial] = true
	}
	log.Debug("store opened", "path", opts.Path, "read_only", opts.ReadOnly)
	return &Store{
		db:          db,
		path:        opts.Path,
		retention:   opts.Retention,
		initialEmit: initialEmit,
		emitUpdates: opts.EmitUpdates,
		route:       opts.Route,
		cheapRoute:  opts.CheapRoute,
		log:         log,
		changes:     make(chan struct{}, 1),
		readOnly:    opts.ReadOnly,
		now:         now,
		clock:       clock,
		staleLogged: map[string]bool{},
		polls:       map[string]pollMark{},
		durableOK:   durableOK,
		lastOK:      lastOK,
	}, nil
}

// openBolt opens the bbolt file at opts.Path and makes it ready: a file that is not a
// bbolt database, a damaged one or one locked by another process is refused with an
// error saying which, permissions wider than 0600 are narrowed, and the buckets exist.
func openBolt(opts Options, log *slog.Logger) (*bolt.DB, error) {
	timeout := opts.OpenTimeout
	if timeout <= 0 {
		timeout = time.Second
	}
	info, err := os.Stat(opts.Path)
	existed := err == nil
	if opts.ReadOnly {
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("store %s does not exist", opts.Path)
		case err != nil:
			return nil, fmt.Errorf("open store %s: %w", opts.Path, err)
		case info.Size() == 0:
			// bbolt would try to initialize it, which a read-only open cannot do.
			return nil, fmt.Errorf("store %s is empty, not a bbolt database yet", opts.Path)
		}
	}
	if existed && info.Size() > 0 {
		if err := checkMagic(opts.Path); err != nil {
			return nil, err
		}
	}

	var db *bolt.DB
	err = guard(func() (err error) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		db, err = bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: timeout, ReadOnly: opts.ReadOnly,
			// The outbox churns: a hash-map freelist keeps a commit from merging a long sorted
			// list of free pages. (NoFreelistSync would also save writing it, but rebuilding
			// it at open walks a damaged file in a goroutine whose panic cannot be caught.)
			FreelistType: bolt.FreelistMapType})
		return err
	})
	switch {
	case errors.Is(err, bolt.ErrTimeout):
		return nil, fmt.Errorf("store %s is locked by another leadbridge process: %w", opts.Path, err)
	case errors.Is(err, bolt.ErrInvalid), errors.Is(err, bolt.ErrChecksum), errors.Is(err, bolt.ErrVersionMismatch):
		return nil, fmt.Errorf("store %s is not a valid bbolt database: %w", opts.Path, err)
	case errors.Is(err, errPanicked):
		return nil, corrupt(opts.Path, err)
	case err != nil:
		return nil, fmt.Errorf("open store %s: %w", opts.Path, err)
	}
	if existed {
		if err := check(db); err != nil {
			_ = db.Close()
			return nil, corrupt(opts.Path, err)
		}
	}

	if !opts.ReadOnly && existed && info.Mode().Perm()&^0o600 != 0 {
		if err := os.Chmod(opts.Path, 0o600); err != nil {
			_ = db.Close()
			return nil, fmt.Errorf("store %s: restrict permissions to 0600: %w", opts.Path, err)
		}
		log.Warn("store file permissions were too open; changed to 0600", "path", opts.Path, "was", info.Mode().Perm().String())
	}

	prepare := db.Update
	if opts.ReadOnly {
		prepare = db.View
	}
	if err := guard(func() error {
		return prepare(func(tx *bolt.Tx) error { return prepareTx(tx, opts.ReadOnly) })
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: %w", opts.Path, err)
	}
	return db, nil
}

// errPanicked marks a panic inside bbolt, which it raises on pages it cannot read.
var errPanicked = errors.New("bbolt panicked")

// guard runs f, turning a panic into an error wrapping errPanicked.
func guard(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", errPanicked, r)
		}
	}()
	return f()
}

// check reads every bucket, key and value of an existing store once at open, so that a
// damaged file is refused with a clear error at start rather than failing in the middle
// of a run. It runs in the caller's goroutine with faults turned into panics (a page
// pointer past the end of the mapped file would otherwise kill the process) and guard
// turns those, and bbolt's own panics on pages it cannot read, into an error.
// (bbolt's tx.Check is not used: it reads pages in a goroutine of its own, where such a
// fault cannot be recovered.)
func check(db *bolt.DB) error {
	defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
	return guard(func() error {
		return db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error { return walk(b) })
		})
	})
}

// walk reads every key and value of b and of the buckets nested in it.
func walk(b *bolt.Bucket) error {
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if v != nil {
			continue
		}
		child := b.Bucket(k)
		if child == nil {
			return fmt.Errorf("nested bucket %q cannot be read", k)
		}
		if err := walk(child); err != nil {
			return err
		}
	}
	return nil
}

func corrupt(path string, err error) error {
	return fmt.Errorf("store %s is damaged (%v); refusing to use it. Restore a backup, or move it "+
		"aside to start afresh (set poll.initial: skip first, or the records still in the API are announced again)", path, err)
}

// checkMagic refuses a non-empty file whose first page does not carry bbolt's magic
// number, before bbolt opens it for writing.
func checkMagic(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	defer f.Close()
	// A bbolt file starts with meta page 0: a 16-byte page header, then the magic.
	var head [20]byte
	_, err = io.ReadFull(f, head[:])
	if errors.Is(err, io.ErrUnexpectedEOF) || (err == nil && binary.NativeEndian.Uint32(head[16:]) != 0xED0CDAED) {
		return fmt.Errorf("store %s is not a bbolt database; refusing to use it (move it away or fix store.path)", path)
	}
	if err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	return nil
}

// prepareTx checks the schema version if the file has one. Unless readOnly it also
// creates the missing buckets and records the schema version of a new file.
func prepareTx(tx *bolt.Tx, readOnly bool) error {
	if !readOnly {
		for _, name := range [][]byte{bucketMeta, bucketSeen, bucketOutbox, bucketEvents, bucketDead, bucketChatbots, bucketPaused} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
	}
	meta := tx.Bucket(bucketMeta)
	if meta == nil {
		return nil // read-only, and no leadbridge ever wrote this file
	}
	if v := meta.Get(keySchema); v != nil {
		if len(v) != 4 {
			return fmt.Errorf("schema version is malformed (%d bytes)", len(v))
		}
		switch got := binary.BigEndian.Uint32(v); {
		case got == schemaVersion:
			return nil
		case got < oldestSchemaVersion || got > schemaVersion:
			return fmt.Errorf("schema version %d, this leadbridge reads versions %d to %d", got, oldestSchemaVersion, schemaVersion)
		case readOnly:
			return nil
		}
	}
	if readOnly {
		return nil
	}
	return meta.Put(keySchema, binary.BigEndian.AppendUint32(nil, schemaVersion))
}

// Close writes the poll bookkeeping not yet flushed and releases the file lock. Every
// other write is already durable. The store must not be used after Close.
func (s *Store) Close() error {
	s.pollMu.Lock()
	s.closed = true
	s.pollMu.Unlock()
	var flushErr error
	if s.stopFlush != nil {
		s.stopFlush()
		if flushErr = s.FlushPolls(context.Background()); flushErr != nil {
			// Callers often defer Close; the error is logged so that it is not lost.
			s.log.Error("writing the poll bookkeeping at close failed; the next start catches up from older marks", "err", flushErr)
		}
	}
	if err := s.db.Close(); err != nil {
		return errors.Join(flushErr, fmt.Errorf("close store %s: %w", s.path, err))
	}
	return flushErr
}

// Changes is signalled (buffer 1, never blocking the writer) after a write that added
// outbox entries, so a dispatcher can wake up instead of polling.
func (s *Store) Changes() <-chan struct{} { return s.changes }

func (s *Store) signal() {
	select {
	case s.changes <- struct{}{}:
	default:
	}
}

// update runs fn in a write transaction, or returns ErrReadOnly, or ctx's error if ctx
// is done (bbolt takes no context: a transaction once begun runs to its end).
func (s *Store) update(ctx context.Context, fn func(*bolt.Tx) error) error {
	if s.readOnly {
		return ErrReadOnly
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.Update(fn)
}

// view runs fn in a read transaction, or returns ctx's error if ctx is done.
func (s *Store) view(ctx context.Context, fn func(*bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return s.db.View(fn)
}

// wrap names the store file and the operation in an error.
func (s *Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("store %s: %s: %w", s.path, op, err)
}

func seqKey(seq uint64) []byte { return binary.BigEndian.AppendUint64(nil, seq) }

func getJSON(b *bolt.Bucket, key []byte, v any) (bool, error) {
	raw := b.Get(key)
	if raw == nil {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("decode stored entry: %w", err)
	}
	return true, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(key, raw)
}
