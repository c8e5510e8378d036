package poller

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

var mainSite = event.Chatbot{Serial: "3254a9d0424c4806b9ea3d0763ccf000", Name: "Main site"}

func TestNewClientDefaults(t *testing.T) {
	c := NewClient("https://app.neoagent.co/", testKey, 0)
	assert.Equal(t, "https://app.neoagent.co", c.BaseURL)
	assert.Equal(t, DefaultTimeout, c.HTTPClient.Timeout)
	assert.Equal(t, int64(64<<20), c.MaxBodyBytes)
	assert.Regexp(t, `^leadbridge/\S+$`, c.UserAgent)
	// net/http's own transport: a call's timeout then costs no goroutine of its own.
	assert.IsType(t, &http.Transport{}, c.HTTPClient.Transport)

	assert.Equal(t, 5*time.Second, NewClient("https://x", testKey, 5*time.Second).HTTPClient.Timeout)
}

func TestListDocExample(t *testing.T) {
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial, reply{body: docExample})

	w := Window{Start: date(2023, 11, 20), End: date(2023, 11, 25)}
	page, err := srv.client(time.Second).List(context.Background(), mainSite, w)
	require.NoError(t, err)
	require.Empty(t, page.Skipped)
	require.Equal(t, []event.Lead{
		{
			Chatbot: mainSite.Serial, ChatbotName: "Main site", Kind: event.KindLead,
			Name: "test", Email: "test@qq.com", Phone: "", Content: "test",
			SessionID: 31305, URI: "www.xxx.com", Count: 2,
			CreatedAt: time.Date(2023, 11, 24, 2, 36, 21, 512302000, time.UTC),
		},
		{
			Chatbot: mainSite.Serial, ChatbotName: "Main site", Kind: event.KindAppointment,
			Name: "test444", Email: "test444@qq.com", Phone: "", Content: "Please share anything",
			SessionID: 31313, URI: "www.xxx.com", Count: 2,
			CreatedAt: time.Date(2023, 11, 22, 3, 13, 44, 54019000, time.UTC),
		},
	}, page.Leads)
	for _, l := range page.Leads {
		assert.Same(t, time.UTC, l.CreatedAt.Location())
	}

	hits := srv.hitsFor(mainSite.Serial)
	require.Len(t, hits, 1)
	assert.Equal(t, "2023-11-20", hits[0].start)
	assert.Equal(t, "2023-11-25", hits[0].end)
}

func TestListWindowDates(t *testing.T) {
	pst := time.FixedZone("PST", -8*3600)
	cases := []struct {
		name       string
		w          Window
		start, end string
	}{
		{"zero window omits both dates", Window{}, "", ""},
		{"zero end omits endTime", Window{Start: date(2025, 1, 1)}, "2025-01-01", ""},
		{"dates are UTC days", Window{
			Start: time.Date(2025, 1, 1, 20, 0, 0, 0, pst), // 2025-01-02 04:00 UTC
			End:   time.Date(2025, 2, 1, 10, 0, 0, 0, pst),
		}, "2025-01-02", "2025-02-01"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLeadListServer(t)
			_, err := srv.client(time.Second).List(context.Background(), mainSite, tc.w)
			require.NoError(t, err)
			hits := srv.hitsFor(mainSite.Serial)
			require.Len(t, hits, 1)
			assert.Equal(t, tc.start, hits[0].start)
			assert.Equal(t, tc.end, hits[0].end)
		})
	}
}

