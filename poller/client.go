// Package poller reads the LeadList API for each configured chatbot and hands what it
// reads to the dedupe store. Client makes one LeadList call and decodes it tolerantly;
// Loop polls every chatbot on its own schedule, backing off while one fails.
package poller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/httpx"
)

// LeadListPath is the endpoint's path under the base URL.
const LeadListPath = "/chat/Chatbot/LeadList"

// DefaultMaxBodyBytes bounds a LeadList response body unless Client.MaxBodyBytes says otherwise.
const DefaultMaxBodyBytes int64 = 64 << 20

// DefaultTimeout is the HTTP timeout NewClient uses when it is given none.
const DefaultTimeout = 30 * time.Second

// ErrBodyTooLarge is wrapped by the DecodeError of a response over Client.MaxBodyBytes.
var ErrBodyTooLarge = errors.New("response body too large")

const (
	dateLayout   = "2006-01-02" // the API's startTime/endTime: a UTC day
	errorBodyLen = 4 << 10      // read at most this much of a failed answer for its Code
	drainLimit   = 256 << 10    // read at most this much of an unwanted body to reuse the connection
)

// Client calls the LeadList endpoint of one NeoAgent (or white-label) host.
// Its exported fields are settings; NewClient sets their defaults. A Client is safe for
// concurrent use once configured.
type Client struct {
	// BaseURL is the host's base URL, e.g. https://app.neoagent.co.
	BaseURL string
	// HTTPClient makes the requests: its Transport (http.DefaultTransport if nil) sends
	// them and its Timeout bounds a whole call, body included. Its redirect policy and
	// cookie jar are not used: a call follows no redirect (a 3xx is a StatusError) and
	// sends no cookie.
	HTTPClient *http.Client
	// MaxBodyBytes bounds the response body; a larger one is a DecodeError (ErrBodyTooLarge).
	MaxBodyBytes int64
	// SpoolDir is where Stream keeps a response body while it reads it ("" for
	// os.TempDir()); it needs room for MaxBodyBytes.
	SpoolDir string
	// UserAgent is sent as the User-Agent header; NewClient sets httpx.UserAgent(),
	// "leadbridge/<version>".
	UserAgent string
	// Budget paces the calls of the account this Client speaks for, and is held by a
	// 429 from its host; nil does not limit.
	Budget *Budget

	apiKey string // sent raw in Authorization; never printed
}

// idleConns is how many connections to the API host a Client keeps open between polls:
// many chatbots polled close together reuse them instead of dialling. Run keeps as
// many idle pollers (idlePollers).
const idleConns = 16

// NewClient returns a Client for baseURL authenticating with apiKey, whose HTTP calls
// time out after timeout (DefaultTimeout when timeout <= 0). It follows no redirect: a
// 3xx is an error naming its status (a redirected POST would turn into a GET, or carry
// the API key elsewhere), so base_url must be the final address.
func NewClient(baseURL, apiKey string, timeout time.Duration) *Client {
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	client, transport := httpx.NewClient(timeout, false, idleConns)
	// The bare transport: a Client sends its own User-Agent, and with a transport it
	// knows, net/http bounds each call by a context deadline alone instead of starting a
	// timer and a goroutine per call to cancel it.
	client.Transport = transport
	return &Client{
		BaseURL:      strings.TrimRight(baseURL, "/"),
		HTTPClient:   client,
		MaxBodyBytes: DefaultMaxBodyBytes,
		UserAgent:    httpx.UserAgent(),
		apiKey:       apiKey,
	}
}

// Window is the range of UTC days a poll asks for; both ends are sent as YYYY-MM-DD and
// a zero end is left out of the request.
type Window struct {
	Start, End time.Time
}

// Page is what one LeadList call returned: the records that decoded, and those that did
// not, each with its index in Data and the reason.
type Page struct {
	Leads   []event.Lead
	Skipped []RecordError
	// Warned are fields of records in Leads that could not be read and were left at their
	// zero value (a Count of the wrong type, say), one per field.
	Warned []RecordError

	last bool // Stream: the response's last chunk
}

