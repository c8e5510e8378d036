package slack

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"text/template"
	"time"
	"unicode"
	"unicode/utf16"

	slackapi "github.com/slack-go/slack"
	"github.com/slack-go/slack/slackutilsx"

	"github.com/leadbridge/leadbridge/event"
)

// Slack's limits on text objects, in characters. Lengths are counted in UTF-16 code
// units, which is never less than the rune count, so a text within our count is within
// Slack's whichever way it counts.
const (
	maxHeader  = 150  // header block text
	maxSection = 3000 // section text, context element text, fallback text
	maxField   = 2000 // one section field
)

// ellipsis ends a text that was cut to fit a limit.
const ellipsis = "…"

// timeLayout shows when a record arrived, e.g. "Wed 22 Nov 2023 03:13 UTC".
const timeLayout = "Mon 02 Jan 2006 15:04 MST"

// MetadataEventType is the event_type of the metadata every message carries: its
// event_payload is {"ids": [...]}, the ids of the events the message names (one for a
// single message, every listed one for a digest), so that an app reading the channel
// can tell a repeated message, or a repeated digest, by id.
const MetadataEventType = "leadbridge_events"

// Message is a rendered Slack message: Block Kit blocks, the plain text Slack shows in
// notifications and where blocks cannot be shown, and metadata naming its events. The
// same value feeds an incoming webhook and chat.postMessage.
type Message struct {
	// Text is the escaped mrkdwn fallback, e.g. "New appointment from Ada via Main site".
	Text string `json:"text"`
	// Blocks are the header, body sections and context line.
	Blocks slackapi.Blocks `json:"blocks"`
	// Metadata is MetadataEventType with the ids of the events the message names.
	Metadata *slackapi.SlackMetadata `json:"metadata,omitempty"`
}

// idMetadata is the metadata of a message naming evs.
func idMetadata(evs ...event.Event) *slackapi.SlackMetadata {
	ids := make([]string, len(evs))
	for i, ev := range evs {
		ids[i] = ev.ID
	}
	return &slackapi.SlackMetadata{EventType: MetadataEventType, EventPayload: map[string]any{"ids": ids}}
}

// TemplateData is what a Config.Template sees. Every string that came from the public
// chat (Name, Email, Phone, Content, URI, ChatbotName, EmailLink and PhoneLink labels)
// is already escaped for mrkdwn, so a template cannot be tricked into a mention or a link.
type TemplateData struct {
	Kind        string    // "lead" or "appointment"
	Action      string    // "created" or "updated"
	Time        string    // CreatedAt in the forwarder's timezone, e.g. "Wed 22 Nov 2023 03:13 UTC"
	CreatedAt   time.Time // when the record was created, in the forwarder's timezone
	EventID     string    // the event id
	Account     string    // the chatbot's account name
	Chatbot     string    // the chatbot's serial
	ChatbotName string    // the chatbot's configured name, or its serial when it has none
	Name        string    // the person's name
	Email       string    // the person's email address
	EmailLink   string    // a mailto link to Email, or Email as text when it cannot be a safe link
	Phone       string    // the person's phone number
	PhoneLink   string    // a tel link to Phone, or Phone as text when it has no digits
	Content     string    // what they wrote, line breaks kept
	URI         string    // the page the chat happened on
	SessionID   int64     // the chat session
	Count       int       // the record's message count
}