func TestListTolerantDecoding(t *testing.T) {
	created := time.Date(2023, 11, 24, 2, 36, 21, 512302000, time.UTC)
	full := event.Lead{
		Chatbot: mainSite.Serial, ChatbotName: mainSite.Name, Kind: event.KindLead,
		Name: "test", Email: "test@qq.com", Phone: "+1 555 0100", Content: "hi",
		SessionID: 31305, URI: "www.xxx.com", Count: 2, CreatedAt: created,
	}
	bare := event.Lead{Chatbot: mainSite.Serial, ChatbotName: mainSite.Name, Kind: event.KindLead, CreatedAt: created}
	at := func(l event.Lead, t time.Time) event.Lead { l.CreatedAt = t; return l }
	const rest = `"Name":"test","Email":"test@qq.com","PhoneNumber":"+1 555 0100","Content":"hi","URI":"www.xxx.com"`

	cases := []struct {
		name   string
		record string
		want   event.Lead
	}{
		{"all fields", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-23T18:36:21.512302-08:00","SessionID":31305,"Count":2}`, full},
		{"null fields", `{"Type":"Lead","Name":null,"Email":null,"PhoneNumber":null,"Content":null,"URI":null,
			"CreateTime":"2023-11-23T18:36:21.512302-08:00","SessionID":null,"Count":null}`, bare},
		{"missing fields", `{"Type":"Lead","CreateTime":"2023-11-23T18:36:21.512302-08:00"}`, bare},
		{"unknown extra fields", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-23T18:36:21.512302-08:00",
			"SessionID":31305,"Count":2,"Tags":["a",{"b":1}],"Score":3.5,"Visitor":{"ip":"10.0.0.1"},"Extra":null}`, full},
		{"offset Z", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-24T02:36:21.512302Z","SessionID":31305,"Count":2}`, full},
		{"offset +05:30", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-24T08:06:21.512302+05:30","SessionID":31305,"Count":2}`, full},
		{"offset without colon", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-23T18:36:21.512302-0800","SessionID":31305,"Count":2}`, full},
		{"no fraction", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-23T18:36:21-08:00","SessionID":31305,"Count":2}`,
			at(full, created.Truncate(time.Second))},
		{"space separated, read as UTC", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-24 02:36:21","SessionID":31305,"Count":2}`,
			at(full, created.Truncate(time.Second))},
		{"space separated with fraction", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-24 02:36:21.512302","SessionID":31305,"Count":2}`, full},
		{"numbers as strings", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-23T18:36:21.512302-08:00","SessionID":"31305","Count":" 2 "}`, full},
		{"empty numeric strings", `{"Type":"Lead","CreateTime":"2023-11-23T18:36:21.512302-08:00","SessionID":"","Count":""}`, bare},
		{"integral float", `{"Type":"Lead",` + rest + `,"CreateTime":"2023-11-23T18:36:21.512302-08:00","SessionID":31305.0,"Count":2e0}`, full},
		{"lower-case keys and Type", `{"type":"lead","name":"test","email":"test@qq.com","phoneNumber":"+1 555 0100","content":"hi",
			"uri":"www.xxx.com","createTime":"2023-11-23T18:36:21.512302-08:00","sessionID":31305,"count":2}`, full},
	}
	srv := newLeadListServer(t)
	c := srv.client(time.Second)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.script(mainSite.Serial, reply{body: okBody(tc.record)})
			page, err := c.List(context.Background(), mainSite, Window{})
			require.NoError(t, err)
			require.Empty(t, page.Skipped)
			require.Len(t, page.Leads, 1)
			assert.Equal(t, tc.want, page.Leads[0])
			assert.Same(t, time.UTC, page.Leads[0].CreatedAt.Location())
		})
	}
}

func TestListEmptyData(t *testing.T) {
	srv := newLeadListServer(t)
	c := srv.client(time.Second)
	for _, body := range []string{
		`{"Data":[],"Success":true,"Code":200}`,
		`{"Data":[],"Success":true,"Code":"204"}`,
		`{"Data":[],"Success":true,"Code":null}`,
		`{"Data":[],"Success":true,"Code":""}`,
		`{"Data":[]}`,
	} {
		srv.script(mainSite.Serial, reply{body: body})
		page, err := c.List(context.Background(), mainSite, Window{})
		require.NoError(t, err, body)
		assert.Empty(t, page.Leads, body)
		assert.Empty(t, page.Skipped, body)
	}
}

func TestListSkipsMalformedRecords(t *testing.T) {
	// Personal data sits in every bad record; no skip reason may repeat it.
	const who = `"Name":"Jane Roe","Email":"jane@example.com","PhoneNumber":"+1 555 0199","Content":"call me at home"`
	records := []string{
		0:  `{"Type":"Lead",` + who + `,"CreateTime":"2023-11-23T18:36:21-08:00","SessionID":1}`,
		1:  `{"Type":"Ticket",` + who + `,"CreateTime":"2023-11-23T18:36:21-08:00","SessionID":2}`,
		2:  `{"Type":"Appointment",` + who + `,"CreateTime":"2023-11-23T18:36:22-08:00","SessionID":3}`,
		3:  `{"Type":"Lead",` + who + `,"SessionID":4}`,
		4:  `{"Type":"Lead",` + who + `,"CreateTime":"Jane Roe's birthday","SessionID":5}`,
		5:  `{"Type":"Lead","Name":{"first":"Jane Roe"},"CreateTime":"2023-11-23T18:36:21-08:00","SessionID":6}`,
		6:  `{"Type":"Lead",` + who + `,"CreateTime":"2023-11-23T18:36:21-08:00","SessionID":"jane@example.com"}`,
		7:  `"Jane Roe, jane@example.com"`,
		8:  `null`,
		9:  `{"Type":"Lead",` + who + `,"CreateTime":"2023-11-23T18:36:21-08:00","SessionID":7,"Count":true}`,
		10: `{"Type":"Lead",` + who + `,"CreateTime":"0001-01-01T00:00:00Z","SessionID":8}`,
		11: `{"Type":"Lead",` + who + `,"CreateTime":"2023-11-23T18:36:23-08:00","SessionID":9}`,
	}
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial, reply{body: okBody(records...)})
	page, err := srv.client(time.Second).List(context.Background(), mainSite, Window{})
	require.NoError(t, err)

	var sessions []int64
	for _, l := range page.Leads {
		sessions = append(sessions, l.SessionID)
	}
	assert.Equal(t, []int64{1, 3, 6, 7, 9}, sessions, "a bad Name or Count costs that field, not the record")

	wantReasons := map[int]string{
		1:  "field Type: unknown record Type",
		3:  "field CreateTime: missing",
		4:  "field CreateTime: not a recognised timestamp",
		6:  "field SessionID: want an integer",
		7:  "record is a JSON string",
		8:  "record is null",
		10: "field CreateTime: zero time",
	}
	require.Len(t, page.Skipped, len(wantReasons))
	for _, s := range page.Skipped {
		want, ok := wantReasons[s.Index]
		require.True(t, ok, "record %d should not be skipped: %v", s.Index, s.Err)
		assert.ErrorContains(t, s, want)
		for _, personal := range []string{"Jane", "Roe", "jane@example.com", "555", "call me"} {
			assert.NotContains(t, s.Error(), personal)
		}
	}
	require.Len(t, page.Warned, 2)
	assert.Equal(t, []int{5, 9}, []int{page.Warned[0].Index, page.Warned[1].Index})
	assert.Equal(t, "Name", page.Warned[0].Field)
	assert.ErrorContains(t, page.Warned[0], "field Name: got a JSON object, want a string; left empty")
	assert.Equal(t, "Count", page.Warned[1].Field)
	assert.ErrorContains(t, page.Warned[1], "field Count: want an integer or a numeric string; taken as 0")
	for _, w := range page.Warned {
		for _, personal := range []string{"Jane", "Roe", "jane@example.com", "555", "call me"} {
			assert.NotContains(t, w.Error(), personal)
		}
	}
	assert.Empty(t, page.Leads[2].Name)
	assert.Zero(t, page.Leads[3].Count)
	assert.Equal(t, "jane@example.com", page.Leads[3].Email, "the other fields are kept")
}

