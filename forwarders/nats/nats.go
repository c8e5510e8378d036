// Package nats forwards events to NATS, either as a core publish confirmed by a server
// round trip, or as a JetStream publish that waits for the stream's ack and carries
// Nats-Msg-Id = event id, so the stream drops a repeat inside its duplicate window.
//
// Through the Dispatcher's batch path (DeliverBatch), JetStream publishes are pipelined:
// a batch is published without waiting, then each event is taken only once its own ack
// came.
//
// The body is the CloudEvent in JSON structured mode; headers repeat its metadata as
// Ce-* (CloudEvents NATS binding names). One connection per forwarder serves every
// delivery and reconnects forever in the background. While it is down, Deliver fails at
// once with a retryable error instead of buffering in memory, so the event stays in the
// durable outbox.
//
// Classification: a subject that renders invalid and an event larger than the server's
// max_payload (or the stream's max_msg_size) are permanent; everything else is
// retryable, including authentication failures (the connection keeps retrying, so an
// operator fixing the credentials on either side lets the outbox drain) and a missing
// or non-matching stream (an operator may create or extend it).
//
// Core NATS has no per-message answer: a publish the server refuses for permissions is
// only logged (asynchronously) and the delivery counts as done. Use JetStream where
// that matters; there a refused publish gets no ack and is retried.
package nats

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// DefaultTimeout bounds connecting to a server and one publish (core: until the server
// confirms; JetStream: until the ack) when Config.Timeout is zero.
const DefaultTimeout = 5 * time.Second

// reconnectWait is the pause between reconnect attempts to the same server.
const reconnectWait = time.Second

// MaxBatch is how many events one attempt of the Dispatcher's batch path publishes:
// JetStream publishes are pipelined, so the batch waits about one round trip for all
// its acks instead of one each.
const MaxBatch = 256

// asyncWindow bounds the JetStream publishes of one forwarder awaiting their ack, all
// batches together; a batch that finds it full waits for room, within the timeout.
const asyncWindow = 4096

// TLS configures the connection's TLS. A tls:// URL or any field set turns TLS on.
type TLS struct {
	CAFile             string // PEM roots to verify the server with, instead of the system pool
	CertFile           string // PEM client certificate, for mutual TLS (with KeyFile)
	KeyFile            string // PEM key of CertFile
	InsecureSkipVerify bool   // skip server verification: for tests only, warned about at New
}

// Config is one NATS forwarder's settings.
type Config struct {
	// Name is the forwarder's name; the connection is named "leadbridge/<Name>".
	Name string
	// URL is one server URL or a comma-separated list (nats://, tls://, ws://, wss://;
	// a bare host:port means nats://). Credentials in a URL are never logged.
	URL string
	// Subject is a text/template over SubjectData; default DefaultSubject. Every
	// rendering must be a literal subject: no whitespace, no empty token, no * or >
	// token, else the delivery is dead-lettered. Serials are safe; a ChatbotName may
	// hold dots (extra tokens) or spaces (invalid): wrap it as {{token .ChatbotName}},
	// which turns dots, whitespace and wildcards into "_".
	Subject string
	// JetStream publishes through JetStream and waits for the stream's ack.
	JetStream bool
	// Stream, with JetStream, names the stream that must capture the subjects. It is
	// created on first use when missing, capturing the template's literal start plus
	// ">" (the default template gives "neoagent.>"; a template without actions gives
	// its one subject). An existing stream is not changed: a subject it does not
	// capture fails, retryably, until an operator extends it; the event is never
	// stored in another stream meanwhile.
	Stream string
	// CredsFile is a .creds file (user JWT and nkey seed).
	CredsFile string
	// NKeyFile is a file holding a user nkey seed.
	NKeyFile string
	// User and Password authenticate by user name and password.
	User, Password string
	// Token authenticates by token.
	Token string
	// TLS configures TLS.
	TLS TLS
	// Timeout bounds connecting (one dial and handshake per server) and one publish and
	// its confirmation; default DefaultTimeout.
	Timeout time.Duration
}

