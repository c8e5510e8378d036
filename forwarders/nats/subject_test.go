package nats

import (
	"reflect"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

// TestPlainSubjectRendersAsTheTemplate: a template of text and fields renders by
// joining strings to exactly what text/template makes of it, invalid subjects included;
// any other template keeps text/template.
func TestPlainSubjectRendersAsTheTemplate(t *testing.T) {
	datas := []SubjectData{sampleData}
	d := sampleData
	d.ChatbotName, d.Kind, d.Action, d.SessionID = "eu.shop", event.KindAppointment, event.ActionUpdated, -7
	datas = append(datas, d)
	d.ChatbotName = "Main site" // whitespace: invalid wherever it lands
	datas = append(datas, d)
	d.ChatbotName = ""
	datas = append(datas, d)

	for _, text := range []string{"", "fixed.subject", "{{.Type}}", "crm.{{.ChatbotName}}.{{.SessionID}}", "ids.{{.ID}}",
		"{{.Chatbot}}.{{.Kind}}.{{.Action}}", "{{- .Chatbot -}} . {{- .Kind}}", "acct.{{.Account}}.{{.Kind}}"} {
		tmpl, _, err := parseSubject(text)
		require.NoError(t, err, text)
		parts := plainParts(tmpl)
		require.NotNil(t, parts, "%q is plain", text)
		for _, d := range datas {
			want, wantErr := renderSubject(tmpl, d)
			got, err := parts.render(d)
			assert.Equal(t, want, got, "%q over %+v", text, d)
			assert.Equal(t, wantErr, err, "%q over %+v", text, d)
		}
	}
	for _, text := range []string{"crm.{{token .ChatbotName}}", "{{if .Chatbot}}a{{else}}b{{end}}", "{{$x := .Kind}}{{$x}}",
		"{{.Kind | printf \"%s\"}}", "{{\"lit\"}}.x"} {
		tmpl, _, err := parseSubject(text)
		require.NoError(t, err, text)
		assert.Nil(t, plainParts(tmpl), "%q needs text/template", text)
	}
}

// TestPlainSubjectKnowsEveryField: every field of SubjectData renders by parts, so that
// a field added to it cannot silently send its templates back to text/template.
func TestPlainSubjectKnowsEveryField(t *testing.T) {
	for f := range reflect.TypeFor[SubjectData]().Fields() {
		_, known := subjectField(sampleData, f.Name)
		assert.True(t, known, "subjectField does not know SubjectData.%s", f.Name)
	}
}