func TestListErrors(t *testing.T) {
	const password = "lb-pass-s3cret"
	retryDate := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	big := make([]string, 50)
	for i := range big {
		big[i] = fmt.Sprintf(`{"Type":"Lead","CreateTime":"2023-11-23T18:36:21-08:00","SessionID":%d}`, i)
	}

	cases := []struct {
		name    string
		reply   reply
		timeout time.Duration
		maxBody int64
		check   func(t *testing.T, err error)
	}{
		{
			name:  "500",
			reply: reply{status: 500, body: "internal error while checking " + testKey},
			check: func(t *testing.T, err error) {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, 500, se.Code)
				assert.Zero(t, se.RetryAfter)
				assert.Contains(t, err.Error(), "HTTP 500")
				assert.NotContains(t, err.Error(), "internal error", "no text of the body")
			},
		},
		{
			name:  "429 with Retry-After seconds",
			reply: reply{status: 429, header: map[string]string{"Retry-After": "7"}, body: `{"Message":"slow down"}`},
			check: func(t *testing.T, err error) {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, 429, se.Code)
				assert.Equal(t, 7*time.Second, se.RetryAfter)
			},
		},
		{
			name:  "503 with Retry-After HTTP date",
			reply: reply{status: 503, header: map[string]string{"Retry-After": retryDate}},
			check: func(t *testing.T, err error) {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, 503, se.Code)
				assert.Greater(t, se.RetryAfter, 20*time.Second)
				assert.LessOrEqual(t, se.RetryAfter, 30*time.Second)
			},
		},
		{
			name:  "401 echoing the key",
			reply: reply{status: 401, body: `{"Success":false,"Code":401,"Message":"key ` + testKey + ` is not valid"}`},
			check: func(t *testing.T, err error) {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				assert.Equal(t, 401, se.Code)
				assert.Equal(t, 401, se.APICode)
				assert.Contains(t, err.Error(), "HTTP 401 from")
				assert.Contains(t, err.Error(), "(API code 401)")
				assert.NotContains(t, err.Error(), "not valid")
			},
		},
		{
			name:  "Success false",
			reply: reply{body: `{"Data":null,"Version":"1.0.0","Success":false,"Code":401,"Message":"Authorization ` + testKey + ` is invalid"}`},
			check: func(t *testing.T, err error) {
				var ae *APIError
				require.ErrorAs(t, err, &ae)
				assert.Equal(t, 401, ae.Code)
				assert.Empty(t, ae.Message, "free text is dropped")
			},
		},
		{
			name:  "Success false with string code",
			reply: reply{body: `{"Success":false,"Code":"500","Message":"serial_not_found"}`},
			check: func(t *testing.T, err error) {
				var ae *APIError
				require.ErrorAs(t, err, &ae)
				assert.Equal(t, 500, ae.Code)
				assert.Equal(t, "serial_not_found", ae.Message, "a plain error code is kept")
				assert.ErrorContains(t, err, "code 500: serial_not_found")
			},
		},
		{
			name:  "malformed JSON",
			reply: reply{body: `{"Data":[{"Type":"Lead","Name":"Jane Roe","Email":"jane@exa`},
			check: func(t *testing.T, err error) {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, "JSON", de.Shape)
				assert.NotContains(t, err.Error(), "Jane")
			},
		},
		{
			name: "HTML page",
			reply: reply{
				header: map[string]string{"Content-Type": "text/html"},
				body:   "<html><head><title>502 Bad Gateway</title></head><body>upstream for " + testKey + " is down</body></html>",
			},
			check: func(t *testing.T, err error) {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, "HTML", de.Shape)
				assert.Equal(t, len("<html><head><title>502 Bad Gateway</title></head><body>upstream for "+testKey+" is down</body></html>"), de.Size)
				assert.ErrorContains(t, err, fmt.Sprintf("(HTML, %d bytes)", de.Size))
				assert.NotContains(t, err.Error(), "Bad Gateway")
			},
		},
		{
			name:  "HTML with the key after a long start",
			reply: reply{body: strings.Repeat("\n", 10) + "<p>" + strings.Repeat("x", 111) + testKey + "</p>"},
			check: func(t *testing.T, err error) {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.NotContains(t, err.Error(), testKey[:5], "no fragment of the key either")
			},
		},
		{
			name:  "500 with the key across the snippet's end",
			reply: reply{status: 500, body: strings.Repeat(" ", 10) + strings.Repeat("x", 194) + testKey},
			check: func(t *testing.T, err error) {
				var se *StatusError
				require.ErrorAs(t, err, &se)
				assert.NotContains(t, err.Error(), testKey[:5], "no fragment of the key either")
			},
		},
		{
			name:  "JSON that is not a LeadList response",
			reply: reply{body: `{"error":"route not found"}`},
			check: func(t *testing.T, err error) {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.ErrorContains(t, err, "not a LeadList response")
			},
		},
		{
			name:    "slower than the timeout",
			reply:   reply{delay: 5 * time.Second, body: docExample},
			timeout: 100 * time.Millisecond,
			check: func(t *testing.T, err error) {
				var te *TransportError
				require.ErrorAs(t, err, &te)
				var ne net.Error
				require.ErrorAs(t, err, &ne)
				assert.True(t, ne.Timeout())
			},
		},
		{
			name:    "body stalls past the timeout",
			reply:   reply{stall: 5 * time.Second, body: docExample},
			timeout: 200 * time.Millisecond,
			check: func(t *testing.T, err error) {
				var te *TransportError
				require.ErrorAs(t, err, &te)
			},
		},
		{
			name:    "oversize body",
			reply:   reply{body: okBody(big...)},
			maxBody: 1024,
			check: func(t *testing.T, err error) {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.ErrorIs(t, err, ErrBodyTooLarge)
			},
		},
		{
			name:    "oversize body announced by Content-Length",
			reply:   reply{header: map[string]string{"Content-Length": strconv.Itoa(len(okBody(big...)))}, body: okBody(big...)},
			maxBody: 1024,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, ErrBodyTooLarge)
			},
		},
	}
	srv := newLeadListServer(t)
	credURL := strings.Replace(srv.URL(), "http://", "http://lb-user:"+password+"@", 1)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv.script(mainSite.Serial, tc.reply)
			c := NewClient(credURL, testKey, cmp.Or(tc.timeout, time.Second))
			if tc.maxBody > 0 {
				c.MaxBodyBytes = tc.maxBody
			}
			page, err := c.List(context.Background(), mainSite, Window{})
			require.Error(t, err)
			assert.Empty(t, page.Leads)
			t.Log(err)
			tc.check(t, err)
			assertSafeError(t, err, password)
			if !errors.As(err, new(*APIError)) {
				assert.Contains(t, err.Error(), "http://"+srv.srv.Listener.Addr().String()+"/[redacted]")
			}
		})
	}
}

func TestListUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())

	c := NewClient("http://user:pw-secret@"+addr, testKey, time.Second)
	_, err = c.List(context.Background(), mainSite, Window{})
	var te *TransportError
	require.ErrorAs(t, err, &te)
	assertSafeError(t, err, "pw-secret")
}

func TestListCancelled(t *testing.T) {
	srv := newLeadListServer(t)
	srv.script(mainSite.Serial, reply{delay: 5 * time.Second, body: docExample})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := srv.client(10*time.Second).List(ctx, mainSite, Window{})
	var te *TransportError
	require.ErrorAs(t, err, &te)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assertSafeError(t, err, testKey)
}

// assertSafeError checks err names the chatbot and leaks neither the key nor secret.
func assertSafeError(t *testing.T, err error, secret string) {
	t.Helper()
	msg := err.Error()
	assert.Contains(t, msg, mainSite.Serial, "the error names the chatbot")
	assert.NotContains(t, msg, testKey, "the API key leaked into the error")
	assert.NotContains(t, msg, secret, "a URL credential leaked into the error")
}

func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// A hostile or broken LeadList host puts people's data, the key, or things that contain
// the key into its answers; none of it may reach an error, which ends up in logs, in
// `leadbridge status` and in the unauthenticated /readyz. Only status codes, numeric API
// codes and messages that are plain error codes are kept.
func TestListErrorsCarryNoBodyText(t *testing.T) {
	const leak = "Jane Roe jane@example.com +1 555 0100"
	for _, tc := range []struct {
		name  string
		reply reply
		keep  string   // what the error must still say
		never []string // what it must not
	}{
		{"500 text", reply{status: 500, body: "internal error for " + leak}, "HTTP 500", []string{"internal error", "Jane"}},
		{"400 one word", reply{status: 400, body: "5551234567"}, "HTTP 400", []string{"5551234567"}},
		{"401 JSON envelope", reply{status: 401, body: `{"Success":false,"Code":401,"Message":"no such key ` + testKey + `x"}`},
			"HTTP 401 from", []string{"no such key", testKey[:8]}},
		{"a message holding a key that contains the API key", reply{body: `{"Success":false,"Code":403,"Message":"x` + testKey + `y"}`},
			"code 403", []string{testKey[:8], "x[redacted]y", "y\""}},
		{"a message that is a phone number", reply{body: `{"Success":false,"Code":400,"Message":"5551234567"}`},
			"code 400", []string{"5551234567"}},
		{"a message that is personal data", reply{body: `{"Success":false,"Code":400,"Message":"` + leak + `"}`},
			"code 400", []string{"Jane", "jane@"}},
		{"a message that is a fragment of the key", reply{body: `{"Success":false,"Code":401,"Message":"` + testKey[3:15] + `"}`},
			"code 401", []string{testKey[3:15]}},
		{"HTML page", reply{header: map[string]string{"Content-Type": "text/html"},
			body: "<html><title>502 Bad Gateway</title><body>" + leak + "</body></html>"},
			"HTML", []string{"Bad Gateway", "Jane", "<html>"}},
		{"plain text", reply{body: "upstream said " + leak}, "text", []string{"upstream", "Jane"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newLeadListServer(t)
			srv.script(mainSite.Serial, tc.reply)
			_, err := srv.client(time.Second).List(context.Background(), mainSite, Window{})
			require.Error(t, err)
			t.Log(err)
			assert.Contains(t, err.Error(), tc.keep)
			for _, s := range tc.never {
				assert.NotContains(t, err.Error(), s)
			}
			assertSafeError(t, err, testKey)
		})
	}
}