// Forwarder publishes events to NATS. It is safe for concurrent use.
type Forwarder struct {
	name          string
	subject       *template.Template
	plainSubject  subjectParts // subject's parts when it only names fields (see plainParts); nil otherwise
	streamSubject string       // what a created stream captures; "" when underivable
	stream        string
	timeout       time.Duration
	logger        *slog.Logger
	secrets       *httpx.Redactor // the URL credentials, password and token
	nc            *natsgo.Conn
	js            jetstream.JetStream // nil in core mode
	closed        chan struct{}       // closed by nats.go's closed handler
	closeOnce     sync.Once
	closeErr      error
	streamChecked atomic.Bool            // checkStream passed and no publish failed since; see publishJetStream
	streamCheckMu sync.Mutex             // one checkStream at a time, so concurrent first publishes do not race to create the stream
	stallWait     []jetstream.PublishOpt // a pipelined publish that finds the window full waits this long for room

	// connErr is why the connection is down (redacted), "" while connected. It is
	// set from nats.go's callbacks, which also report failures LastError has cleared.
	connMu  sync.Mutex
	connErr string
}

var (
	_ forwarders.Forwarder      = (*Forwarder)(nil)
	_ forwarders.BatchDeliverer = (*Forwarder)(nil)
	_ forwarders.Closer         = (*Forwarder)(nil)
)

// New validates cfg, applies defaults and starts connecting. It does not wait for a
// server: when none answers, the connection keeps trying in the background and Deliver
// fails retryably meanwhile. It only blocks for one dial attempt per URL, each bounded
// by the timeout.
func New(cfg Config, logger *slog.Logger) (*Forwarder, error) {
	logger, fail, err := forwarders.Begin("nats forwarder", cfg.Name, logger, Check(cfg))
	if err != nil {
		return nil, err
	}
	servers, urlSecrets, _ := parseURLs(cfg.URL)
	tmpl, streamSubject, _ := parseSubject(cfg.Subject)
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}

	f := &Forwarder{
		name:          cfg.Name,
		subject:       tmpl,
		plainSubject:  plainParts(tmpl),
		streamSubject: streamSubject,
		stream:        cfg.Stream,
		timeout:       cfg.Timeout,
		stallWait:     []jetstream.PublishOpt{jetstream.WithStallWait(cfg.Timeout)},
		logger:        logger.With("forwarder", cfg.Name),
		closed:        make(chan struct{}),
	}
	f.secrets = httpx.NewRedactor(append(urlSecrets, cfg.Password, cfg.Token)...)
	if err := f.connect(servers, cfg); err != nil {
		return nil, fail("%s", f.redact(err.Error()))
	}
	return f, nil
}

// connect starts the connection to servers, and JetStream on it when cfg asks.
func (f *Forwarder) connect(servers []string, cfg Config) error {
	opts, err := f.options(cfg)
	if err != nil {
		return err
	}
	if f.nc, err = natsgo.Connect(strings.Join(servers, ","), opts...); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if cfg.JetStream {
		// A pipelined publish whose ack never comes is given up after the timeout, so it
		// does not hold a place in the window.
		if f.js, err = jetstream.New(f.nc, jetstream.WithPublishAsyncMaxPending(asyncWindow),
			jetstream.WithPublishAsyncTimeout(cfg.Timeout)); err != nil {
			f.nc.Close()
			return fmt.Errorf("jetstream: %w", err)
		}
	}
	if cfg.TLS.InsecureSkipVerify {
		f.logger.Warn("nats: TLS server verification is off (tls.insecure_skip_verify); use only for tests")
	}
	f.logger.Info("nats: forwarder started", "servers", redactURLs(servers), "jetstream", cfg.JetStream,
		"stream", cfg.Stream, "status", f.nc.Status().String())
	return nil
}

