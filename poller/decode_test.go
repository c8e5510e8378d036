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

// FuzzDecode feeds arbitrary bodies to the response decoder, which must read each as
// the whole-body decoder it replaced does. Seeds live in
// testdata/fuzz/FuzzDecode; run with: go test -run '^$' -fuzz FuzzDecode ./poller/
func FuzzDecode(f *testing.F) {
	f.Add([]byte(docExample))
	f.Add([]byte(okBody(docLead, docAppointment)))
	c := NewClient("http://user:pw@127.0.0.1:1", testKey, time.Second)
	bot := event.Chatbot{Serial: "fuzz-bot", Name: "Fuzz"}
	f.Fuzz(func(t *testing.T, body []byte) {
		requireSameAsWhole(t, c, bot, body)
		page, err := c.decode(bot, body)
		if err != nil {
			var de *DecodeError
			var ae *APIError
			require.True(t, errors.As(err, &de) || errors.As(err, &ae), "unexpected error type %T", err)
			require.Contains(t, err.Error(), bot.Serial)
			require.NotContains(t, err.Error(), testKey)
			require.NotContains(t, err.Error(), "pw@")
			require.Empty(t, page.Leads)
			require.Empty(t, page.Skipped)
			return
		}
		for _, l := range page.Leads {
			require.Contains(t, []event.Kind{event.KindLead, event.KindAppointment}, l.Kind)
			require.False(t, l.CreatedAt.IsZero())
			require.Same(t, time.UTC, l.CreatedAt.Location())
			require.Equal(t, bot.Serial, l.Chatbot)
			require.Equal(t, bot.Name, l.ChatbotName)
			requireStorable(t, l)
		}
		last := -1
		for _, s := range page.Skipped {
			require.Error(t, s.Err)
			require.NotEmpty(t, s.Field)
			require.Greater(t, s.Index, last, "skipped records are reported in order")
			last = s.Index
		}
		for _, w := range page.Warned {
			require.Error(t, w.Err)
			require.Contains(t, w.Error(), "field "+w.Field+": ")
		}
	})
}

// requireStorable checks what the store does with an accepted record: its created and
// updated events, inside an outbox entry, encode as JSON, and decode back to the same
// record identity.
func requireStorable(t *testing.T, l event.Lead) {
	t.Helper()
	for _, ev := range []event.Event{event.NewCreated(l), event.NewUpdated(l, time.Now())} {
		b, err := json.Marshal(event.Delivery{Forwarder: "f", Event: ev, Enqueued: time.Now()})
		require.NoError(t, err, "an accepted record must encode as an outbox entry")
		var back event.Delivery
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, l.ID(), back.Event.Data.ID(), "the entry decodes to the same record")
	}
}

// record is a LeadList record with the given CreateTime and SessionID, as raw JSON.
func record(createTime, sessionID string) string {
	return `{"Type":"Lead","Name":"Jane Roe","Email":"jane@example.com","CreateTime":` + createTime +
		`,"SessionID":` + sessionID + `,"Count":1}`
}

func TestDecodeCreateTimeOutsideEncodableYears(t *testing.T) {
	cases := []struct {
		createTime string
		wantErr    string // "" when the record is taken
	}{
		{`"9999-12-31T23:59:59-23:59"`, "field CreateTime: outside the years 1 to 9999 in UTC"},
		{`"0001-01-01T00:30:00+01:00"`, "field CreateTime: outside the years 1 to 9999 in UTC"},
		{`"9999-12-31T23:59:59+23:59"`, ""},
		{`"9999-12-31T23:59:59.999999999Z"`, ""},
		{`"0001-01-01T00:00:01Z"`, ""},
		{`"0001-01-01T00:30:00-01:00"`, ""},
	}
	c := NewClient("http://127.0.0.1:1", testKey, time.Second)
	for _, tc := range cases {
		t.Run(tc.createTime, func(t *testing.T) {
			page, err := c.decode(mainSite, []byte(okBody(record(tc.createTime, "1"), record(`"2023-11-24T02:36:21Z"`, "2"))))
			require.NoError(t, err, "no record may fail the page")
			if tc.wantErr == "" {
				require.Len(t, page.Leads, 2)
				require.Empty(t, page.Skipped)
				requireStorable(t, page.Leads[0])
				return
			}
			require.Len(t, page.Leads, 1, "the rest of the page is taken")
			assert.Equal(t, int64(2), page.Leads[0].SessionID)
			require.Len(t, page.Skipped, 1)
			assert.Equal(t, 0, page.Skipped[0].Index)
			assert.Equal(t, "CreateTime", page.Skipped[0].Field)
			assert.ErrorContains(t, page.Skipped[0], tc.wantErr)
		})
	}
}

