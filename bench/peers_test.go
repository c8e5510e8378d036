package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadsim"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// apiKey is the key the LeadList stand-in accepts.
const apiKey = "lbbench-key-7d3f0a"

// standIn is a LeadList stand-in serving perBot deterministic records for any chatbot,
// the same ones on every call, whatever the window (they all lie in the last hour). The
// answer is streamed record by record, so 100,000 records never sit in memory as one
// body. Its methods are safe for concurrent use.
type standIn struct {
	perBot   int
	anchor   time.Time // CreateTime of record 0; record i is i*10ms older
	pst      *time.Location
	requests atomic.Int64
}

func newStandIn(perBot int) *standIn {
	return &standIn{
		perBot: perBot,
		anchor: time.Now().Add(-time.Hour).Truncate(time.Second),
		pst:    time.FixedZone("PST", -8*3600),
	}
}

// record is record i of a chatbot, spelled as the API spells it.
func (s *standIn) record(i int) leadsim.Record {
	return leadsim.Sample(i, 100000+int64(i), s.created(i).In(s.pst))
}

func (s *standIn) created(i int) time.Time {
	return s.anchor.Add(-time.Duration(i) * 10 * time.Millisecond)
}

// ids is the set of event ids of serial's records.
func (s *standIn) ids(serial string) map[string]struct{} {
	out := make(map[string]struct{}, s.perBot)
	for i := range s.perBot {
		kind := event.KindLead
		if i%3 == 0 {
			kind = event.KindAppointment
		}
		l := event.Lead{Chatbot: serial, Kind: kind, SessionID: 100000 + int64(i), CreatedAt: s.created(i)}
		out[l.ID()] = struct{}{}
	}
	return out
}

// ServeHTTP answers POST /chat/Chatbot/LeadList like the platform: the key in
// Authorization, business errors inside HTTP 200.
func (s *standIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != leadsim.Path || r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	s.requests.Add(1)
	var req struct {
		SerialNumber string `json:"serialNumber"`
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	if r.Header.Get("Authorization") != apiKey {
		_, _ = io.WriteString(w, `{"Data":null,"Version":"1.0.0","Success":false,"Code":401,"Message":"invalid secret key"}`)
		return
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.SerialNumber == "" {
		_, _ = io.WriteString(w, `{"Data":null,"Version":"1.0.0","Success":false,"Code":400,"Message":"serialNumber is required"}`)
		return
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	_, _ = bw.WriteString(`{"Data":[`)
	for i := range s.perBot {
		if i > 0 {
			_ = bw.WriteByte(',')
		}
		if err := enc.Encode(s.record(i)); err != nil {
			return // the client went away
		}
	}
	_, _ = bw.WriteString(`],"Version":"1.0.0","Success":true,"Code":200,"Message":""}`)
	_ = bw.Flush()
}

// sink is a webhook target that takes every CloudEvent with 204 on keep-alive
// connections and counts distinct event ids, repeats and ids it did not expect.
type sink struct {
	srv *httptest.Server

	mu         sync.Mutex
	want       map[string]struct{}
	got        map[string]struct{}
	requests   int
	repeats    int
	unexpected int
	bad        int // bodies that are not a CloudEvent matching their Webhook-Id
}

// newSink starts a sink expecting the ids in want (nil: none).
func newSink(t testing.TB, want map[string]struct{}) *sink {
	s := &sink{want: want, got: make(map[string]struct{}, len(want))}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sink) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var ce struct {
		ID          string `json:"id"`
		SpecVersion string `json:"specversion"`
	}
	err := json.NewDecoder(r.Body).Decode(&ce)
	_, _ = io.Copy(io.Discard, r.Body)
	id := r.Header.Get("Webhook-Id")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests++
	switch _, wanted := s.want[id]; {
	case err != nil || ce.ID != id || ce.SpecVersion != event.SpecVersion:
		s.bad++
	case !wanted:
		s.unexpected++
	default:
		if _, seen := s.got[id]; seen {
			s.repeats++
		}
		s.got[id] = struct{}{}
	}
	w.WriteHeader(http.StatusNoContent)
}

// tally is what a target received.
type tally struct {
	distinct, total, repeats, unexpected, bad int
}

func (t tally) String() string {
	return fmt.Sprintf("%d distinct of %d received (%d repeats, %d unexpected, %d malformed)",
		t.distinct, t.total, t.repeats, t.unexpected, t.bad)
}

func (s *sink) tally() tally {
	s.mu.Lock()
	defer s.mu.Unlock()
	return tally{distinct: len(s.got), total: s.requests, repeats: s.repeats, unexpected: s.unexpected, bad: s.bad}
}

// streamName is the JetStream stream both pipelines publish into.
const streamName = "BENCH"

// natsBox is the shared in-process NATS server with a client on it.
type natsBox struct {
	*leadtest.NATS
	js jetstream.JetStream
}

func newNATSBox(t testing.TB) *natsBox {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	return &natsBox{NATS: ns, js: js}
}

func (b *natsBox) url() string { return b.URL() }

// resetStream deletes and creates the stream over neoagent.>, so that a run starts empty
// and its duplicate window knows no id of an earlier run.
func (b *natsBox) resetStream(testing.TB) {
	b.CreateStream(streamName, 10*time.Minute, "neoagent.>")
}

// tally reads every message of the stream and counts its distinct Nats-Msg-Id values
// against want.
func (b *natsBox) tally(t testing.TB, want map[string]struct{}) tally {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	s, err := b.js.Stream(ctx, streamName)
	require.NoError(t, err)
	info, err := s.Info(ctx)
	require.NoError(t, err)
	total := int(info.State.Msgs)
	out := tally{total: total}
	if total == 0 {
		return out
	}
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	require.NoError(t, err)
	got := make(map[string]struct{}, total)
	for read := 0; read < total; {
		batch, err := cons.Fetch(min(total-read, 1000), jetstream.FetchMaxWait(10*time.Second))
		require.NoError(t, err)
		n := 0
		for msg := range batch.Messages() {
			n++
			id := msg.Headers().Get(natsgo.MsgIdHdr)
			var ce struct {
				ID string `json:"id"`
			}
			switch _, wanted := want[id]; {
			case json.Unmarshal(msg.Data(), &ce) != nil || ce.ID != id:
				out.bad++
			case !wanted:
				out.unexpected++
			default:
				if _, seen := got[id]; seen {
					out.repeats++
				}
				got[id] = struct{}{}
			}
		}
		require.NoError(t, batch.Error(), "reading stream %s after %d of %d messages", streamName, read, total)
		require.Positive(t, n, "stream %s: no message after %d of %d", streamName, read, total)
		read += n
	}
	out.distinct = len(got)
	return out
}

// serialName is the serial of chatbot i of a run.
func serialName(i int) string { return "benchbot-" + strconv.Itoa(100000+i) }
