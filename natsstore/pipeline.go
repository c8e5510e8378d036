package natsstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The store's calls keep many requests in flight on the one connection instead of
// waiting for each answer before the next question: a round trip to a cluster costs far
// more than the work the server does for one key or message.
const (
	// requestWindow bounds the requests (KV reads, claims, deletes) one call of the
	// store keeps in flight at once.
	requestWindow = 64
	// publishWindow bounds the asynchronous publishes (outbox entries) one call keeps
	// unacknowledged at once; the oldest is awaited before one more goes out.
	publishWindow = 256
)

// inParallel calls fn(i) for every i in [0, n), at most requestWindow at once, and
// returns the errors by index.
func inParallel(n int, fn func(i int) error) []error {
	errs := make([]error, n)
	if n == 1 {
		errs[0] = fn(0)
		return errs
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(n, requestWindow) {
		wg.Go(func() {
			for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
				errs[i] = fn(i)
			}
		})
	}
	wg.Wait()
	return errs
}

// publishAll publishes msgs to the outbox, at most publishWindow unacknowledged at
// once, and waits for the acknowledgement of every message it published. After the
// first failure it publishes no more, but still awaits those already out, so that when
// it returns nothing it sent is still in flight (unless ctx ended: then it stops
// waiting). The error names the first failure and
// how many of msgs are not known to be stored; those that were stored carry their
// Nats-Msg-Id, so publishing the same msgs again (the next poll) adds only the others.
func (s *Store) publishAll(ctx context.Context, msgs []*nats.Msg) error {
	if len(msgs) == 0 {
		return nil
	}
	for _, m := range msgs {
		if err := checkName(m.Subject[len(s.prefix)+len(".outbox."):]); err != nil {
			return err
		}
	}
	var first error
	failed := 0
	fail := func(err error) {
		failed++
		if first == nil {
			first = err
		}
	}
	inFlight := make([]jetstream.PubAckFuture, 0, min(len(msgs), publishWindow))
	oldest := 0 // inFlight[oldest:] are not awaited yet
	sent := 0
	for _, m := range msgs {
		if len(inFlight)-oldest == publishWindow {
			if _, err := awaitAck(ctx, inFlight[oldest]); err != nil {
				fail(err)
			}
			oldest++
		}
		if first != nil || ctx.Err() != nil {
			break
		}
		if len(inFlight) == cap(inFlight) { // only once the window is full: oldest > 0
			inFlight = inFlight[:copy(inFlight, inFlight[oldest:])]
			oldest = 0
		}
		f, err := s.js.PublishMsgAsync(m)
		if err != nil {
			if first == nil { // m is counted among those not sent
				first = err
			}
			break
		}
		inFlight = append(inFlight, f)
		sent++
	}
	for _, f := range inFlight[oldest:] {
		if _, err := awaitAck(ctx, f); err != nil {
			fail(err)
		}
	}
	if first == nil && ctx.Err() != nil {
		first = ctx.Err()
	}
	if first != nil {
		return fmt.Errorf("publish to the outbox: %d of %d entries not stored: %w", len(msgs)-sent+failed, len(msgs), first)
	}
	return nil
}

// multiGetMax is the most keys one batched read asks for: the server answers at most
// 1024 messages to one request.
const multiGetMax = 1024

// multiGetBytes bounds the subjects of one batched read, so that its request stays
// within a server's max_payload however small (1,024 event ids take about 90 KB).
func multiGetBytes(maxPayload int64) int {
	return int(max(min(maxPayload/2, 1<<20), 1024))
}

// kvValue is a key's latest value in a bucket.
type kvValue struct {
	rev   uint64
	value []byte
}