func TestDecodeIntegersExactly(t *testing.T) {
	const big = int64(9007199254740993) // 2^53+1: float64 rounds it to 2^53
	cases := []struct {
		raw     string
		want    int64
		wantErr string
	}{
		{`9007199254740993`, big, ""},
		{`9007199254740993.0`, big, ""},
		{`9007199254740993.000`, big, ""},
		{`"9007199254740993"`, big, ""},
		{`" 9007199254740993.00 "`, big, ""},
		{`9.007199254740993e15`, big, ""},
		{`90071992547409930E-1`, big, ""},
		{`"+9007199254740993"`, big, ""},
		{`9223372036854775807`, 9223372036854775807, ""},
		{`-9223372036854775808`, -9223372036854775808, ""},
		{`-0`, 0, ""},
		{`0e999999999999`, 0, ""},
		{`0.000`, 0, ""},
		{`""`, 0, ""},
		{`null`, 0, ""},
		{`"5."`, 5, ""},
		{`".5e1"`, 5, ""},
		{`"00012"`, 12, ""},
		{`9007199254740993.5`, 0, "not a whole number"},
		{`1e-400`, 0, "not a whole number"},
		{`1e-99999999999999`, 0, "not a whole number"},
		{`0.5`, 0, "not a whole number"},
		{`9223372036854775808`, 0, "out of range"},
		{`-9223372036854775809`, 0, "out of range"},
		{`1e19`, 0, "out of range"},
		{`1e99999999999999`, 0, "out of range"},
		{`"0x10"`, 0, "want an integer"},
		{`"1_000"`, 0, "want an integer"},
		{`"NaN"`, 0, "want an integer"},
		{`"Inf"`, 0, "want an integer"},
		{`"1e"`, 0, "want an integer"},
		{`"-"`, 0, "want an integer"},
		{`"."`, 0, "want an integer"},
		{`true`, 0, "want an integer"},
		{`[1]`, 0, "want an integer"},
		{`{"n":1}`, 0, "want an integer"},
	}
	for _, tc := range cases {
		t.Run(tc.raw, func(t *testing.T) {
			l, _, err := decodeRecord(json.RawMessage(record(`"2023-11-24T02:36:21Z"`, tc.raw)))
			if tc.wantErr != "" {
				assert.ErrorContains(t, err, "field SessionID: "+tc.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, l.SessionID)
		})
	}
	// The same record written either way is the same record.
	a, _, err := decodeRecord(json.RawMessage(record(`"2023-11-24T02:36:21Z"`, `9007199254740993`)))
	require.NoError(t, err)
	b, _, err := decodeRecord(json.RawMessage(record(`"2023-11-24T02:36:21Z"`, `9007199254740993.0`)))
	require.NoError(t, err)
	assert.Equal(t, a.ID(), b.ID())
}

func TestDecodeKeepsRecordWithBadCount(t *testing.T) {
	for _, count := range []string{`true`, `2.5`, `"two"`, `1e30`, `{"n":2}`, `[2]`} {
		t.Run(count, func(t *testing.T) {
			raw := `{"Type":"Appointment","Name":"Jane Roe","Email":"jane@example.com","CreateTime":"2023-11-24T02:36:21Z",` +
				`"SessionID":42,"Count":` + count + `}`
			page, err := NewClient("http://127.0.0.1:1", testKey, time.Second).decode(mainSite, []byte(okBody(raw)))
			require.NoError(t, err)
			require.Empty(t, page.Skipped, "Count is not part of the record's identity")
			require.Len(t, page.Leads, 1)
			assert.Zero(t, page.Leads[0].Count)
			assert.Equal(t, "Jane Roe", page.Leads[0].Name)
			assert.Equal(t, int64(42), page.Leads[0].SessionID)
			require.Len(t, page.Warned, 1)
			assert.Equal(t, RecordError{Index: 0, Field: "Count", Err: page.Warned[0].Err, sum: page.Warned[0].sum}, page.Warned[0])
			assert.ErrorContains(t, page.Warned[0], "record 0: field Count: ")
			assert.ErrorContains(t, page.Warned[0], "taken as 0")
			assert.NotContains(t, page.Warned[0].Error(), "Jane")
		})
	}
}

func TestDecodeTextFields(t *testing.T) {
	raw := `{"Type":"Lead","CreateTime":"2023-11-24T02:36:21Z","SessionID":1,` +
		`"Name":["Jane"],"Email":true,"PhoneNumber":5550100,"Content":{"text":"hi"},"URI":"www.xxx.com"}`
	l, warns, err := decodeRecord(json.RawMessage(raw))
	require.NoError(t, err)
	assert.Equal(t, "5550100", l.Phone, "a phone number sent as a JSON number is kept as written")
	assert.Equal(t, "www.xxx.com", l.URI)
	assert.Empty(t, l.Name+l.Email+l.Content)
	var got []string
	for _, w := range warns {
		got = append(got, w.Error())
	}
	assert.Equal(t, []string{
		"field Name: got a JSON array, want a string; left empty",
		"field Email: got a JSON boolean, want a string; left empty",
		"field Content: got a JSON object, want a string; left empty",
	}, got)

	for raw, want := range map[string]string{
		`{"Type":["Lead"],"CreateTime":"2023-11-24T02:36:21Z"}`: "field Type: got a JSON array, want a string",
		`{"Type":7,"CreateTime":"2023-11-24T02:36:21Z"}`:        "field Type: unknown record Type",
		`{"Type":"Lead","CreateTime":{"t":1}}`:                  "field CreateTime: got a JSON object, want a string",
		`{"Type":"Lead","CreateTime":1700793381}`:               "field CreateTime: not a recognised timestamp",
	} {
		_, _, err := decodeRecord(json.RawMessage(raw))
		assert.ErrorContains(t, err, want, raw)
	}
	_, _, err = decodeRecord(json.RawMessage(`{"Type":"jane@example.com","CreateTime":"2023-11-24T02:36:21Z"}`))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "jane", "an unknown Type is not quoted: it may be anything")
}