// options builds the connection options: identity and reconnects, state handlers,
// auth and TLS.
func (f *Forwarder) options(cfg Config) ([]natsgo.Option, error) {
	auth, err := authOptions(cfg)
	if err != nil {
		return nil, err
	}
	tlsOpts, err := tlsOptions(cfg.TLS)
	if err != nil {
		return nil, err
	}
	return slices.Concat(connOptions(cfg), f.handlerOptions(), auth, tlsOpts), nil
}

// connOptions names the connection and makes it reconnect forever without an
// in-memory buffer.
func connOptions(cfg Config) []natsgo.Option {
	return []natsgo.Option{
		natsgo.Name("leadbridge/" + cfg.Name),
		natsgo.Timeout(cfg.Timeout),
		natsgo.RetryOnFailedConnect(true),
		natsgo.MaxReconnects(-1),
		natsgo.ReconnectWait(reconnectWait),
		// No reconnect buffer: a publish while disconnected fails at once, so the
		// outbox keeps the event instead of process memory.
		natsgo.ReconnectBufSize(-1),
		// Keep retrying after repeated auth failures, so fixed credentials recover.
		natsgo.IgnoreAuthErrorAbort(),
		natsgo.DrainTimeout(cfg.Timeout),
	}
}

// handlerOptions log the connection's changes and keep connErr up to date.
func (f *Forwarder) handlerOptions() []natsgo.Option {
	return []natsgo.Option{
		natsgo.ConnectHandler(func(nc *natsgo.Conn) {
			f.setConnErr(nil)
			f.logger.Info("nats: connected", "server", httpx.RedactURL(nc.ConnectedUrl()))
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			f.setConnErr(nil)
			f.logger.Info("nats: reconnected", "server", httpx.RedactURL(nc.ConnectedUrl()))
		}),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if err != nil {
				f.setConnErr(err)
				f.logger.Warn("nats: disconnected, reconnecting", "error", f.redact(err.Error()))
			}
		}),
		natsgo.ReconnectErrHandler(func(_ *natsgo.Conn, err error) {
			if f.setConnErr(err) {
				f.logger.Warn("nats: cannot connect, still trying", "error", f.redact(err.Error()))
			}
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, _ *natsgo.Subscription, err error) {
			f.logger.Warn("nats: server reported an error", "error", f.redact(err.Error()))
		}),
		natsgo.ClosedHandler(func(*natsgo.Conn) {
			f.logger.Info("nats: connection closed")
			close(f.closed)
		}),
	}
}

// authOptions returns the option of the one configured way to authenticate, if any;
// Check has seen to it that there is at most one.
func authOptions(cfg Config) ([]natsgo.Option, error) {
	var opts []natsgo.Option
	if cfg.CredsFile != "" { // readable: Check saw to it
		opts = append(opts, natsgo.UserCredentials(cfg.CredsFile))
	}
	if cfg.NKeyFile != "" {
		opt, err := natsgo.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nkey_file: %w", err)
		}
		opts = append(opts, opt)
	}
	if cfg.User != "" {
		opts = append(opts, natsgo.UserInfo(cfg.User, cfg.Password))
	}
	if cfg.Token != "" {
		opts = append(opts, natsgo.Token(cfg.Token))
	}
	return opts, nil
}

// tlsOptions returns the options t asks for. They load their files when applied: each
// is tried here, so that an unreadable file is reported naming its field rather than
// as a connect failure.
func tlsOptions(t TLS) ([]natsgo.Option, error) {
	type fieldOption struct {
		field string
		opt   natsgo.Option
	}
	var wanted []fieldOption
	if t.InsecureSkipVerify {
		// Secure replaces the TLS config, so it goes before RootCAs and ClientCert.
		insecure := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} // asked for; warned about
		wanted = append(wanted, fieldOption{"tls.insecure_skip_verify", natsgo.Secure(insecure)})
	}
	if t.CAFile != "" {
		wanted = append(wanted, fieldOption{"tls.ca_file", natsgo.RootCAs(t.CAFile)})
	}
	if t.CertFile != "" { // with KeyFile: Check saw to it
		wanted = append(wanted, fieldOption{"tls.cert_file", natsgo.ClientCert(t.CertFile, t.KeyFile)})
	}
	opts := make([]natsgo.Option, 0, len(wanted))
	for _, w := range wanted {
		if err := w.opt(&natsgo.Options{}); err != nil {
			return nil, fmt.Errorf("%s: %w", w.field, err)
		}
		opts = append(opts, w.opt)
	}
	return opts, nil
}

