package nats

import (
	"strings"
	"testing"

	"github.com/leadbridge/leadbridge/event"
)

// FuzzSubject renders arbitrary subject templates over arbitrary chatbot names: parsing
// and rendering never panic, a rendering either fails or is a valid literal subject, and
// the token function makes any name safe. A template of text and fields renders the same
// by parts as by text/template.
func FuzzSubject(f *testing.F) {
	f.Add(DefaultSubject, "Main site", "3254a9d0424c4806b9ea3d0763ccf000")
	f.Add("crm.{{token .ChatbotName}}.{{.Kind}}", "a.b *>\tc", "x")
	f.Add("{{.ChatbotName}}", "", "")
	f.Add("neoagent.{{.Chatbot}}.{{.Action}}.{{.SessionID}}", "n", "s.s")
	f.Add("{{if .Chatbot}}a{{else}}b{{end}}.{{.ID}}", "n", "")
	f.Fuzz(func(t *testing.T, text, name, serial string) {
		d := sampleData
		d.ChatbotName, d.Chatbot = name, serial
		if tmpl, _, err := parseSubject(text); err == nil {
			s, err := renderSubject(tmpl, d)
			if parts := plainParts(tmpl); parts != nil {
				if got, gotErr := parts.render(d); got != s || (gotErr == nil) != (err == nil) {
					t.Fatalf("%q renders %q, %v by parts, %q, %v by text/template", text, got, gotErr, s, err)
				}
			}
			if err == nil {
				if verr := validSubject(s); verr != nil {
					t.Fatalf("rendered an invalid subject %q: %v", s, verr)
				}
				if strings.ContainsAny(s, " \t\r\n") {
					t.Fatalf("subject %q holds whitespace", s)
				}
			}
		}
		tmpl, _, err := parseSubject("crm.{{token .ChatbotName}}.{{.Kind}}")
		if err != nil {
			t.Fatal(err)
		}
		d.Kind = event.KindAppointment
		if _, err := renderSubject(tmpl, d); err != nil {
			t.Fatalf("token did not make %q safe: %v", name, err)
		}
	})
}
