package faultsuite

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// answer is how a stand-in target answers one request.
type answer int

// The answers a stand-in gives; all but answerOK are faults.
const (
	answerOK answer = iota
	answer500
	answer429
	answer503
	answerHang
)

func (a answer) String() string {
	switch a {
	case answer500:
		return "500"
	case answer429:
		return "429"
	case answer503:
		return "503"
	case answerHang:
		return "hang"
	}
	return "ok"
}

// pickAnswer decides, from the seed, the target, the event id and the attempt number,
// whether a request fails and how: pct percent of attempts get one of faults. The choice
// is the same on every run with the same seed, whatever order requests arrive in.
func pickAnswer(seed uint64, target, id string, attempt, pct int, faults []answer) answer {
	sum := sha256.Sum256([]byte(fmt.Sprintf("%d|%s|%s|%d", seed, target, id, attempt)))
	v := binary.BigEndian.Uint64(sum[:8])
	if int(v%100) >= pct {
		return answerOK
	}
	return faults[(v/100)%uint64(len(faults))]
}

// tally is what a stand-in target saw: attempts and accepted deliveries per event id,
// the faults it answered with, and anything wrong with a request.
type tally struct {
	mu       sync.Mutex
	attempts map[string]int         // requests per event id
	got      map[string]int         // 2xx answers per event id: deliveries the target took
	gotAt    map[string][]time.Time // when each of them was taken
	faults   map[answer]int         // fault answers given
	problems []string               // malformed requests, bad signatures, id mismatches
	events   map[string]string      // event id → "chatbot|kind|session|type" as the target read it
	inflight atomic.Int32           // requests being answered now
	last     atomic.Int64           // Unix nanoseconds of the latest request
}

func newTally() *tally {
	return &tally{
		attempts: map[string]int{},
		got:      map[string]int{},
		gotAt:    map[string][]time.Time{},
		faults:   map[answer]int{},
		events:   map[string]string{},
	}
}

// begin notes a request for ids (several for a Slack digest) and returns the attempt
// number of the first, from 1.
func (t *tally) begin(ids ...string) int {
	t.last.Store(time.Now().UnixNano())
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, id := range ids {
		t.attempts[id]++
	}
	return t.attempts[ids[0]]
}

// takenAt returns when each id was taken, in order.
func (t *tally) takenAt() map[string][]time.Time {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string][]time.Time, len(t.gotAt))
	for id, at := range t.gotAt {
		out[id] = append([]time.Time(nil), at...)
	}
	return out
}

func (t *tally) fault(a answer) {
	t.mu.Lock()
	t.faults[a]++
	t.mu.Unlock()
}

func (t *tally) problem(format string, args ...any) {
	t.mu.Lock()
	t.problems = append(t.problems, fmt.Sprintf(format, args...))
	t.mu.Unlock()
}

// took records an accepted delivery of id; what describes the event as received.
func (t *tally) took(id, what string) {
	t.mu.Lock()
	t.got[id]++
	t.gotAt[id] = append(t.gotAt[id], time.Now())
	if what != "" {
		t.events[id] = what
	}
	t.mu.Unlock()
	t.last.Store(time.Now().UnixNano())
}

// received returns a copy of the accepted deliveries per event id.
func (t *tally) received() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]int, len(t.got))
	for id, n := range t.got {
		out[id] = n
	}
	return out
}

// described returns what the target read of each delivered event.
func (t *tally) described() map[string]string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make(map[string]string, len(t.events))
	for id, s := range t.events {
		out[id] = s
	}
	return out
}

func (t *tally) issues() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]string(nil), t.problems...)
}

// faultSummary lists the fault answers given, e.g. "429:3 500:2".
func (t *tally) faultSummary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var parts []string
	total := 0
	for a, n := range t.faults {
		parts = append(parts, a.String()+":"+strconv.Itoa(n))
		total += n
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d(%s)", total, strings.Join(parts, " "))
}