// setConnErr records why the connection is down (nil: it is up) and reports whether
// that reason is new, so a reconnect loop logs each reason once.
func (f *Forwarder) setConnErr(err error) bool {
	msg := ""
	if err != nil {
		msg = f.redact(err.Error())
	}
	f.connMu.Lock()
	defer f.connMu.Unlock()
	changed := msg != f.connErr
	f.connErr = msg
	return changed
}

// Name is the forwarder's configured name.
func (f *Forwarder) Name() string { return f.name }

// Deliver publishes ev once: on the subject rendered from the template, body the
// CloudEvent JSON. In core mode it returns nil once the server has read the message
// (a flush round trip); in JetStream mode once a stream acked it, a duplicate ack
// included. It fails at once, retryably, while the connection is down.
func (f *Forwarder) Deliver(ctx context.Context, ev event.Event) error {
	msg, err := f.message(ev, nil)
	if err != nil {
		return err
	}
	if err := f.connected(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.js == nil {
		if err := f.nc.PublishMsg(msg); err != nil {
			return f.publishError(ctx, msg.Subject, err)
		}
		if err := f.nc.FlushWithContext(ctx); err != nil {
			return f.publishError(ctx, msg.Subject, err)
		}
		return nil
	}
	return f.publishJetStream(ctx, msg, ev)
}

// message renders ev as the message to publish: the subject from the template, the
// CloudEvent JSON as body, its metadata as headers (in JetStream mode with the event id
// as Nats-Msg-Id, and the stream expected when one is set). The body is appended to
// arena when it is not nil, so that a batch's bodies share a few allocations; arena
// holds the bodies until the messages are done with, never reused. Its errors are
// permanent.
func (f *Forwarder) message(ev event.Event, arena *[]byte) (*natsgo.Msg, error) {
	subject, err := f.renderSubject(ev)
	if err != nil {
		return nil, forwarders.Permanent(f.errorf("subject: %v", err))
	}
	var body []byte
	if arena == nil {
		body, err = ev.AppendJSON(make([]byte, 0, 1024))
	} else {
		start := len(*arena)
		*arena, err = ev.AppendJSON(*arena)
		body = (*arena)[start:len(*arena):len(*arena)] // appending to one body never runs into the next
	}
	if err != nil {
		return nil, forwarders.Permanent(f.errorf("encode event: %v", err))
	}
	return &natsgo.Msg{Subject: subject, Data: body, Header: f.headers(ev)}, nil
}

// connected is nil while the connection is up, else a retryable error saying why not.
func (f *Forwarder) connected() error {
	st := f.nc.Status()
	if st == natsgo.CONNECTED {
		return nil
	}
	msg := "not connected to NATS (" + strings.ToLower(st.String()) + ")"
	f.connMu.Lock()
	if f.connErr != "" {
		msg += ": " + f.connErr
	}
	f.connMu.Unlock()
	return f.errorf("%s", msg)
}

// BatchSize is the Dispatcher's question of how many of due deliveries go in one
// attempt: all of them, up to MaxBatch.
func (f *Forwarder) BatchSize(due int) int { return min(due, MaxBatch) }

// maxArenaRoom bounds the room DeliverBatch makes at once for a batch's bodies; past it
// the arena grows as bodies are added.
const maxArenaRoom = 1 << 20

// DeliverBatch publishes evs in one attempt and returns each one's outcome, in order,
// classified as Deliver's. In JetStream mode the publishes are pipelined (PublishAsync,
// Nats-Msg-Id = event id, at most 4,096 of the forwarder's awaiting their ack), and an
// event counts as taken only once its own ack came; in core mode the batch is published
// and then confirmed by one flush round trip. The timeout bounds the whole attempt.
func (f *Forwarder) DeliverBatch(ctx context.Context, evs []event.Event, _ forwarders.Rest) []error {
	errs := make([]error, len(evs))
	msgs := make([]*natsgo.Msg, len(evs))
	arena := make([]byte, 0, 1024)
	for i, ev := range evs {
		msgs[i], errs[i] = f.message(ev, &arena)
		if i == 0 && len(evs) > 1 {
			// Room for the rest, sized by the first with a margin: the arena grows at
			// most a few times, where each body of its own cost an allocation. Never
			// more than maxArenaRoom at once: a first lead of megabytes (a broken or
			// hostile API) must not make room for every other event at its size.
			arena = make([]byte, 0, min((len(arena)+len(arena)/4)*(len(evs)-1), maxArenaRoom))
		}
	}
	if err := f.connected(); err != nil {
		fail(msgs, errs, func(*natsgo.Msg) error { return err })
		return errs
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if f.js == nil {
		f.publishCoreBatch(ctx, msgs, errs)
	} else {
		f.publishJetStreamBatch(ctx, msgs, evs, errs)
	}
	return errs
}

// fail sets errs[i] to failure(msgs[i]) for every message still on its way (not nil and
// without an error), and forgets the message.
func fail(msgs []*natsgo.Msg, errs []error, failure func(*natsgo.Msg) error) {
	for i, m := range msgs {
		if m != nil && errs[i] == nil {
			errs[i], msgs[i] = failure(m), nil
		}
	}
}

// publishCoreBatch publishes msgs (nil ones skipped) and confirms them with one flush;
// a failure is recorded in errs.
func (f *Forwarder) publishCoreBatch(ctx context.Context, msgs []*natsgo.Msg, errs []error) {
	for i, m := range msgs {
		if m == nil {
			continue
		}
		if err := f.nc.PublishMsg(m); err != nil {
			errs[i], msgs[i] = f.publishError(ctx, m.Subject, err), nil
		}
	}
	if err := f.nc.FlushWithContext(ctx); err != nil {
		fail(msgs, errs, func(m *natsgo.Msg) error { return f.publishError(ctx, m.Subject, err) })
	}
}

// publishJetStreamBatch publishes msgs (nil ones skipped) without waiting for each ack,
// then collects every ack, as publishJetStream does for one: the stream is checked
// first (ensureStream) when it has not been since the last failure, and a failure is
// recorded in errs.
func (f *Forwarder) publishJetStreamBatch(ctx context.Context, msgs []*natsgo.Msg, evs []event.Event, errs []error) {
	if f.stream != "" {
		if i := slices.IndexFunc(msgs, func(m *natsgo.Msg) bool { return m != nil }); i >= 0 {
			if err := f.ensureStream(ctx, msgs[i].Subject); err != nil {
				err = f.errorf("stream %q: %v", f.stream, err)
				fail(msgs, errs, func(*natsgo.Msg) error { return err })
				return
			}
		}
	}
	futures := make([]jetstream.PubAckFuture, len(msgs))
	failed := false
	for i, m := range msgs {
		if m == nil {
			continue
		}
		var err error
		// The message id and expected stream are in m's headers (see message).
		if futures[i], err = f.js.PublishMsgAsync(m, f.stallWait...); err != nil {
			errs[i], failed = f.publishError(ctx, m.Subject, err), true
		}
	}
	for i, fut := range futures {
		if fut == nil {
			continue
		}
		ack, err := awaitAck(ctx, fut)
		if err != nil {
			errs[i], failed = f.publishError(ctx, msgs[i].Subject, err), true
		} else if ack.Duplicate {
			f.logger.Debug("nats: JetStream already had this event; duplicate dropped",
				append(evs[i].LogAttrs(), "stream", ack.Stream, "seq", ack.Sequence)...)
		}
	}
	if failed {
		f.streamChecked.Store(false) // deleted or changed meanwhile? check again next time
	}
}

// awaitAck waits for fut's ack or error until ctx is done; an answer that came is
// taken even when ctx is done by then.
func awaitAck(ctx context.Context, fut jetstream.PubAckFuture) (*jetstream.PubAck, error) {
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	case <-ctx.Done():
	}
	select {
	case ack := <-fut.Ok():
		return ack, nil
	case err := <-fut.Err():
		return nil, err
	default:
		return nil, ctx.Err()
	}
}

// publishJetStream publishes msg with the event id as Nats-Msg-Id and waits for the ack.
// With Stream set, the server stores msg in that stream only (it refuses the publish
// when another stream captures the subject, and none answers when none does). Before
// the first publish and after any failure, checkStream makes sure the stream exists
// and captures the subject, so a missing stream is created and a stream that does not
// capture the subject is reported as such.
func (f *Forwarder) publishJetStream(ctx context.Context, msg *natsgo.Msg, ev event.Event) error {
	if f.stream != "" {
		if err := f.ensureStream(ctx, msg.Subject); err != nil {
			return f.errorf("stream %q: %v", f.stream, err)
		}
	}
	ack, err := f.js.PublishMsg(ctx, msg) // the message id and expected stream are in its headers
	if err != nil {
		f.streamChecked.Store(false) // deleted or changed meanwhile? check again next time
		return f.publishError(ctx, msg.Subject, err)
	}
	if ack.Duplicate {
		f.logger.Debug("nats: JetStream already had this event; duplicate dropped",
			append(ev.LogAttrs(), "stream", ack.Stream, "seq", ack.Sequence)...)
	}
	return nil
}

// ensureStream runs checkStream unless it passed since the last failed publish. Checks
// run one at a time: a publish that waited finds the stream checked (or created) by the
// one before it, instead of finding a stream that exists but was not yet known to
// capture its subject.
func (f *Forwarder) ensureStream(ctx context.Context, subject string) error {
	if f.streamChecked.Load() {
		return nil
	}
	f.streamCheckMu.Lock()
	defer f.streamCheckMu.Unlock()
	if f.streamChecked.Load() {
		return nil
	}
	if err := f.checkStream(ctx, subject); err != nil {
		return err
	}
	f.streamChecked.Store(true)
	return nil
}

// checkStream asks the server which stream captures subject. When it is not Stream, it
// creates Stream if missing, else says which subjects Stream captures instead.
func (f *Forwarder) checkStream(ctx context.Context, subject string) error {
	owner, err := f.js.StreamNameBySubject(ctx, subject)
	switch {
	case err == nil && owner == f.stream:
		return nil
	case err != nil && !errors.Is(err, jetstream.ErrStreamNotFound):
		return fmt.Errorf("find the stream that captures subject %q: %w", subject, err)
	}
	s, err := f.js.Stream(ctx, f.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return f.createStream(ctx)
	}
	if err != nil {
		return err
	}
	captured := strings.Join(s.CachedInfo().Config.Subjects, ", ")
	if captured == "" {
		captured = "no subject" // a mirror
	}
	if owner != "" {
		return fmt.Errorf("does not capture subject %q (it captures %s; stream %q does): move the subject to this stream",
			subject, captured, owner)
	}
	return fmt.Errorf("does not capture subject %q (it captures %s); add the subject to the stream", subject, captured)
}

// createStream creates Stream capturing streamSubject; one created by someone else
// meanwhile is fine.
func (f *Forwarder) createStream(ctx context.Context) error {
	if f.streamSubject == "" {
		return errors.New("stream not found, and the subject template starts with an action, " +
			"so no subject to capture can be derived: create the stream")
	}
	_, err := f.js.CreateStream(ctx, jetstream.StreamConfig{Name: f.stream, Subjects: []string{f.streamSubject}})
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("create with subject %q: %w", f.streamSubject, err)
	}
	f.logger.Info("nats: created JetStream stream", "stream", f.stream, "subjects", f.streamSubject)
	return nil
}

