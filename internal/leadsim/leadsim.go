// Package leadsim is a simulated LeadList API: an http.Handler that answers
// POST /chat/Chatbot/LeadList the way the real platform does (every record of the date
// window on every call, CreateTime with a -08:00 offset, business errors inside HTTP 200),
// with faults that can be injected, and hostile answers a compatible host might give
// (hand-made envelopes, rows its date filter lets through). The demo and the end-to-end
// tests poll it.
package leadsim

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Path is where the LeadList endpoint lives.
const Path = "/chat/Chatbot/LeadList"

// Record is one row of the API's Data array, spelled as the API spells it.
type Record struct {
	Type        string `json:"Type"`
	Name        string `json:"Name"`
	Email       string `json:"Email"`
	PhoneNumber string `json:"PhoneNumber"`
	CreateTime  string `json:"CreateTime"`
	Content     string `json:"Content"`
	SessionID   int64  `json:"SessionID"`
	URI         string `json:"URI"`
	Count       int    `json:"Count"`
}

// Fault changes how the server answers one request.
type Fault struct {
	Status     int           // non-zero: answer with this HTTP status
	RetryAfter string        // Retry-After header value for Status
	APIError   string        // non-empty: HTTP 200 with Success:false and this Message
	Malformed  bool          // a body that is not JSON
	Delay      time.Duration // wait before answering (or until the client gives up)
	BadRecord  bool          // put one malformed record among the good ones
	// Body, when non-empty, is answered as it is with HTTP 200: an envelope the platform
	// should not send, e.g. {"Success":true,"Code":500,"Data":null}.
	Body string
}

// Server is the simulated API. Its methods are safe for concurrent use.
type Server struct {
	key      string
	offset   *time.Location
	mu       sync.Mutex
	records  map[string][]Record // by serial
	raw      map[string][]json.RawMessage
	faults   []Fault
	botFault map[string][]Fault // by serial, answered before faults
	requests int
	perBot   map[string]int // requests by the serial they named
	nextSess int64
	rng      *rand.Rand
}

// New returns a server that accepts only requests carrying apiKey.
func New(apiKey string) *Server {
	return &Server{
		key:      apiKey,
		offset:   time.FixedZone("PST", -8*3600),
		records:  make(map[string][]Record),
		raw:      make(map[string][]json.RawMessage),
		botFault: make(map[string][]Fault),
		perBot:   make(map[string]int),
		nextSess: 31000,
		rng:      rand.New(rand.NewPCG(1, 2)),
	}
}

// Add stores a record for a chatbot; it is returned by every later request whose
// window covers its date.
func (s *Server) Add(serial string, r Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[serial] = append(s.records[serial], r)
}

// AddRaw stores a Data row for a chatbot exactly as given (it need not be a valid
// record). It is returned by every later request for that chatbot whatever window or
// session the request asked for, as a host does whose filter lets a row through: a date
// it cannot place, a row older than anyone asked for.
func (s *Server) AddRaw(serial string, row json.RawMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw[serial] = append(s.raw[serial], row)
}

// Update changes the Count and Content of an existing record, as the platform does when
// a conversation goes on. It reports whether the record was found.
func (s *Server) Update(serial string, sessionID int64, count int, content string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, r := range s.records[serial] {
		if r.SessionID == sessionID {
			s.records[serial][i].Count = count
			s.records[serial][i].Content = content
			return true
		}
	}
	return false
}

// Inject queues faults; each answers one request, in order.
func (s *Server) Inject(f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, f...)
}

// InjectFor queues faults for one chatbot; each answers one request naming that serial,
// in order, before any fault queued by Inject.
func (s *Server) InjectFor(serial string, f ...Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.botFault[serial] = append(s.botFault[serial], f...)
}

// RequestsFor counts the requests served so far whose body named serial.
func (s *Server) RequestsFor(serial string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.perBot[serial]
}

// Requests counts the requests served so far.
func (s *Server) Requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests
}

var (
	firstNames = []string{"Ada", "Grace", "Linus", "Margaret", "Alan", "Barbara", "Ken", "Radia", "Dennis", "Frances"}
	lastNames  = []string{"Lovelace", "Hopper", "Torvalds", "Hamilton", "Turing", "Liskov", "Thompson", "Perlman", "Ritchie", "Allen"}
	asks       = []string{
		"Do you ship to Canada?",
		"I'd like a quote for 20 seats.",
		"Can someone call me back tomorrow morning?",
		"Please share anything about pricing.",
		"Is the Tuesday 3pm slot still free?",
		"We need an onboarding session for the team.",
	}
)

