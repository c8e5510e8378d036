package poller

import (
	"encoding/json"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// testKey is the API key the fake LeadList server accepts. Tests check it never shows
// up in an error or a log line.
const testKey = "sk-live-7f3c9e2a1b5d4c6e8f0a"

// docExample is the response example of the API page.
const docExample = `{
  "Data": [
    {"Type": "Lead", "Name": "test", "Email": "test@qq.com", "PhoneNumber": "",
     "CreateTime": "2023-11-23T18:36:21.512302-08:00", "Content": "test",
     "SessionID": 31305, "URI": "www.xxx.com", "Count": 2},
    {"Type": "Appointment", "Name": "test444", "Email": "test444@qq.com", "PhoneNumber": "",
     "CreateTime": "2023-11-21T19:13:44.054019-08:00", "Content": "Please share anything",
     "SessionID": 31313, "URI": "www.xxx.com", "Count": 2}
  ],
  "Version": "1.0.0",
  "Success": true,
  "Code": 200,
  "Message": ""
}`

// reply is one scripted answer of the fake server.
type reply struct {
	status int               // 0 means 200
	header map[string]string // extra response headers
	body   string
	delay  time.Duration // wait before answering (cut short if the client goes away)
	stall  time.Duration // after the headers and half the body, wait this long for the rest
}

// hit is one request the fake server received.
type hit struct {
	serial     string
	start, end string // the window sent, "" when left out
	at         time.Time
}

// leadListServer is an httptest stand-in for the LeadList endpoint. It checks every
// request the way the real API needs it (method, path, raw key in Authorization, JSON
// content type, body shape) and answers, per chatbot serial, from a script of one-shot
// replies, then from a standing reply if one is set, else with the chatbot's records
// filtered by the window like the real API.
type leadListServer struct {
	t   *testing.T
	srv *httptest.Server

	mu          sync.Mutex
	records     map[string][]string // raw JSON records per serial
	scripts     map[string][]reply
	standing    map[string]reply
	hits        []hit
	inFlight    int
	maxInFlight int
}

func newLeadListServer(t *testing.T) *leadListServer {
	t.Helper()
	s := &leadListServer{
		t:        t,
		records:  map[string][]string{},
		scripts:  map[string][]reply{},
		standing: map[string]reply{},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

// URL is the server's base URL.
func (s *leadListServer) URL() string { return s.srv.URL }

// client returns a Client for the server with the test key.
func (s *leadListServer) client(timeout time.Duration) *Client {
	return NewClient(s.URL(), testKey, timeout)
}

// setRecords sets the raw JSON records served for serial.
func (s *leadListServer) setRecords(serial string, records ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[serial] = records
}

// script queues one-shot replies for serial.
func (s *leadListServer) script(serial string, replies ...reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.scripts[serial] = append(s.scripts[serial], replies...)
}

// always makes serial get r once its script is used up.
func (s *leadListServer) always(serial string, r reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.standing[serial] = r
}

// hitsFor returns the requests received for serial, oldest first.
func (s *leadListServer) hitsFor(serial string) []hit {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []hit
	for _, h := range s.hits {
		if h.serial == serial {
			out = append(out, h)
		}
	}
	return out
}

// peakConcurrency is the most requests the server handled at once.
func (s *leadListServer) peakConcurrency() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxInFlight
}

// okBody wraps raw JSON records in a successful LeadList envelope.
func okBody(records ...string) string {
	return `{"Data":[` + strings.Join(records, ",") + `],"Version":"1.0.0","Success":true,"Code":200,"Message":""}`
}

type leadListRequest struct {
	SerialNumber string  `json:"serialNumber"`
	StartTime    *string `json:"startTime"`
	EndTime      *string `json:"endTime"`
	SessionID    *int64  `json:"sessionID"`
}

func (s *leadListServer) serve(w http.ResponseWriter, r *http.Request) {
	t := s.t
	if r.Method != http.MethodPost {
		t.Errorf("LeadList: method %s, want POST", r.Method)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path != LeadListPath {
		t.Errorf("LeadList: path %q, want %q", r.URL.Path, LeadListPath)
		http.NotFound(w, r)
		return
	}
	if got := r.Header.Get("Authorization"); got != testKey {
		t.Errorf("LeadList: Authorization %q, want the raw key", got)
		writeJSON(w, http.StatusUnauthorized, `{"Data":null,"Success":false,"Code":401,"Message":"invalid key"}`)
		return
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		t.Errorf("LeadList: Content-Type %q, want application/json", r.Header.Get("Content-Type"))
		http.Error(w, "unsupported media type", http.StatusUnsupportedMediaType)
		return
	}
	var req leadListRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.SerialNumber == "" {
		t.Errorf("LeadList: bad body (%v): %+v", err, req)
		writeJSON(w, http.StatusBadRequest, `{"Success":false,"Code":400,"Message":"bad request"}`)
		return
	}
	start, end := dateParam(t, "startTime", req.StartTime), dateParam(t, "endTime", req.EndTime)

	s.mu.Lock()
	s.hits = append(s.hits, hit{serial: req.SerialNumber, start: start, end: end, at: time.Now()})
	s.inFlight++
	s.maxInFlight = max(s.maxInFlight, s.inFlight)
	var rep reply
	if q := s.scripts[req.SerialNumber]; len(q) > 0 {
		rep, s.scripts[req.SerialNumber] = q[0], q[1:]
	} else if st, ok := s.standing[req.SerialNumber]; ok {
		rep = st
	} else {
		rep.body = okBody(inWindow(s.records[req.SerialNumber], start, end)...)
	}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inFlight--
		s.mu.Unlock()
	}()

	if rep.delay > 0 {
		select {
		case <-time.After(rep.delay):
		case <-r.Context().Done():
			return
		}
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	status := rep.status
	if status == 0 {
		status = http.StatusOK
	}
	if w.Header().Get("Content-Type") == "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
	}
	w.WriteHeader(status)
	body := []byte(rep.body)
	if rep.stall > 0 {
		half := len(body) / 2
		_, _ = w.Write(body[:half])
		_ = http.NewResponseController(w).Flush()
		select {
		case <-time.After(rep.stall):
		case <-r.Context().Done():
			return
		}
		body = body[half:]
	}
	_, _ = w.Write(body)
}

// dateParam checks an optional YYYY-MM-DD filter date and returns it ("" when absent).
func dateParam(t *testing.T, name string, v *string) string {
	if v == nil {
		return ""
	}
	if _, err := time.Parse("2006-01-02", *v); err != nil {
		t.Errorf("LeadList: %s %q is not YYYY-MM-DD", name, *v)
	}
	return *v
}

// inWindow keeps the records whose CreateTime falls on a UTC day in [start, end], as the
// real API filters; a record without a readable CreateTime is kept (it is a fault the
// test wants served).
func inWindow(records []string, start, end string) []string {
	var out []string
	for _, raw := range records {
		var r struct{ CreateTime string }
		_ = json.Unmarshal([]byte(raw), &r)
		if ct, err := time.Parse(time.RFC3339Nano, r.CreateTime); err == nil {
			day := ct.UTC().Format("2006-01-02")
			if (start != "" && day < start) || (end != "" && day > end) {
				continue
			}
		}
		out = append(out, raw)
	}
	return out
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
