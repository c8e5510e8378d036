package slack

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"text/template"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders/forwarderstest"
)

// link matches the only markup a message may hold: the mailto and tel links
// BuildMessage makes, with a target that cannot break out and an escaped label.
var link = regexp.MustCompile(`<(?:mailto:[^|<>&?\s]+@[^|<>&?\s]+|tel:\+?[0-9]+)\|[^<>]+>`)

// entity matches what an "&" may start in escaped text.
var entity = regexp.MustCompile(`^&(?:amp|lt|gt);`)

// decoded is a message as Slack receives it, JSON-decoded.
type decoded struct {
	Text     string
	Blocks   []any
	Metadata metadata
}

// metadata is a message's metadata as an app reading the channel decodes it.
type metadata struct {
	EventType    string `json:"event_type"`
	EventPayload struct {
		IDs []string `json:"ids"`
	} `json:"event_payload"`
}

// decode marshals m the way it goes over the wire and decodes it generically.
func decode(t testing.TB, m Message) decoded {
	t.Helper()
	raw, err := json.Marshal(m)
	require.NoError(t, err)
	var d struct {
		Text     string   `json:"text"`
		Blocks   []any    `json:"blocks"`
		Metadata metadata `json:"metadata"`
	}
	require.NoError(t, json.Unmarshal(raw, &d))
	return decoded{Text: d.Text, Blocks: d.Blocks, Metadata: d.Metadata}
}

// blocksOf returns the blocks of one type.
func (d decoded) blocksOf(typ string) []map[string]any {
	var out []map[string]any
	for _, b := range d.Blocks {
		if m := b.(map[string]any); m["type"] == typ {
			out = append(out, m)
		}
	}
	return out
}

// header is the header block's text.
func (d decoded) header() string {
	h := d.blocksOf("header")
	if len(h) != 1 {
		return ""
	}
	return textOf(h[0]["text"])
}

// fields are the texts of the section fields.
func (d decoded) fields() []string {
	var out []string
	for _, s := range d.blocksOf("section") {
		fs, _ := s["fields"].([]any)
		for _, f := range fs {
			out = append(out, textOf(f))
		}
	}
	return out
}

// sections are the texts of the sections that have one.
func (d decoded) sections() []string {
	var out []string
	for _, s := range d.blocksOf("section") {
		if s["text"] != nil {
			out = append(out, textOf(s["text"]))
		}
	}
	return out
}

// context is the text of the first context block's first element: a single message's
// only one, a digest's closing line (or its ids when nothing follows).
func (d decoded) context() string {
	c := d.blocksOf("context")
	if len(c) == 0 {
		return ""
	}
	els := c[0]["elements"].([]any)
	return textOf(els[0])
}

// listedIDs are the event ids a digest's last context block lists ("Events <id>, ...").
func (d decoded) listedIDs() []string {
	c := d.blocksOf("context")
	if len(c) == 0 {
		return nil
	}
	var out []string
	for i, el := range c[len(c)-1]["elements"].([]any) {
		s := textOf(el)
		if i == 0 {
			var ok bool
			if s, ok = strings.CutPrefix(s, "Events "); !ok {
				return nil
			}
		}
		out = append(out, strings.Split(s, ", ")...)
	}
	return out
}

