package leadtest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Sink is a webhook target that records the event of every request and answers as
// the test scripts it. A body that is not a CloudEvent whose id is the webhook-id header
// is refused with 400.
type Sink struct {
	URL string // the target's base URL

	// Answer, when set, is the status for request n (from 0) carrying event id; 204
	// otherwise. A 429 carries Retry-After: 1.
	Answer func(n int, id string) int

	mu       sync.Mutex
	received []event.Event // in arrival order, failed attempts included
	at       []time.Time   // arrival times
	block    chan struct{}
}

// NewSink starts a Sink that answers with answer (nil: always 204) and stops when the
// test ends.
func NewSink(t testing.TB, answer func(n int, id string) int) *Sink {
	s := &Sink{Answer: answer}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *Sink) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ev event.Event
	if err := json.Unmarshal(body, &ev); err != nil || ev.ID != r.Header.Get("webhook-id") {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	n := len(s.received)
	s.received = append(s.received, ev)
	s.at = append(s.at, time.Now())
	block, answer := s.block, s.Answer
	s.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	status := http.StatusNoContent
	if answer != nil {
		status = answer(n, ev.ID)
	}
	if status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	w.WriteHeader(status)
}

// AnswerAll makes every later request answer status (0: 204).
func (s *Sink) AnswerAll(status int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if status == 0 {
		s.Answer = nil
		return
	}
	s.Answer = func(int, string) int { return status }
}

// Hold makes requests wait, once recorded, until Release.
func (s *Sink) Hold() {
	s.mu.Lock()
	s.block = make(chan struct{})
	s.mu.Unlock()
}

// Release lets held requests answer, and later ones answer at once.
func (s *Sink) Release() {
	s.mu.Lock()
	if s.block != nil {
		close(s.block)
		s.block = nil
	}
	s.mu.Unlock()
}

// IDs is the event id of every request so far, in arrival order.
func (s *Sink) IDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]string, len(s.received))
	for i, ev := range s.received {
		ids[i] = ev.ID
	}
	return ids
}

// Events is the event of every request so far, in arrival order.
func (s *Sink) Events() []event.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]event.Event(nil), s.received...)
}

// Counts counts the requests of each event id in ids.
func Counts(ids []string) map[string]int {
	out := map[string]int{}
	for _, id := range ids {
		out[id]++
	}
	return out
}

// Times is the arrival time of every request so far.
func (s *Sink) Times() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.at...)
}

// Count is how many requests arrived.
func (s *Sink) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.received)
}