// publishError classifies a failed publish: too large is permanent, the rest retryable.
func (f *Forwarder) publishError(ctx context.Context, subject string, err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, natsgo.ErrMaxPayload),
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return forwarders.Permanent(f.errorf("publish to %q: event too large for the server or stream: %v", subject, err))
	case errors.Is(err, context.DeadlineExceeded) && errors.Is(ctx.Err(), context.DeadlineExceeded),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		what := "confirmation from the server"
		if f.js != nil {
			what = "JetStream ack"
		}
		return f.errorf("publish to %q: no %s within the timeout (%s)", subject, what, f.timeout)
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return f.errorf("publish to %q: no JetStream stream captures the subject (no responders)", subject)
	case errors.Is(err, natsgo.ErrReconnectBufExceeded), errors.Is(err, natsgo.ErrConnectionClosed),
		errors.Is(err, natsgo.ErrConnectionReconnecting), errors.Is(err, natsgo.ErrDisconnected):
		return f.errorf("publish to %q: connection to NATS lost: %v", subject, err)
	}
	return f.errorf("publish to %q: %v", subject, err)
}

// Close drains the connection (pending publishes reach the server) and closes it,
// waiting at most the timeout and a second.
func (f *Forwarder) Close() error {
	f.closeOnce.Do(func() {
		if err := f.nc.Drain(); err != nil {
			f.nc.Close() // not connected: nothing to drain
		}
		select {
		case <-f.closed:
		case <-time.After(f.timeout + time.Second):
			f.nc.Close()
			f.closeErr = f.errorf("close: drain did not finish within %s", f.timeout)
		}
	})
	return f.closeErr
}

