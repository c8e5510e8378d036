package leadtest

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// SlackPath is the incoming-webhook path a Slack stand-in serves; its last part plays
// the secret that must never show in logs.
const SlackPath = "/services/T000/B000/SLACKSECRET"

// Slack is a Slack incoming-webhook stand-in that keeps every message posted to
// SlackPath and answers "ok"; another path gets 404 no_service and a body that is not
// JSON 400 invalid_payload, as Slack answers them.
type Slack struct {
	srv *httptest.Server

	mu   sync.Mutex
	msgs []map[string]any
}

// NewSlack starts a Slack stand-in that stops when the test ends.
func NewSlack(t testing.TB) *Slack {
	s := &Slack{}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *Slack) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != SlackPath {
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.mu.Unlock()
	_, _ = w.Write([]byte("ok"))
}

// URL is the incoming-webhook URL, secret included.
func (s *Slack) URL() string { return s.srv.URL + SlackPath }

// Messages is every message kept so far, in arrival order.
func (s *Slack) Messages() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]map[string]any(nil), s.msgs...)
}