// textObjects are every text object in the blocks.
func (d decoded) textObjects() []map[string]any {
	var out []map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if typ, ok := v["type"].(string); ok && (typ == "mrkdwn" || typ == "plain_text") {
				out = append(out, v)
				return
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(d.Blocks)
	return out
}

// texts are every rendered text: the fallback and each text object's.
func (d decoded) texts() []string {
	out := []string{d.Text}
	for _, o := range d.textObjects() {
		out = append(out, textOf(o))
	}
	return out
}

func textOf(v any) string {
	m, _ := v.(map[string]any)
	s, _ := m["text"].(string)
	return s
}

// checkSafe asserts a rendered message holds no markup but the links BuildMessage made
// (so no <!channel>, no <https://...|...>), that every "&" starts an entity, and that
// Slack's limits hold.
func checkSafe(t testing.TB, d decoded) {
	t.Helper()
	for _, s := range d.texts() {
		bare := link.ReplaceAllString(s, "")
		assert.NotContains(t, bare, "<", "markup outside our links in %q", s)
		for i := range len(bare) {
			switch {
			case bare[i] == '>' && i > 0 && bare[i-1] != '\n':
				t.Errorf("a > that is no quote marker in %q", s)
			case bare[i] == '&' && !entity.MatchString(bare[i:]):
				t.Errorf("a bare or split entity in %q", s)
			}
		}
	}
	for _, o := range d.textObjects() {
		s := textOf(o)
		assert.NotEmpty(t, s, "Slack refuses an empty text object")
		assert.LessOrEqual(t, length(s), maxSection)
		if o["type"] == "mrkdwn" {
			assert.Equal(t, true, o["verbatim"], "mrkdwn is verbatim: no automatic links")
		}
	}
	assert.LessOrEqual(t, length(d.Text), maxSection)
	assert.LessOrEqual(t, length(d.header()), maxHeader)
	assert.LessOrEqual(t, utf8.RuneCountInString(d.header()), maxHeader)
	fields := d.fields()
	assert.LessOrEqual(t, len(fields), 10)
	for _, f := range fields {
		assert.LessOrEqual(t, length(f), maxField)
	}
	assert.LessOrEqual(t, len(d.Blocks), 50)
}

func sampleLead() event.Lead {
	return event.Lead{
		Chatbot:     "3254a9d0424c4806b9ea3d0763ccf000",
		ChatbotName: "Main site",
		Kind:        event.KindAppointment,
		Name:        "Ada Lovelace",
		Email:       "ada@example.com",
		Phone:       "+1 555 0100",
		Content:     "Please call\ntomorrow",
		SessionID:   31313,
		URI:         "www.example.com",
		Count:       2,
		CreatedAt:   time.Date(2023, 11, 22, 3, 13, 44, 54019000, time.UTC),
	}
}

func TestBuildMessageInjection(t *testing.T) {
	l := sampleLead()
	l.Name = "<!channel> <@U0123>"
	l.Email = "x@example.com|<https://evil.example>"
	l.Phone = "<tel:1|x>"
	l.URI = "<https://evil.example|your bank>"
	l.ChatbotName = "<!here>"
	l.Content = "<!everyone>\n<https://evil.example|click> & more\r\n> not a quote"
	m, err := BuildMessage(event.NewCreated(l), nil, nil)
	require.NoError(t, err)
	d := decode(t, m)
	checkSafe(t, d)

	assert.Equal(t, "📅 New appointment booked: &lt;!channel&gt; &lt;@U0123&gt;", d.header())
	assert.Equal(t, "New appointment from &lt;!channel&gt; &lt;@U0123&gt; via &lt;!here&gt;", d.Text)
	assert.Contains(t, d.fields(), "*Email*\nx@example.com|&lt;https://evil.example&gt;", "no link from a broken address")
	assert.Contains(t, d.fields(), "*Phone*\n<tel:1|&lt;tel:1|x&gt;>", "the tel target keeps only digits")
	assert.Contains(t, d.fields(), "*Page*\n&lt;https://evil.example|your bank&gt;")
	assert.Contains(t, d.sections(),
		">&lt;!everyone&gt;\n>&lt;https://evil.example|click&gt; &amp; more\n>&gt; not a quote")
}

func TestBuildMessageLimits(t *testing.T) {
	l := sampleLead()
	l.Name = strings.Repeat("é<", 200)
	l.Content = strings.Repeat("a&b<c>😀\n", 1000)
	l.URI = "https://example.com/" + strings.Repeat("x&", 3000)
	l.Email = strings.Repeat("a", 2500) + "@example.com"
	m, err := BuildMessage(event.NewCreated(l), nil, nil)
	require.NoError(t, err)
	d := decode(t, m)
	checkSafe(t, d)

	assert.True(t, strings.HasSuffix(d.header(), "…"))
	sections := d.sections()
	require.Len(t, sections, 1)
	assert.True(t, strings.HasSuffix(sections[0], "…"))
	assert.LessOrEqual(t, utf8.RuneCountInString(sections[0]), maxSection)
	assert.Greater(t, length(sections[0]), maxSection-10, "cut near the limit, not far before")
	for _, f := range d.fields() {
		assert.LessOrEqual(t, utf8.RuneCountInString(f), maxField)
		if strings.HasPrefix(f, "*Email*") {
			assert.NotContains(t, f, "<mailto:", "a link too long to fit is shown as text")
			assert.True(t, strings.HasSuffix(f, "…"))
		}
	}
}

func TestCut(t *testing.T) {
	for _, tc := range []struct {
		name  string
		in    string
		limit int
		want  string
	}{
		{"fits", "abc", 3, "abc"},
		{"plain", "abcdef", 4, "abc…"},
		{"whole entity kept", "ab&amp;cdef", 8, "ab&amp;…"},
		{"split entity dropped", "ab&amp;cdef", 6, "ab…"},
		{"split lt dropped", "a&lt;bcd", 4, "a…"},
		{"multibyte kept whole", "éééé", 3, "éé…"},
		{"astral counts two", "😀😀😀", 4, "😀…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := cut(tc.in, tc.limit)
			assert.Equal(t, tc.want, got)
			assert.True(t, utf8.ValidString(got))
			assert.LessOrEqual(t, length(got), tc.limit)
		})
	}
}