// lastValues reads the latest value of each of keys in kv with batched direct gets (one
// request per multiGetMax keys, a JetStream 2.11 feature, as the keys' TTLs are), and
// returns the keys that have a value; a key never written, deleted or purged is absent.
// If the server does not answer a batch with the values (it is older, or the bucket
// does not allow direct gets), that batch is read key by key.
func (s *Store) lastValues(ctx context.Context, kv jetstream.KeyValue, keys []string) (map[string]kvValue, error) {
	out := make(map[string]kvValue, len(keys))
	budget := multiGetBytes(s.js.Conn().MaxPayload())
	for len(keys) > 0 {
		n, size := 0, 0
		for n < len(keys) && n < multiGetMax && (n == 0 || size+len(keys[n])+len(kv.Bucket())+8 <= budget) {
			size += len(keys[n]) + len(kv.Bucket()) + 8 // "$KV.<bucket>.<key>", quoted, a comma
			n++
		}
		part := keys[:n]
		keys = keys[n:]
		got, err := s.multiGet(ctx, kv.Bucket(), part)
		if errors.Is(err, errNoMultiGet) {
			got, err = getEach(ctx, kv, part)
		}
		if err != nil {
			return nil, err
		}
		maps.Copy(out, got)
	}
	return out, nil
}

// errNoMultiGet: the server refused a batched direct get as a request it does not know.
var errNoMultiGet = errors.New("batched direct get not supported")

// multiGet asks the stream of bucket for the last message of each key's subject in one
// request and collects the answers until the server's end-of-batch.
func (s *Store) multiGet(ctx context.Context, bucket string, keys []string) (map[string]kvValue, error) {
	nc := s.js.Conn()
	pre := "$KV." + bucket + "."
	subjects := make([]string, len(keys))
	for i, k := range keys {
		subjects[i] = pre + k
	}
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
	}{subjects})
	if err != nil {
		return nil, err
	}
	inbox := nc.NewRespInbox()
	msgs := make(chan *nats.Msg, len(keys)+1)
	sub, err := nc.ChanSubscribe(inbox, msgs)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET.KV_"+bucket, inbox, req); err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.timeout)
		defer cancel()
	}
	out := make(map[string]kvValue, len(keys))
	for {
		var m *nats.Msg
		select {
		case m = <-msgs:
		case <-ctx.Done():
			return nil, fmt.Errorf("batched read of %d keys of %s: %w", len(keys), bucket, ctx.Err())
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of batch
			return out, nil
		case "404":
			if m.Header.Get("Description") == "No Results" { // none of the keys has a message
				return out, nil
			}
			return nil, fmt.Errorf("batched read of %d keys of %s: status 404 %s", len(keys), bucket, m.Header.Get("Description"))
		case "408", "400", "503": // an older server, or no direct gets on this bucket
			return nil, fmt.Errorf("%w: %s %s", errNoMultiGet, status, m.Header.Get("Description"))
		default:
			return nil, fmt.Errorf("batched read of %d keys of %s: status %s %s", len(keys), bucket, status, m.Header.Get("Description"))
		}
		key, ok := strings.CutPrefix(m.Header.Get(jetstream.SubjectHeader), pre)
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("batched read of %s: an answer without its subject or sequence", bucket)
		}
		if deleted(m.Header) {
			continue
		}
		out[key] = kvValue{rev: seq, value: m.Data}
	}
}

// deleted reports a KV message that marks its key deleted or purged, as kv.Get reads it.
func deleted(h nats.Header) bool {
	if op := h.Get("KV-Operation"); op != "" {
		return op == "DEL" || op == "PURGE"
	}
	return h.Get(jetstream.MarkerReasonHeader) != ""
}

// getEach reads keys of kv one request each, requestWindow at once.
func getEach(ctx context.Context, kv jetstream.KeyValue, keys []string) (map[string]kvValue, error) {
	vals := make([]kvValue, len(keys))
	errs := inParallel(len(keys), func(i int) error {
		e, err := kv.Get(ctx, keys[i])
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return nil
		case err != nil:
			return err
		}
		vals[i] = kvValue{rev: e.Revision(), value: e.Value()}
		return nil
	})
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	out := make(map[string]kvValue, len(keys))
	for i, v := range vals {
		if v.rev != 0 {
			out[keys[i]] = v
		}
	}
	return out, nil
}