// The API is told who calls it: leadbridge and its version.
func TestListUserAgent(t *testing.T) {
	got := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r.Header.Get("User-Agent")
		_, _ = io.WriteString(w, docExample)
	}))
	t.Cleanup(srv.Close)
	_, err := NewClient(srv.URL, testKey, time.Second).List(context.Background(), mainSite, Window{})
	require.NoError(t, err)
	assert.Regexp(t, `^leadbridge/\S+$`, <-got)
}

// A redirect is a failed poll naming its status: the key and the request go nowhere else.
func TestListFollowsNoRedirect(t *testing.T) {
	var elsewhere atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		elsewhere.Add(1)
		_, _ = io.WriteString(w, docExample)
	}))
	t.Cleanup(other.Close)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	_, err := NewClient(srv.URL, testKey, time.Second).List(context.Background(), mainSite, Window{})
	var se *StatusError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, http.StatusTemporaryRedirect, se.Code)
	assert.Zero(t, elsewhere.Load(), "the redirect was not followed")
}

// The request body is what encoding/json makes of the request, whatever the serial
// holds and wherever the window's ends lie.
func TestRequestBodyIsEncodingJSONs(t *testing.T) {
	type listRequest struct {
		SerialNumber string `json:"serialNumber"`
		StartTime    string `json:"startTime,omitempty"`
		EndTime      string `json:"endTime,omitempty"`
	}
	day := func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.UTC().Format(time.DateOnly)
	}
	east := time.FixedZone("east", 14*3600)
	windows := []Window{
		{},
		{Start: date(2023, 11, 20)},
		{Start: date(2023, 11, 20), End: date(2023, 11, 25)},
		{Start: time.Date(2023, 11, 20, 5, 0, 0, 0, east), End: time.Date(2024, 1, 1, 0, 30, 0, 0, east)},
		{End: date(2023, 11, 25)},
	}
	for _, serial := range []string{mainSite.Serial, "", `a"b\c`, "<script>&", "tab\there\n", "é\u2028\u2029", "\xff\xfe"} {
		for _, w := range windows {
			want, err := json.Marshal(listRequest{SerialNumber: serial, StartTime: day(w.Start), EndTime: day(w.End)})
			require.NoError(t, err)
			assert.Equal(t, string(want), string(requestBody(serial, w)), "serial %q, window %v", serial, w)
		}
	}
}

// A call's timeout bounds the call, not its wait for a turn of the account's Budget: an
// account whose chatbots need more calls than max_rps queues them for longer than the
// timeout, and each must still be made. (Found by review: the timeout was once set
// before the wait, and every call queued beyond it failed.)
func TestTimeoutCountsFromTheCallNotTheBudgetWait(t *testing.T) {
	srv := newLeadListServer(t)
	srv.setRecords("SN-Q", docLead)
	c := srv.client(700 * time.Millisecond)
	c.Budget = NewBudget(0.5) // a turn every 2s
	c.Budget.reserve(time.Now())
	page, err := c.List(t.Context(), event.Chatbot{Serial: "SN-Q"}, Window{})
	require.NoError(t, err, "the call waited 2s for its turn, beyond its 700ms timeout, and then had its 700ms")
	assert.Len(t, page.Leads, 1)
}