func TestBuildMessageTemplate(t *testing.T) {
	tmpl := template.Must(template.New("t").Parse(
		"*{{.Name}}* ({{.Kind}}, {{.Action}}) at {{.Time}} via {{.ChatbotName}}: {{.Content}} {{.EmailLink}} {{.PhoneLink}}"))
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(t, err)
	m, err := BuildMessage(forwarderstest.SampleEvent(), ny, tmpl)
	require.NoError(t, err)
	d := decode(t, m)
	checkSafe(t, d)
	assert.Equal(t, []string{"*Ada &lt;!channel&gt;* (appointment, created) at Tue 21 Nov 2023 22:13 EST via Main site: " +
		"Call me &lt;https://evil.example|here&gt; &amp; soon <mailto:ada@example.com|ada@example.com> <tel:+15550100|+1 555 0100>"},
		d.sections())
	assert.Empty(t, d.fields(), "the template replaces the fields")
	assert.Equal(t, "📅 New appointment booked: Ada &lt;!channel&gt;", d.header())
	assert.Contains(t, d.context(), forwarderstest.SampleEvent().ID)

	long := template.Must(template.New("t").Parse(`{{printf "%5000s" .Name}}`))
	m, err = BuildMessage(forwarderstest.SampleEvent(), nil, long)
	require.NoError(t, err)
	d = decode(t, m)
	require.Len(t, d.sections(), 1)
	assert.LessOrEqual(t, utf8.RuneCountInString(d.sections()[0]), maxSection)

	blank := template.Must(template.New("t").Parse(`{{if false}}x{{end}}  `))
	m, err = BuildMessage(forwarderstest.SampleEvent(), nil, blank)
	require.NoError(t, err)
	d = decode(t, m)
	assert.Empty(t, d.sections(), "Slack refuses an empty section: none is sent")
	checkSafe(t, d)

	failing := template.Must(template.New("t").Parse(`{{index .Name 99}}`))
	_, err = BuildMessage(forwarderstest.SampleEvent(), nil, failing)
	assert.ErrorContains(t, err, "template")
}

// FuzzBuildMessage renders arbitrary chat text: whatever a visitor types, the message
// holds no markup but our own mailto and tel links, and fits Slack's limits.
func FuzzBuildMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, name, email, phone, content, uri, chatbotName string, appointment, updated bool) {
		l := sampleLead()
		l.Name, l.Email, l.Phone, l.Content, l.URI, l.ChatbotName = name, email, phone, content, uri, chatbotName
		l.Kind = event.KindLead
		if appointment {
			l.Kind = event.KindAppointment
		}
		ev := event.NewCreated(l)
		if updated {
			ev = event.NewUpdated(l, l.CreatedAt.Add(time.Hour))
		}
		m, err := BuildMessage(ev, nil, nil)
		require.NoError(t, err)
		checkSafe(t, decode(t, m))
	})
}

func BenchmarkBuildMessage(b *testing.B) {
	ev := forwarderstest.SampleEvent()
	ny, err := time.LoadLocation("America/New_York")
	require.NoError(b, err)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildMessage(ev, ny, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// The message template sees the chatbot's account (default for an event queued before
// accounts existed).
func TestBuildMessageTemplateAccount(t *testing.T) {
	tmpl := template.Must(template.New("t").Parse("{{.Account}}: {{.ChatbotName}}"))
	for account, want := range map[string]string{"client-a": "client-a: Main site", "": "default: Main site"} {
		ev := forwarderstest.SampleEvent()
		ev.Data.Account = account
		m, err := BuildMessage(ev, nil, tmpl)
		require.NoError(t, err)
		assert.Equal(t, []string{want}, decode(t, m).sections())
	}
}