// quietFor reports whether the target saw no request during the last d.
func (t *tally) quietFor(d time.Duration) bool {
	return t.inflight.Load() == 0 && time.Since(time.Unix(0, t.last.Load())) >= d
}

// describe is how the suite compares an event's identity fields across targets.
func describe(ev event.Event) string {
	return fmt.Sprintf("%s|%s|%d|%s", ev.Chatbot(), ev.Kind(), ev.Data.SessionID, ev.Type)
}

// webhookSink is a CRM stand-in for a webhook forwarder: it checks the Standard Webhooks
// headers and signature of every request, and answers a seeded share of them with 500,
// 429 (Retry-After: 1), 503, or by hanging until the client gives up.
type webhookSink struct {
	*tally
	name     string
	seed     uint64
	pct      int
	key      []byte
	hold     atomic.Bool // hang on the next request, whatever the seed says
	maxHang  time.Duration
	srv      *httptest.Server
	faultSet []answer
}

// newWebhookSink starts a sink answering pct percent of attempts with one of faults
// (default: 500, 429, 503 and a hang).
func newWebhookSink(t *testing.T, name string, seed uint64, pct int, key []byte, faults ...answer) *webhookSink {
	if len(faults) == 0 {
		faults = []answer{answer500, answer429, answer503, answerHang}
	}
	s := &webhookSink{
		tally: newTally(), name: name, seed: seed, pct: pct, key: key, maxHang: 5 * time.Second,
		faultSet: faults,
	}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

// ServeHTTP answers one delivery.
func (s *webhookSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the client went away
	}
	id := r.Header.Get("Webhook-Id")
	var ev event.Event
	if err := json.Unmarshal(body, &ev); err != nil {
		s.problem("%s: body is not a CloudEvent: %v", s.name, err)
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	if id == "" || id != ev.ID {
		s.problem("%s: webhook-id %q differs from the event id %q", s.name, id, ev.ID)
	}
	if want := sign(s.key, id, r.Header.Get("Webhook-Timestamp"), body); r.Header.Get("Webhook-Signature") != want {
		s.problem("%s: event %s: bad webhook-signature", s.name, id)
	}
	attempt := s.begin(id)
	a := pickAnswer(s.seed, s.name, id, attempt, s.pct, s.faultSet)
	if s.hold.CompareAndSwap(true, false) {
		a = answerHang
	}
	if a != answerOK {
		s.fault(a)
	}
	switch a {
	case answer500:
		http.Error(w, "internal error", http.StatusInternalServerError)
	case answer429:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	case answer503:
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
	case answerHang:
		select {
		case <-r.Context().Done():
		case <-time.After(s.maxHang):
		}
		http.Error(w, "too late", http.StatusServiceUnavailable)
	default:
		s.took(id, describe(ev))
		w.WriteHeader(http.StatusNoContent)
	}
}

// sign is the Standard Webhooks v1 signature of a request, computed independently of the
// forwarder's code.
func sign(key []byte, id, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, timestamp)
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// slackEventID finds the event id in a rendered message: the slack forwarder puts it in
// the context block ("Event <id> · session <n>"), with the session.
var slackEventID = regexp.MustCompile(`Event ([0-9a-f]{64}) · session ([0-9]+)`)

// slackDigestIDs finds a digest's ids in its last context block ("Events <id>, <id>, ...",
// the list continuing in the block's next elements).
var slackDigestIDs = regexp.MustCompile(`"Events ((?:[0-9a-f]{64}(?:, )?)+)"`)

// slackHexID is one event id.
var slackHexID = regexp.MustCompile(`[0-9a-f]{64}`)

// slackMetadataType is the metadata event_type the slack forwarder gives its messages.
const slackMetadataType = "leadbridge_events"

// slackStandIn is a Slack incoming webhook at /services/T0FAULT/B0FAULT/<secret> that
// answers a seeded share of messages with 429 (Retry-After: 1) or 500. It takes single
// messages and digests: each message must name its events' ids in its metadata, and the
// same ids in its context line (one "Event <id> · session <n>", or a digest's "Events
// <id>, ..."); every id a taken message names counts as one delivery of that id.
type slackStandIn struct {
	*tally
	path    string
	seed    uint64
	pct     int
	srv     *httptest.Server
	singles atomic.Int32 // single messages taken
	digests atomic.Int32 // digests taken
}

func newSlackStandIn(t *testing.T, secret string, seed uint64, pct int) *slackStandIn {
	s := &slackStandIn{tally: newTally(), path: "/services/T0FAULT/B0FAULT/" + secret, seed: seed, pct: pct}
	s.srv = httptest.NewServer(s)
	t.Cleanup(s.srv.Close)
	return s
}

// url is the incoming-webhook URL, secret included.
func (s *slackStandIn) url() string { return s.srv.URL + s.path }

// slackMessage is what the stand-in reads of a message.
type slackMessage struct {
	Text     string            `json:"text"`
	Blocks   []json.RawMessage `json:"blocks"`
	Metadata struct {
		EventType    string `json:"event_type"`
		EventPayload struct {
			IDs []string `json:"ids"`
		} `json:"event_payload"`
	} `json:"metadata"`
}

// ids are the event ids msg names, and for a single message what the stand-in reads of
// its event ("kind|session"); problem says what is wrong with the message, if anything.
func (msg slackMessage) ids(body []byte) (ids []string, what, problem string) {
	meta := msg.Metadata.EventPayload.IDs
	if msg.Metadata.EventType != slackMetadataType || len(meta) == 0 {
		return nil, "", fmt.Sprintf("no event ids in the message's metadata (event_type %q)", msg.Metadata.EventType)
	}
	if m := slackEventID.FindSubmatch(body); m != nil {
		if len(meta) != 1 || meta[0] != string(m[1]) {
			return nil, "", fmt.Sprintf("the context line names event %s, the metadata %v", m[1], meta)
		}
		kind := "lead"
		if strings.Contains(msg.Text, "appointment") {
			kind = "appointment"
		}
		return meta, kind + "|" + string(m[2]), ""
	}
	var listed []string
	last := msg.Blocks[len(msg.Blocks)-1]
	if m := slackDigestIDs.FindSubmatch(last); m != nil {
		listed = slackHexID.FindAllString(string(last), -1)
	}
	if strings.Join(listed, ",") != strings.Join(meta, ",") {
		return nil, "", fmt.Sprintf("the digest's context line lists %d ids, its metadata %d, not the same", len(listed), len(meta))
	}
	return meta, "", ""
}

// ServeHTTP answers one message.
func (s *slackStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if r.URL.Path != s.path {
		s.problem("slack: message posted to the wrong path")
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var msg slackMessage
	if err := json.Unmarshal(body, &msg); err != nil || len(msg.Blocks) == 0 {
		s.problem("slack: message is not Block Kit JSON: %v", err)
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	ids, what, problem := msg.ids(body)
	if problem != "" {
		s.problem("slack: %s", problem)
		http.Error(w, "invalid_blocks", http.StatusBadRequest)
		return
	}
	attempt := s.begin(ids...)
	a := pickAnswer(s.seed, "sales", ids[0], attempt, s.pct, []answer{answer429, answer500})
	if a != answerOK {
		s.fault(a)
	}
	switch a {
	case answer429:
		w.Header().Set("Retry-After", "1")
		http.Error(w, "rate_limited", http.StatusTooManyRequests)
	case answer500:
		http.Error(w, "internal_error", http.StatusInternalServerError)
	default:
		for _, id := range ids {
			s.took(id, what)
		}
		if what != "" {
			s.singles.Add(1)
		} else {
			s.digests.Add(1)
		}
		_, _ = w.Write([]byte("ok"))
	}
}