// Generate adds a plausible new lead or appointment created at the given time and
// returns it.
func (s *Server) Generate(serial string, at time.Time) Record {
	s.mu.Lock()
	s.nextSess++
	r := Sample(s.rng.IntN(1<<30), s.nextSess, at.In(s.offset))
	s.mu.Unlock()
	s.Add(serial, r)
	return r
}

// Sample is a plausible lead or appointment, picked by n (the same n, the same person,
// kind, phone and question), with the given session, created at at in at's zone. Its
// email names n, so that distinct n give distinct people.
func Sample(n int, session int64, at time.Time) Record {
	first, last := firstNames[n%len(firstNames)], lastNames[(n/len(firstNames))%len(lastNames)]
	kind := "Lead"
	if n%3 == 0 {
		kind = "Appointment"
	}
	phone := ""
	if n%2 == 0 {
		phone = fmt.Sprintf("+1 555 %04d", n%10000)
	}
	return Record{
		Type:        kind,
		Name:        first + " " + last,
		Email:       fmt.Sprintf("%s.%s.%d@example.com", lower(first), lower(last), n),
		PhoneNumber: phone,
		CreateTime:  at.Format("2006-01-02T15:04:05.000000-07:00"),
		Content:     asks[n%len(asks)],
		SessionID:   session,
		URI:         "www.example.com/pricing",
		Count:       1 + n%4,
	}
}

// GenerateEvery adds a new record (Generate) to one of serials, picked at random, every
// period until ctx is done, as visitors chat. serials must not be empty, nor period 0.
func (s *Server) GenerateEvery(ctx context.Context, period time.Duration, serials ...string) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.Generate(serials[rand.IntN(len(serials))], now)
		}
	}
}

func lower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

type request struct {
	SerialNumber string `json:"serialNumber"`
	StartTime    string `json:"startTime"`
	EndTime      string `json:"endTime"`
	SessionID    int64  `json:"sessionID"`
}

type response struct {
	Data    []any  `json:"Data"`
	Version string `json:"Version"`
	Success bool   `json:"Success"`
	Code    int    `json:"Code"`
	Message string `json:"Message"`
}

// ServeHTTP answers the LeadList endpoint.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var req request
	reqErr := json.NewDecoder(r.Body).Decode(&req)
	s.mu.Lock()
	s.requests++
	var fault Fault
	if req.SerialNumber != "" {
		s.perBot[req.SerialNumber]++
	}
	if q := s.botFault[req.SerialNumber]; req.SerialNumber != "" && len(q) > 0 {
		fault, s.botFault[req.SerialNumber] = q[0], q[1:]
	} else if len(s.faults) > 0 {
		fault = s.faults[0]
		s.faults = s.faults[1:]
	}
	s.mu.Unlock()

	if fault.Delay > 0 {
		select {
		case <-time.After(fault.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if fault.Status != 0 {
		if fault.RetryAfter != "" {
			w.Header().Set("Retry-After", fault.RetryAfter)
		}
		http.Error(w, http.StatusText(fault.Status), fault.Status)
		return
	}
	if fault.Malformed {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"Data":[{"Type":"Lead",`))
		return
	}
	if fault.Body != "" {
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_, _ = w.Write([]byte(fault.Body))
		return
	}
	if fault.APIError != "" {
		writeJSON(w, response{Version: "1.0.0", Code: 500, Message: fault.APIError})
		return
	}
	if r.Header.Get("Authorization") != s.key {
		writeJSON(w, response{Version: "1.0.0", Code: 401, Message: "invalid secret key"})
		return
	}
	if reqErr != nil || req.SerialNumber == "" {
		writeJSON(w, response{Version: "1.0.0", Code: 400, Message: "serialNumber is required"})
		return
	}
	from, _ := time.Parse(time.DateOnly, req.StartTime)
	until, uerr := time.Parse(time.DateOnly, req.EndTime)
	s.mu.Lock()
	data := make([]any, 0, len(s.records[req.SerialNumber]))
	for _, rec := range s.records[req.SerialNumber] {
		created, err := time.Parse(time.RFC3339Nano, rec.CreateTime)
		if err != nil {
			continue
		}
		day := created.UTC().Truncate(24 * time.Hour)
		if day.Before(from) || (uerr == nil && day.After(until)) {
			continue
		}
		if req.SessionID != 0 && rec.SessionID != req.SessionID {
			continue
		}
		data = append(data, rec)
	}
	for _, row := range s.raw[req.SerialNumber] {
		data = append(data, row)
	}
	s.mu.Unlock()
	if fault.BadRecord {
		data = append(data, map[string]any{"Type": "Lead", "CreateTime": "yesterday-ish", "SessionID": "x" + strconv.Itoa(len(data))})
	}
	writeJSON(w, response{Data: data, Version: "1.0.0", Success: true, Code: 200})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}