// BuildMessage renders ev as a Slack message: a header saying what happened and who, a
// section with how to reach them, which chatbot and page, and when (in loc; nil means
// UTC), what they wrote as a quote, and a context line with the event id, which the
// metadata carries too (see MetadataEventType). When tmpl is not nil, its output over
// TemplateData replaces the sections between header and context. Text from the public
// chat is escaped and every text is cut to Slack's limits.
// A test event (event.TypeTest) says TEST in its header and fallback text.
func BuildMessage(ev event.Event, loc *time.Location, tmpl *template.Template) (Message, error) {
	if loc == nil {
		loc = time.UTC
	}
	l := ev.Data
	appointment := ev.Kind() == event.KindAppointment
	updated := ev.Action() == event.ActionUpdated
	name := escape(oneLine(l.Name))
	chatbot := escape(oneLine(l.ChatbotName))
	if chatbot == "" {
		chatbot = escape(oneLine(l.Chatbot))
	}

	header, text := headline(appointment, updated, name), fallback(appointment, updated, name, chatbot)
	if ev.Type == event.TypeTest {
		header, text = "🧪 TEST (leadbridge send-test) · "+header, "TEST (leadbridge send-test): "+text
	}
	blocks := []slackapi.Block{
		slackapi.NewHeaderBlock(plain(cut(header, maxHeader))),
	}
	if tmpl != nil {
		body, err := runTemplate(tmpl, ev, loc)
		if err != nil {
			return Message{}, err
		}
		if strings.TrimSpace(body) != "" {
			blocks = append(blocks, slackapi.NewSectionBlock(mrkdwn(cut(body, maxSection)), nil, nil))
		}
	} else {
		blocks = append(blocks, slackapi.NewSectionBlock(nil, fields(l, chatbot, loc), nil))
		if quote := quoted(l.Content); quote != "" {
			blocks = append(blocks, slackapi.NewSectionBlock(mrkdwn(cut(quote, maxSection)), nil, nil))
		}
	}
	blocks = append(blocks, slackapi.NewContextBlock("",
		mrkdwn(cut("Event "+escape(ev.ID)+" · session "+strconv.FormatInt(l.SessionID, 10), maxSection))))

	return Message{
		Text:     cut(text, maxSection),
		Blocks:   slackapi.Blocks{BlockSet: blocks},
		Metadata: idMetadata(ev),
	}, nil
}

// headline is the header text: what happened, and to whom when the name is known.
func headline(appointment, updated bool, name string) string {
	var h string
	switch {
	case appointment && updated:
		h = "📅 Appointment updated"
	case appointment:
		h = "📅 New appointment booked"
	case updated:
		h = "🙋 Lead updated"
	default:
		h = "🙋 New lead"
	}
	if name != "" {
		h += ": " + name
	}
	return h
}

// fallback is the notification text, e.g. "New appointment from Ada via Main site".
func fallback(appointment, updated bool, name, chatbot string) string {
	what := "New lead"
	switch {
	case appointment && updated:
		what = "Updated appointment"
	case appointment:
		what = "New appointment"
	case updated:
		what = "Updated lead"
	}
	if name != "" {
		what += " from " + name
	}
	return what + " via " + chatbot
}

// fields lists how to reach the person (only what they gave), the chatbot, when, and
// the page, each as one section field.
func fields(l event.Lead, chatbot string, loc *time.Location) []*slackapi.TextBlockObject {
	var out []*slackapi.TextBlockObject
	add := func(label, value string) {
		out = append(out, mrkdwn(cut("*"+label+"*\n"+value, maxField)))
	}
	if email := oneLine(l.Email); email != "" {
		add("Email", fitLink(emailLink(email), email, len("*Email*\n")))
	}
	if phone := oneLine(l.Phone); phone != "" {
		add("Phone", fitLink(phoneLink(phone), phone, len("*Phone*\n")))
	}
	add("Chatbot", chatbot)
	add("When", escape(l.CreatedAt.In(loc).Format(timeLayout)))
	if uri := oneLine(l.URI); uri != "" {
		add("Page", escape(uri))
	}
	return out
}

// fitLink returns link when it fits a field after a label of labelLen bytes (ASCII), and
// otherwise the value as escaped text, which can then be cut safely: a cut link would
// leave a dangling "<".
func fitLink(link, value string, labelLen int) string {
	if link != "" && labelLen+length(link) <= maxField {
		return link
	}
	return escape(value)
}

// emailLink is a mailto link showing the address, or "" when the address is not shaped
// like one or holds anything beyond letters, digits and the usual address punctuation:
// nothing that could end the link target ("|", ">") or add mailto parameters ("?").
func emailLink(email string) string {
	at := strings.IndexByte(email, '@')
	if at <= 0 || at == len(email)-1 || strings.Count(email, "@") != 1 {
		return ""
	}
	for _, r := range email {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune(".!$'*+=^_`{}~-@", r) {
			return ""
		}
	}
	return "<mailto:" + email + "|" + escape(email) + ">"
}

// phoneLink is a tel link showing the number as given; the target keeps only the digits
// and a leading "+". It is "" when the number has no digits.
func phoneLink(phone string) string {
	var target strings.Builder
	if strings.HasPrefix(phone, "+") {
		target.WriteByte('+')
	}
	digits := 0
	for _, r := range phone {
		if r >= '0' && r <= '9' {
			target.WriteRune(r)
			digits++
		}
	}
	if digits == 0 {
		return ""
	}
	return "<tel:" + target.String() + "|" + escape(phone) + ">"
}

