package nats

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"unicode"

	"github.com/leadbridge/leadbridge/event"
)

// DefaultSubject is the subject template used when Config.Subject is empty:
// neoagent.<chatbot serial>.<lead|appointment>.
const DefaultSubject = "neoagent.{{.Chatbot}}.{{.Kind}}"

// SubjectData is what the subject template sees for one event.
type SubjectData struct {
	Account     string       // the chatbot's account name (letters, digits, - and _)
	Chatbot     string       // chatbot serial
	ChatbotName string       // chatbot display name from the config; may hold dots or spaces
	Kind        event.Kind   // "lead" or "appointment"
	Action      event.Action // "created" or "updated"
	Type        string       // CloudEvents type, e.g. "neoagent.lead.created" (three tokens)
	ID          string       // event id (SHA-256 hex)
	SessionID   int64        // the record's chat session
}

func subjectData(ev event.Event) SubjectData {
	return SubjectData{
		Account:     ev.Account(),
		Chatbot:     ev.Chatbot(),
		ChatbotName: ev.Data.ChatbotName,
		Kind:        ev.Kind(),
		Action:      ev.Action(),
		Type:        ev.Type,
		ID:          ev.ID,
		SessionID:   ev.Data.SessionID,
	}
}

// sampleData is a plausible event used to try the template in New.
var sampleData = SubjectData{
	Account:     event.DefaultAccount,
	Chatbot:     "3254a9d0424c4806b9ea3d0763ccf000",
	ChatbotName: "sample",
	Kind:        event.KindLead,
	Action:      event.ActionCreated,
	Type:        event.TypePrefix + string(event.KindLead) + "." + string(event.ActionCreated),
	ID:          "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
	SessionID:   31313,
}

// subjectFuncs are the functions a subject template may call besides the builtins.
var subjectFuncs = template.FuncMap{
	// token makes any text safe as one subject token: dots, whitespace and wildcard
	// characters become "_", an empty value becomes "_".
	"token": func(v any) string {
		s := strings.Map(func(r rune) rune {
			if r == '.' || r == '*' || r == '>' || unicode.IsSpace(r) || unicode.IsControl(r) {
				return '_'
			}
			return r
		}, fmt.Sprint(v))
		if s == "" {
			return "_"
		}
		return s
	},
}

// parseSubject parses and tries a subject template ("" means DefaultSubject); it also
// returns the stream subject that captures every subject the template can render (""
// when none can be derived).
func parseSubject(text string) (*template.Template, string, error) {
	if text == "" {
		text = DefaultSubject
	}
	tmpl, err := template.New("subject").Funcs(subjectFuncs).Parse(text)
	if err != nil {
		return nil, "", err
	}
	sample, err := renderSubject(tmpl, sampleData)
	if err != nil {
		return nil, "", fmt.Errorf("for a sample event: %w", err)
	}
	return tmpl, streamSubject(tmpl, sample), nil
}

// streamSubject derives a stream subject from the template's literal start: a template
// without actions yields its one subject; "neoagent.{{...}}..." yields "neoagent.>".
// A template that starts with an action yields "": no stream subject short of ">"
// would capture it.
func streamSubject(tmpl *template.Template, sample string) string {
	nodes := tmpl.Tree.Root.Nodes
	if len(nodes) == 0 {
		return ""
	}
	text, ok := nodes[0].(*parse.TextNode)
	if !ok {
		return ""
	}
	if len(nodes) == 1 {
		return sample
	}
	dot := bytes.LastIndexByte(text.Text, '.')
	if dot < 0 {
		return ""
	}
	return string(text.Text[:dot+1]) + ">"
}

// renderSubject executes the template for d and checks the result is a valid subject
// to publish on.
func renderSubject(tmpl *template.Template, d SubjectData) (string, error) {
	var b strings.Builder
	if err := tmpl.Execute(&b, d); err != nil {
		return "", err
	}
	s := b.String()
	if err := validSubject(s); err != nil {
		return "", err
	}
	return s, nil
}

// validSubject accepts a literal NATS subject: not empty, no whitespace or control
// characters, no empty token, no wildcard token.
func validSubject(s string) error {
	if s == "" {
		return errors.New("rendered subject is empty")
	}
	if i := strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return fmt.Errorf("rendered subject %q contains whitespace", s)
	}
	for _, tok := range strings.Split(s, ".") {
		switch tok {
		case "":
			return fmt.Errorf("rendered subject %q has an empty token", s)
		case "*", ">":
			return fmt.Errorf("rendered subject %q contains the wildcard %q", s, tok)
		}
	}
	return nil
}

// subjectParts is a subject template made only of text and fields, such as
// DefaultSubject.
type subjectParts []subjectPart

// subjectPart is a literal, or the name of a field when field is set.
type subjectPart struct {
	text  string
	field bool
}

// plainParts returns tmpl's parts when it holds nothing but text and {{.Field}} actions
// naming fields subjectField knows, nil otherwise. Such a template renders by joining
// strings, the same as executing it, without text/template's reflection, which costs
// more per event than the rest of a publish.
func plainParts(tmpl *template.Template) subjectParts {
	var parts subjectParts
	for _, n := range tmpl.Tree.Root.Nodes {
		switch n := n.(type) {
		case *parse.TextNode:
			parts = append(parts, subjectPart{text: string(n.Text)})
		case *parse.ActionNode:
			if len(n.Pipe.Decl) > 0 || len(n.Pipe.Cmds) != 1 || len(n.Pipe.Cmds[0].Args) != 1 {
				return nil
			}
			f, ok := n.Pipe.Cmds[0].Args[0].(*parse.FieldNode)
			if !ok || len(f.Ident) != 1 {
				return nil
			}
			if _, known := subjectField(sampleData, f.Ident[0]); !known {
				return nil
			}
			parts = append(parts, subjectPart{text: f.Ident[0], field: true})
		default:
			return nil
		}
	}
	return parts
}

// subjectField is field name of d as a template prints it; known is false for a name
// it does not handle.
func subjectField(d SubjectData, name string) (value string, known bool) {
	switch name {
	case "Account":
		return d.Account, true
	case "Chatbot":
		return d.Chatbot, true
	case "ChatbotName":
		return d.ChatbotName, true
	case "Kind":
		return string(d.Kind), true
	case "Action":
		return string(d.Action), true
	case "Type":
		return d.Type, true
	case "ID":
		return d.ID, true
	case "SessionID":
		return strconv.FormatInt(d.SessionID, 10), true
	}
	return "", false
}

// render joins the parts for d and checks the result as renderSubject does.
func (p subjectParts) render(d SubjectData) (string, error) {
	n := 0
	for _, part := range p {
		v := part.text
		if part.field {
			v, _ = subjectField(d, part.text)
		}
		n += len(v)
	}
	var b strings.Builder
	b.Grow(n) // one allocation, where growing as it goes took several
	for _, part := range p {
		if !part.field {
			b.WriteString(part.text)
			continue
		}
		v, _ := subjectField(d, part.text)
		b.WriteString(v)
	}
	s := b.String()
	if err := validSubject(s); err != nil {
		return "", err
	}
	return s, nil
}

// renderSubject is the subject ev is published on.
func (f *Forwarder) renderSubject(ev event.Event) (string, error) {
	if f.plainSubject != nil {
		return f.plainSubject.render(subjectData(ev))
	}
	return renderSubject(f.subject, subjectData(ev))
}