func TestDecodeEnvelopeThatIsNoPage(t *testing.T) {
	const rec = `{"Type":"Lead","CreateTime":"2023-11-24T02:36:21Z","SessionID":1}`
	cases := []struct {
		body     string
		wantCode int    // for an *APIError
		wantErr  string // for a *DecodeError
	}{
		{body: `{"Success":true,"Code":500,"Data":null}`, wantCode: 500},
		{body: `{"Success":true,"Code":"503","Data":[]}`, wantCode: 503},
		{body: `{"Success":true,"Code":404,"Data":[` + rec + `]}`, wantCode: 404},
		{body: `{"Code":401,"Data":[]}`, wantCode: 401},
		{body: `{"Success":true,"Code":0,"Data":[]}`, wantCode: 0},
		{body: `{"Success":true,"Code":199,"Data":[]}`, wantCode: 199},
		{body: `{"Success":true,"Code":300,"Data":[]}`, wantCode: 300},
		{body: `{"Success":true,"Code":"OK","Data":[]}`, wantErr: "field Code: want an integer"},
		{body: `{"Success":true,"Code":200.5,"Data":[]}`, wantErr: "field Code: not a whole number"},
		{body: `{"Success":true,"Code":200,"Data":null}`, wantErr: "field Data: missing or null"},
		{body: `{"Success":true,"Code":200}`, wantErr: "field Data: missing or null"},
		{body: `{"Success":true}`, wantErr: "field Data: missing or null"},
		{body: `{"Code":200}`, wantErr: "not a LeadList response"},
	}
	c := NewClient("http://127.0.0.1:1", testKey, time.Second)
	for _, tc := range cases {
		t.Run(tc.body, func(t *testing.T) {
			page, err := c.decode(mainSite, []byte(tc.body))
			require.Error(t, err, "not a successful poll")
			assert.Empty(t, page.Leads)
			if tc.wantErr != "" {
				var de *DecodeError
				require.ErrorAs(t, err, &de)
				assert.ErrorContains(t, err, tc.wantErr)
				return
			}
			var ae *APIError
			require.ErrorAs(t, err, &ae)
			assert.Equal(t, tc.wantCode, ae.Code)
		})
	}
	for _, body := range []string{
		`{"Success":true,"Code":200,"Data":[]}`, `{"Success":true,"Code":"201","Data":[]}`,
		`{"Success":true,"Data":[]}`, `{"Code":299,"Data":[` + rec + `]}`,
	} {
		_, err := c.decode(mainSite, []byte(body))
		assert.NoError(t, err, body)
	}
}

func BenchmarkDecodePage(b *testing.B) {
	records := make([]string, 1000)
	base := time.Date(2023, 11, 23, 18, 36, 21, 512302000, time.FixedZone("", -8*3600))
	for i := range records {
		kind := "Lead"
		if i%3 == 0 {
			kind = "Appointment"
		}
		records[i] = fmt.Sprintf(`{"Type":%q,"Name":"Visitor %d","Email":"visitor%d@example.com","PhoneNumber":"+1 555 %04d",`+
			`"CreateTime":%q,"Content":"I would like to know more about your pricing plans, please call me back.",`+
			`"SessionID":%d,"URI":"https://www.example.com/pricing","Count":%d}`,
			kind, i, i, i, base.Add(time.Duration(i)*time.Minute).Format(time.RFC3339Nano), 30000+i, i%5)
	}
	body := []byte(okBody(records...))
	c := NewClient("http://127.0.0.1:1", testKey, time.Second)
	bot := event.Chatbot{Serial: mainSite.Serial, Name: mainSite.Name}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		page, err := c.decode(bot, body)
		if err != nil || len(page.Leads) != len(records) {
			b.Fatalf("decoded %d leads, err %v", len(page.Leads), err)
		}
	}
	b.ReportMetric(float64(len(body))/1024, "KiB/page")
}
