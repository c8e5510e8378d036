package slack

import (
	"strconv"
	"strings"
	"time"

	slackapi "github.com/slack-go/slack"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

// maxWho bounds who a digest line names, in characters, so that a line stays one line.
const maxWho = 100

// BuildDigest renders several events as one Slack message: a header counting them, one
// line per event (who, kind, chatbot and when, in loc; nil means UTC), when rest says
// more are due a line counting them ("…and 20 more to follow"), and a context line with
// the ids of the events it names, in the same order ("Events <id>, <id>, ..."); the
// metadata carries the ids too (see MetadataEventType). Text from the public chat is
// escaped and cut as in BuildMessage; a configured template is not used (it renders one
// record). The notification text holds no personal data.
func BuildDigest(evs []event.Event, rest forwarders.Rest, loc *time.Location) Message {
	if loc == nil {
		loc = time.UTC
	}
	title := digestTitle(evs)
	blocks := make([]slackapi.Block, 0, len(evs)+3)
	blocks = append(blocks, slackapi.NewHeaderBlock(plain(cut(title, maxHeader))))
	for _, ev := range evs {
		blocks = append(blocks, slackapi.NewSectionBlock(mrkdwn(cut(digestLine(ev, loc), maxSection)), nil, nil))
	}
	text := title
	if following := restText(rest); following != "" {
		blocks = append(blocks, slackapi.NewContextBlock("", mrkdwn(following)))
		text += " " + following
	}
	if len(evs) > 0 {
		blocks = append(blocks, slackapi.NewContextBlock("", idElements(evs)...))
	}
	return Message{Text: cut(text, maxSection), Blocks: slackapi.Blocks{BlockSet: blocks}, Metadata: idMetadata(evs...)}
}

// idElements lists the events' ids, "Events <id>, <id>, ...", in as many context
// elements as it takes to keep each within a text's 3000 characters (MaxDigestItems ids
// of 64 characters take two of the ten a context block holds).
func idElements(evs []event.Event) []slackapi.MixedElement {
	var els []slackapi.MixedElement
	line := "Events "
	for i, ev := range evs {
		id := escape(ev.ID)
		if i > 0 {
			if len(line)+len(", ")+len(id) > maxSection {
				els = append(els, mrkdwn(line))
				line = ""
			} else {
				line += ", "
			}
		}
		line += id
	}
	return append(els, mrkdwn(cut(line, maxSection)))
}

// digestTitle counts the events by kind, e.g. "📅 12 new appointments" or
// "📬 20 new leads and appointments"; "new" only when none is an update.
func digestTitle(evs []event.Event) string {
	appointments, updated := 0, false
	for _, ev := range evs {
		if ev.Kind() == event.KindAppointment {
			appointments++
		}
		updated = updated || ev.Action() == event.ActionUpdated
	}
	n := len(evs)
	what := "leads and appointments"
	emoji := "📬"
	switch appointments {
	case n:
		what, emoji = plural(n, "appointment"), "📅"
	case 0:
		what, emoji = plural(n, "lead"), "🙋"
	}
	if !updated {
		what = "new " + what
	}
	return emoji + " " + strconv.Itoa(n) + " " + what
}

// plural is word, with an s unless n is 1.
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}

// digestLine is one event of a digest, e.g.
// "📅 Ada Lovelace · appointment · Main site · Wed 22 Nov 2023 03:13 UTC".
func digestLine(ev event.Event, loc *time.Location) string {
	l := ev.Data
	emoji, kind := "🙋", "lead"
	if ev.Kind() == event.KindAppointment {
		emoji, kind = "📅", "appointment"
	}
	if ev.Action() == event.ActionUpdated {
		kind += " updated"
	}
	who := "(no name given)"
	for _, s := range []string{l.Name, l.Email, l.Phone} {
		if s = oneLine(s); s != "" {
			who = cut(escape(s), maxWho)
			break
		}
	}
	chatbot := oneLine(l.ChatbotName)
	if chatbot == "" {
		chatbot = oneLine(l.Chatbot)
	}
	return strings.Join([]string{emoji + " " + who, kind, cut(escape(chatbot), maxWho),
		escape(l.CreatedAt.In(loc).Format(timeLayout))}, " · ")
}

// restText is the closing line counting what the digest does not name, "" when nothing
// is known to follow.
func restText(rest forwarders.Rest) string {
	switch {
	case rest.Due > 0 && rest.More:
		return "…and " + strconv.Itoa(rest.Due) + "+ more to follow"
	case rest.Due > 0:
		return "…and " + strconv.Itoa(rest.Due) + " more to follow"
	case rest.More:
		return "…and more to follow"
	}
	return ""
}