// RecordError is a record of Data that could not be decoded, or one of its fields. Err
// names the field at fault and never carries the record's personal data.
type RecordError struct {
	Index int
	Field string // the API field at fault, or "record" when the record is not an object
	Err   error

	sum uint64 // fingerprint of the raw record and Field, to tell repeats
}

// Error says which record failed and why.
func (e RecordError) Error() string { return fmt.Sprintf("record %d: %v", e.Index, e.Err) }

// Unwrap returns the reason.
func (e RecordError) Unwrap() error { return e.Err }

// TransportError is a call that got no HTTP response: network failure, timeout, or a
// cancelled context (errors.Is(err, context.Canceled) tells).
type TransportError struct {
	Serial string
	Err    error // names the host by its redacted URL
}

// Error names the chatbot, the redacted host and the network failure.
func (e *TransportError) Error() string {
	return fmt.Sprintf("leadlist chatbot %q: %v", e.Serial, e.Err)
}

// Unwrap returns the underlying network or context error.
func (e *TransportError) Unwrap() error { return e.Err }

// StatusError is a non-2xx HTTP response. For 429 and 503, RetryAfter is the wait the
// Retry-After header asked for (0 when absent). No text of the body is kept: it may echo
// the key or people's data, and the error reaches logs, `leadbridge status` and /readyz.
type StatusError struct {
	Serial     string
	Code       int
	RetryAfter time.Duration
	URL        string // redacted base URL
	// APICode is the numeric Code of a body that is the API's JSON envelope, else 0.
	APICode int
}

// Error names the chatbot, the status, the redacted host and the API's code.
func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "leadlist chatbot %q: HTTP %d from %s", e.Serial, e.Code, e.URL)
	if e.APICode != 0 {
		fmt.Fprintf(&b, " (API code %d)", e.APICode)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter.Round(time.Millisecond))
	}
	return b.String()
}

// APIError is an HTTP 200 response whose body says Success: false.
type APIError struct {
	Serial string
	Code   int // the body's Code
	// Message is the body's Message when it is a plain error code (see httpx.SafeCode,
	// with the API key as the secret), else "": free text may quote the key or people.
	Message string
}

