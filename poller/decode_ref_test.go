package poller

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

// decodeWhole is the decoder as it was before responses were streamed: the whole body
// unmarshalled at once. It is the oracle the streaming decoder must agree with.
func (c *Client) decodeWhole(bot event.Chatbot, body []byte) (Page, error) {
	var resp apiResponse
	if err := json.Unmarshal(body, &resp); err != nil {
		return Page{}, &DecodeError{Serial: bot.Serial, Err: err}
	}
	if refused(resp.Code) {
		resp.Success = new(false)
	}
	if resp.Success != nil && !*resp.Success {
		code, _ := parseInt(resp.Code, 32)
		return Page{}, &APIError{Serial: bot.Serial, Code: int(code), Message: c.apiMessage(resp.Message)}
	}
	switch _, codeErr := parseInt(resp.Code, 32); {
	case codeErr != nil:
		return Page{}, &DecodeError{Serial: bot.Serial, Err: fmt.Errorf("field Code: %w", codeErr)}
	case resp.Success == nil && resp.Data == nil:
		return Page{}, &DecodeError{Serial: bot.Serial, Err: errors.New("neither Success nor Data present: not a LeadList response")}
	case resp.Data == nil:
		return Page{}, &DecodeError{Serial: bot.Serial, Err: errors.New("field Data: missing or null, want an array (empty when there are no records)")}
	}
	page := Page{Leads: make([]event.Lead, 0, len(resp.Data))}
	for i, raw := range resp.Data {
		l, warns, err := decodeRecord(raw)
		if err != nil {
			page.Skipped = append(page.Skipped, recordError(i, raw, err))
			continue
		}
		for _, w := range warns {
			page.Warned = append(page.Warned, recordError(i, raw, w))
		}
		l.Chatbot, l.ChatbotName = bot.Serial, bot.Name
		page.Leads = append(page.Leads, l)
	}
	return page, nil
}

// requireSameAsWhole checks that the streaming decoder reads body as decodeWhole does:
// the same error kind (and, for a type error or a refusal, the same error), or the same
// page.
func requireSameAsWhole(t *testing.T, c *Client, bot event.Chatbot, body []byte) {
	t.Helper()
	want, wantErr := c.decodeWhole(bot, body)
	got, err := c.decode(bot, body)
	if wantErr != nil {
		require.Error(t, err, "the whole-body decoder fails with %v", wantErr)
		var wde *DecodeError
		if errors.As(wantErr, &wde) {
			var de *DecodeError
			require.ErrorAs(t, err, &de, "want a DecodeError like %v", wantErr)
			var se *json.SyntaxError
			if !errors.As(wde.Err, &se) {
				assert.ErrorContains(t, de.Err, wde.Err.Error())
			}
			assert.Equal(t, len(body), de.Size)
			return
		}
		assert.Equal(t, wantErr, err)
		return
	}
	require.NoError(t, err)
	assert.Equal(t, want, got)
}

func TestStreamingDecodeAgreesWithWholeBody(t *testing.T) {
	c := NewClient("http://127.0.0.1:1", testKey, time.Second)
	rec := docLead
	for _, body := range []string{
		okBody(docLead, docAppointment),
		docExample,
		// The envelope after Data, as the API sends it, and repeated fields: the last counts.
		`{"Data":[` + rec + `],"Success":false,"Code":500,"Message":"serial_not_found"}`,
		`{"Data":[` + rec + `],"Success":true,"Code":200,"Success":false}`,
		`{"Success":false,"Data":[` + rec + `],"Success":true}`,
		`{"Data":[` + rec + `],"Data":[]}`,
		`{"Data":[],"Data":[` + rec + `,` + rec + `],"Success":true}`,
		`{"Data":[` + rec + `],"Data":null,"Success":true}`,
		`{"data":[` + rec + `],"SUCCESS":true,"code":"200"}`,
		`{"D\u0061ta":[` + rec + `],"Success":true}`,
		// Type errors, wherever they stand.
		`{"Data":{"a":[1,{}]},"Success":true}`,
		`{"Data":"x","Success":true}`, `{"Data":5,"Success":true}`, `{"Data":true}`,
		`{"Success":"yes","Data":[]}`, `{"Data":[],"Message":7,"Success":true}`,
		`[]`, `[1,{"a":2}]`, `"text"`, `12`, `true`, `null`,
		// Syntax errors after Data: the page fails, nothing of it is taken.
		`{"Data":[` + rec + `],"Success":true`, `{"Data":[` + rec + `],"Success":true}x`,
		`{"Data":[` + rec + `],"Success":true}{}`, `{"Data":[` + rec + `,],"Success":true}`,
		`{"Data":[` + rec + `],"Success":tru}`, `{"Data":[` + rec + `] "Success":true}`,
		``, `   `, `{`, `<html>oops</html>`,
		// Unknown fields of any shape are skipped.
		`{"x":[{"y":1e700}],"Data":[],"Success":true}`,
		`{"Version":{"a":[1,2,{"b":null}]},"Extra":[[]],"Data":[` + rec + `],"Success":true,"Code":200}`,
	} {
		t.Run(body, func(t *testing.T) { requireSameAsWhole(t, c, mainSite, []byte(body)) })
	}
}
