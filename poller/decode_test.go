package poller

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

// FuzzDecode feeds arbitrary bodies to the response decoder. Seeds live in
// testdata/fuzz/FuzzDecode; run with: go test -run '^$' -fuzz FuzzDecode ./poller/
func FuzzDecode(f *testing.F) {
	f.Add([]byte(docExample))
	f.Add([]byte(okBody(docLead, docAppointment)))
	c := NewClient("http://user:pw@127.0.0.1:1", testKey, time.Second)
	bot := Chatbot{Serial: "fuzz-bot", Name: "Fuzz"}
	f.Fuzz(func(t *testing.T, body []byte) {
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
		}
		last := -1
		for _, s := range page.Skipped {
			require.Error(t, s.Err)
			require.Greater(t, s.Index, last, "skipped records are reported in order")
			last = s.Index
		}
	})
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
	bot := Chatbot{Serial: mainSite.Serial, Name: mainSite.Name}
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