// Error names the chatbot and the API's code and message.
func (e *APIError) Error() string {
	s := fmt.Sprintf("leadlist chatbot %q: API refused the request: code %d", e.Serial, e.Code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// apiMessage keeps msg, the Message of a Success: false body, only if it is a safe code.
func (c *Client) apiMessage(msg string) string {
	if httpx.SafeCode(msg, []string{c.apiKey}) {
		return msg
	}
	return ""
}

// DecodeError is a 2xx response whose body is not a LeadList response.
type DecodeError struct {
	Serial string
	URL    string // redacted base URL
	// Shape says what the body looked like, never what it said: "JSON", "HTML", "text"
	// or "empty". Size is its length in bytes as read (cut at the body limit).
	Shape string
	Size  int
	Err   error
}

// Error names the chatbot, the redacted host, the failure and the body's shape and size.
func (e *DecodeError) Error() string {
	return fmt.Sprintf("leadlist chatbot %q: undecodable response from %s: %v (%s, %d bytes)",
		e.Serial, e.URL, e.Err, e.Shape, e.Size)
}

// Unwrap returns the decoding failure.
func (e *DecodeError) Unwrap() error { return e.Err }

// requestBody is the JSON body of a LeadList call for serial over w:
// {"serialNumber":…,"startTime":"YYYY-MM-DD","endTime":"YYYY-MM-DD"}, a zero end left
// out, written as encoding/json would write it but without its reflection on every poll.
func requestBody(serial string, w Window) []byte {
	b := make([]byte, 0, 64+len(serial))
	b = append(b, `{"serialNumber":`...)
	b = event.AppendJSONString(b, serial)
	if !w.Start.IsZero() {
		b = append(b, `,"startTime":"`...)
		b = append(w.Start.UTC().AppendFormat(b, dateLayout), '"')
	}
	if !w.End.IsZero() {
		b = append(b, `,"endTime":"`...)
		b = append(w.End.UTC().AppendFormat(b, dateLayout), '"')
	}
	return append(b, '}')
}

// DefaultChunkRecords is how many records of Data Stream hands over at a time.
const DefaultChunkRecords = 1000

// List asks for bot's leads and appointments created in w. Errors are a *TransportError,
// *StatusError, *APIError or *DecodeError; each names the chatbot and none contains the
// API key or credentials from the base URL. Records that fail to decode are reported in
// Page.Skipped rather than failing the call. List holds the whole page; Stream does not.
func (c *Client) List(ctx context.Context, bot event.Chatbot, w Window) (Page, error) {
	return whole(func(take func(Page) error) error { return c.Stream(ctx, bot, w, take) })
}

// whole gathers the chunks stream hands over into one Page.
func whole(stream func(take func(Page) error) error) (Page, error) {
	page := Page{Leads: []event.Lead{}}
	err := stream(func(p Page) error {
		page.Leads = append(page.Leads, p.Leads...)
		page.Skipped = append(page.Skipped, p.Skipped...)
		page.Warned = append(page.Warned, p.Warned...)
		return nil
	})
	if err != nil {
		return Page{}, err
	}
	return page, nil
}

// Stream is List for pages too large to hold: it copies the response body, up to
// MaxBodyBytes, aside (in memory up to 1 MiB, beyond that to a temporary file in
// SpoolDir) while checking that it is a successful LeadList response, and only then
// reads Data's records back and hands
// them to take in order, DefaultChunkRecords records at a time (each call's Page holds
// one chunk; indices count from the start of Data; take is called at least once, with
// an empty Page for an empty Data). So nothing reaches take from a
// response that turns out not to be a page, whatever the order of its fields, and
// memory holds one chunk, not the body. The file is removed before Stream returns.
//
// Errors are those of List; an error from take ends the stream and is returned as it
// is; a failure to write the temporary file is an error naming the chatbot.
func (c *Client) Stream(ctx context.Context, bot event.Chatbot, w Window, take func(Page) error) error {
	return c.StreamChanged(ctx, bot, w, nil, take)
}

// jsonMediaType is the value of a request's Content-Type and Accept headers.
var jsonMediaType = []string{"application/json"}

// Sum identifies a response body: its SHA-256.
type Sum [sha256.Size]byte

// StreamChanged is Stream for a poll that may skip an answer it took before: once the
// body proved to be a successful page, known (if not nil) is given its Sum, and when it
// says the page is known the records are not read back and take is not called.
func (c *Client) StreamChanged(ctx context.Context, bot event.Chatbot, w Window, known func(Sum) bool, take func(Page) error) error {
	if err := c.Budget.Wait(ctx); err != nil {
		return &TransportError{Serial: bot.Serial, Err: httpx.TransportError(c.BaseURL, err)}
	}
	// The timeout counts from the call, not from the wait for a turn above.
	if timeout := c.httpClient().Timeout; timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel() // after the body is read and closed: the timeout covers it
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		strings.TrimRight(c.BaseURL, "/")+LeadListPath, bytes.NewReader(requestBody(bot.Serial, w)))
	if err != nil {
		return &TransportError{Serial: bot.Serial, Err: httpx.TransportError(c.BaseURL, err)}
	}
	// Canonical keys set directly: Header.Set would canonicalise them on every poll. The
	// constant values are shared: a transport never changes a request's headers.
	req.Header["Authorization"] = []string{c.apiKey}
	req.Header["Content-Type"] = jsonMediaType
	req.Header["Accept"] = jsonMediaType
	if c.UserAgent != "" {
		req.Header["User-Agent"] = []string{c.UserAgent}
	}
	resp, err := c.roundTrip(req)
	if err != nil {
		return &TransportError{Serial: bot.Serial, Err: httpx.TransportError(c.BaseURL, err)}
	}
	defer drainClose(resp.Body)
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		se := c.statusError(bot, resp)
		if se.Code == http.StatusTooManyRequests {
			c.Budget.Throttled(time.Now(), se.RetryAfter)
		}
		return se
	}
	c.Budget.Answered()
	limit := c.maxBody()
	if resp.ContentLength > limit {
		br := &bodyReader{r: io.LimitReader(resp.Body, 512), limit: limit}
		_, _ = io.Copy(io.Discard, br)
		return c.decodeError(bot, br, fmt.Errorf("%w: over %d bytes", ErrBodyTooLarge, limit))
	}
	sp := &spool{dir: c.SpoolDir}
	defer sp.Close()
	return c.stream(ctx, bot, &bodyReader{r: io.LimitReader(resp.Body, limit+1), limit: limit, spool: sp, sum: sha256.New()}, sp, known, take)
}