// headers carries the CloudEvent's metadata, so consumers can route without parsing,
// and in JetStream mode what WithMsgID and WithExpectStream would set: the event id as
// Nats-Msg-Id, so the stream drops a repeat, and Stream, when set, as the one expected
// to store it. The values share one slice, and the map is made at its size: a message
// makes three allocations for its headers rather than one per header.
func (f *Forwarder) headers(ev event.Event) natsgo.Header {
	n := 7
	if f.js != nil {
		n += 2
	}
	vals := make([]string, 0, n)
	h := make(natsgo.Header, n)
	set := func(k, v string) {
		vals = append(vals, v)
		h[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	set("Content-Type", "application/cloudevents+json")
	set("Ce-Specversion", ev.SpecVersion)
	set("Ce-Id", ev.ID)
	set("Ce-Source", ev.Source)
	set("Ce-Type", ev.Type)
	set("Ce-Time", ev.Time.UTC().Format(time.RFC3339Nano))
	set("Ce-Subject", ev.Subject)
	if f.js != nil && ev.ID != "" {
		set(jetstream.MsgIDHeader, ev.ID)
	}
	if f.js != nil && f.stream != "" {
		set(jetstream.ExpectedStreamHeader, f.stream)
	}
	return h
}

// redactedError is an error whose message had the forwarder's secrets removed.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

// errorf builds an error naming the forwarder, with any configured secret masked.
func (f *Forwarder) errorf(format string, args ...any) error {
	err := forwarders.Errorf(f.name, format, args...)
	return &redactedError{msg: f.redact(err.Error()), err: err}
}

// redact hides every word of s that holds one of the forwarder's secrets.
func (f *Forwarder) redact(s string) string { return f.secrets.Redact(s) }

// Check reports the problems New would find in cfg's settings (the name aside), each
// under its config key: url a list of server URLs, subject a template that renders a
// sample event to a valid subject, stream only with JetStream and a valid name, at most
// one way to authenticate (user with password), tls cert_file with key_file, timeout not
// negative, every file named (creds, nkey seed, TLS) readable; whether a file holds valid
// material New finds when it loads it. No message quotes a secret.
func Check(cfg Config) []forwarders.SettingError {
	var probs []forwarders.SettingError
	add := func(key, format string, args ...any) {
		probs = append(probs, forwarders.SettingError{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if _, _, err := parseURLs(cfg.URL); err != nil {
		add("url", "%v", err)
	}
	if _, _, err := parseSubject(cfg.Subject); err != nil {
		add("subject", "invalid template: %v", err)
	}
	if cfg.Stream != "" && !cfg.JetStream {
		add("stream", "requires jetstream: true")
	}
	if strings.ContainsAny(cfg.Stream, " \t\r\n.*>/\\") {
		add("stream", "%q is not a valid stream name (no whitespace, ., *, >, / or \\)", cfg.Stream)
	}
	switch {
	case cfg.User != "" && cfg.Password == "":
		add("password", "required with user")
	case cfg.Password != "" && cfg.User == "":
		add("user", "required with password")
	}
	var auth []string
	for _, a := range []struct{ key, val string }{
		{"creds_file", cfg.CredsFile}, {"nkey_file", cfg.NKeyFile}, {"user", cfg.User}, {"token", cfg.Token},
	} {
		if a.val != "" {
			auth = append(auth, a.key)
		}
	}
	if len(auth) > 1 {
		add(auth[1], "cannot be combined with %s: set at most one of creds_file, nkey_file, user, token", auth[0])
	}
	if (cfg.TLS.CertFile == "") != (cfg.TLS.KeyFile == "") {
		add("tls", "cert_file and key_file must be set together")
	}
	if cfg.Timeout < 0 {
		add("timeout", "must not be negative, got %s", cfg.Timeout)
	}
	for _, kf := range []struct{ key, file string }{
		{"creds_file", cfg.CredsFile}, {"nkey_file", cfg.NKeyFile}, {"tls.ca_file", cfg.TLS.CAFile},
		{"tls.cert_file", cfg.TLS.CertFile}, {"tls.key_file", cfg.TLS.KeyFile},
	} {
		if kf.file == "" {
			continue
		}
		if fh, err := os.Open(kf.file); err != nil {
			add(kf.key, "%v", err)
		} else {
			_ = fh.Close()
		}
	}
	return probs
}

// parseURLs splits and checks the comma-separated server list: no empty entry; each a
// URL with a host and scheme nats, tls, ws or wss, or a bare host:port (meaning nats://).
// It returns the URLs with a scheme and the secrets they carry (passwords, tokens as
// user names). Errors show a URL only redacted.
func parseURLs(raw string) (servers, secrets []string, err error) {
	if strings.TrimSpace(raw) == "" {
		return nil, nil, errors.New("required")
	}
	for i, s := range strings.Split(raw, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return nil, nil, fmt.Errorf("entry %d of the comma-separated list is empty", i+1)
		}
		full := s
		if !strings.Contains(s, "://") {
			full = "nats://" + s
		}
		u, err := url.Parse(full)
		if err != nil || u.Host == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme) {
			return nil, nil, fmt.Errorf("must be nats://, tls://, ws:// or wss:// URLs (or host:port) separated by commas, got %s",
				httpx.RedactURL(s))
		}
		if u.User != nil {
			secrets = append(secrets, u.User.String())
			if p, ok := u.User.Password(); ok {
				secrets = append(secrets, p)
			} else {
				secrets = append(secrets, u.User.Username()) // nats://token@host
			}
		}
		servers = append(servers, full)
	}
	return servers, secrets, nil
}

// redactURLs makes server URLs fit for logs.
func redactURLs(servers []string) []string {
	out := make([]string, len(servers))
	for i, s := range servers {
		out[i] = httpx.RedactURL(s)
	}
	return out
}