// quoted renders what the person wrote as an escaped mrkdwn quote, ">" starting every
// line, or "" when they wrote nothing.
func quoted(content string) string {
	content = strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(clean(content))
	content = strings.TrimRightFunc(content, unicode.IsSpace)
	content = strings.TrimLeft(content, "\n")
	if content == "" {
		return ""
	}
	lines := strings.Split(content, "\n")
	for i, line := range lines {
		lines[i] = ">" + escape(strings.Map(controlToSpace, line))
	}
	return strings.Join(lines, "\n")
}

// runTemplate executes tmpl over ev's TemplateData.
func runTemplate(tmpl *template.Template, ev event.Event, loc *time.Location) (string, error) {
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, templateData(ev, loc)); err != nil {
		return "", fmt.Errorf("template: %w", err)
	}
	return clean(buf.String()), nil
}

// templateData prepares ev for a template, escaping everything from the public chat.
func templateData(ev event.Event, loc *time.Location) TemplateData {
	l := ev.Data
	email, phone := oneLine(l.Email), oneLine(l.Phone)
	d := TemplateData{
		Kind:        string(ev.Kind()),
		Action:      string(ev.Action()),
		Time:        l.CreatedAt.In(loc).Format(timeLayout),
		CreatedAt:   l.CreatedAt.In(loc),
		EventID:     escape(ev.ID),
		Account:     escape(oneLine(ev.Account())),
		Chatbot:     escape(oneLine(l.Chatbot)),
		ChatbotName: escape(oneLine(l.ChatbotName)),
		Name:        escape(oneLine(l.Name)),
		Email:       escape(email),
		EmailLink:   fitLink(emailLink(email), email, 0),
		Phone:       escape(phone),
		PhoneLink:   fitLink(phoneLink(phone), phone, 0),
		Content:     escape(strings.NewReplacer("\r\n", "\n", "\r", "\n").Replace(clean(l.Content))),
		URI:         escape(oneLine(l.URI)),
		SessionID:   l.SessionID,
		Count:       l.Count,
	}
	if d.ChatbotName == "" {
		d.ChatbotName = d.Chatbot
	}
	return d
}

// plain is a plain_text object with emoji shortcodes on.
func plain(text string) *slackapi.TextBlockObject {
	return slackapi.NewTextBlockObject(slackapi.PlainTextType, text, true, false)
}

// mrkdwn is a verbatim mrkdwn object: Slack renders the markup we wrote but does not
// turn bare URLs, channel names or mentions in the text into links by itself.
func mrkdwn(text string) *slackapi.TextBlockObject {
	return slackapi.NewTextBlockObject(slackapi.MarkdownType, text, false, true)
}

// escape makes text from the public chat inert in mrkdwn: & < > become entities.
func escape(s string) string {
	return slackutilsx.EscapeMessage(s)
}

// clean replaces invalid UTF-8, so lengths count what Slack will see.
func clean(s string) string {
	return strings.ToValidUTF8(s, "\uFFFD")
}

// oneLine cleans s for a one-line place: control characters and line separators become
// spaces, and surrounding space goes.
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(controlToSpace, clean(s)))
}

// controlToSpace maps control characters and Unicode line and paragraph separators to a
// space, leaving tabs alone.
func controlToSpace(r rune) rune {
	if (unicode.IsControl(r) && r != '\t') || r == '\u2028' || r == '\u2029' {
		return ' '
	}
	return r
}

// length counts s in UTF-16 code units.
func length(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r)
	}
	return n
}

// cut shortens s, already escaped, to at most limit characters, ending it with an
// ellipsis when anything was dropped. It never splits a rune or an entity like "&amp;".
func cut(s string, limit int) string {
	if length(s) <= limit {
		return s
	}
	budget := limit - length(ellipsis)
	n := 0
	for i, r := range s {
		if n += utf16.RuneLen(r); n > budget {
			s = s[:i]
			break
		}
	}
	// An entity is at most 5 bytes ("&amp;"); an "&" in the last 4 without its ";"
	// starts one that the cut split.
	if amp := strings.LastIndexByte(s, '&'); amp >= 0 && amp >= len(s)-4 && !strings.Contains(s[amp:], ";") {
		s = s[:amp]
	}
	return s + ellipsis
}