// bodyReader is a response body as stream reads it: it counts the bytes read and keeps
// the first few (for an error's shape), copies them to the spool, and keeps a failure to
// read apart from the body's end.
type bodyReader struct {
	r     io.Reader // the body, cut at limit+1 bytes
	limit int64
	spool io.Writer // nil: the body is in memory already
	sum   hash.Hash // when set, fed every byte read
	n     int64
	head  []byte
	err   error // a read failure other than the end
	werr  error // a failure to write the spool
}

// headLen is how much of a body bodyReader keeps to tell its shape.
const headLen = 512

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if keep := min(n, headLen-len(b.head)); keep > 0 {
		b.head = append(b.head, p[:keep]...)
	}
	b.n += int64(n)
	if b.sum != nil {
		b.sum.Write(p[:n])
	}
	if n > 0 && b.spool != nil && b.werr == nil {
		if _, b.werr = b.spool.Write(p[:n]); b.werr != nil {
			return n, b.werr
		}
	}
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

// tooLarge reports whether the body went over its limit.
func (b *bodyReader) tooLarge() bool { return b.n > b.limit }

// roundTrip sends req through the HTTP client's transport, as http.Client.Do would
// without redirects or cookies, but without what Do does on every call for them (a copy
// of the headers, a fork of the request, a deadline of its own): req's context carries
// the client's Timeout already (see StreamChanged). An idle daemon makes a call per
// chatbot and minute, so that work was a tenth of its CPU.
func (c *Client) roundTrip(req *http.Request) (*http.Response, error) {
	rt := c.httpClient().Transport
	if rt == nil {
		rt = http.DefaultTransport
	}
	return rt.RoundTrip(req)
}

func (c *Client) httpClient() *http.Client {
	if c.HTTPClient != nil {
		return c.HTTPClient
	}
	return http.DefaultClient
}

func (c *Client) maxBody() int64 {
	if c.MaxBodyBytes > 0 {
		return c.MaxBodyBytes
	}
	return DefaultMaxBodyBytes
}

func (c *Client) statusError(bot event.Chatbot, resp *http.Response) *StatusError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLen))
	var envelope struct{ Code json.RawMessage }
	e := &StatusError{
		Serial: bot.Serial,
		Code:   resp.StatusCode,
		URL:    httpx.RedactURL(c.BaseURL),
	}
	if json.Unmarshal(body, &envelope) == nil {
		if code, err := parseInt(envelope.Code, 32); err == nil {
			e.APICode = int(code)
		}
	}
	if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
		e.RetryAfter = httpx.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	}
	return e
}

func (c *Client) decodeError(bot event.Chatbot, body *bodyReader, err error) *DecodeError {
	return &DecodeError{Serial: bot.Serial, URL: httpx.RedactURL(c.BaseURL), Shape: shape(body.head), Size: int(body.n), Err: err}
}

// shape names what a body looks like without quoting it: "empty", "JSON" (it starts
// with { or [), "HTML" (it starts with <) or "text".
func shape(body []byte) string {
	first := bytes.TrimLeftFunc(body, unicode.IsSpace)
	switch {
	case len(first) == 0:
		return "empty"
	case first[0] == '{' || first[0] == '[':
		return "JSON"
	case first[0] == '<':
		return "HTML"
	}
	return "text"
}

// drainClose reads what is left of a body, within reason, so the connection can be
// reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, drainLimit))
	_ = body.Close()
}
