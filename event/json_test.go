package event

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// jsonCases are strings that each take a different path of encoding/json's escaping.
var jsonCases = []string{"", "plain", `quote " and \ backslash`, "<b>&amp;</b>", "tab\tnl\ncr\rbs\bff\f",
	"\x00\x01\x1f\x7f", "héllo wörld ✓ 日本", "line\u2028para\u2029end", "bad \xff\xfe utf8 \xe2\x82",
	"emoji 😀 \U0010FFFF", "\u00a0nbsp"}

// TestAppendJSONIsJSONMarshal: the hand-written encoding is byte for byte json.Marshal's,
// for events of every shape, and fails where it fails.
func TestAppendJSONIsJSONMarshal(t *testing.T) {
	zone := time.FixedZone("X", 5*3600+30*60)
	times := []time.Time{{}, time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC),
		time.Date(2026, 1, 2, 3, 4, 5, 123456789, zone), time.Date(1, 1, 1, 0, 0, 0, 1000, time.UTC),
		time.Date(9999, 12, 31, 11, 59, 59, 999999999, time.UTC)}
	check := func(ev Event) {
		t.Helper()
		want, err := json.Marshal(ev)
		require.NoError(t, err)
		got, err := ev.AppendJSON([]byte("prefix"))
		require.NoError(t, err)
		assert.Equal(t, "prefix"+string(want), string(got))
		wantLead, err := json.Marshal(ev.Data)
		require.NoError(t, err)
		gotLead, err := ev.Data.AppendJSON(nil)
		require.NoError(t, err)
		assert.Equal(t, string(wantLead), string(gotLead))
	}
	for i, s := range jsonCases {
		ev := NewCreated(Lead{Chatbot: s, ChatbotName: s, Account: s, Kind: Kind(s), Name: s, Email: s, Phone: s,
			Content: s, SessionID: int64(i) * -7919, URI: s, Count: -i, CreatedAt: times[i%len(times)]})
		ev.Subject, ev.Source, ev.Time = s, s, times[(i+1)%len(times)].In(zone)
		check(ev)
	}
	check(Event{})

	for _, y := range []int{-1, 10000} {
		bad := Event{Time: time.Date(y, 1, 1, 0, 0, 0, 0, time.UTC)}
		_, want := json.Marshal(bad)
		require.Error(t, want)
		_, err := bad.AppendJSON(nil)
		assert.EqualError(t, err, want.Error())
		badLead := Lead{CreatedAt: bad.Time}
		_, err = badLead.AppendJSON(nil)
		assert.Error(t, err)
	}
}

func FuzzAppendJSON(f *testing.F) {
	for _, s := range jsonCases {
		f.Add(s, int64(len(s)), int64(0))
	}
	f.Fuzz(func(t *testing.T, s string, n int64, nanos int64) {
		ev := Event{ID: s, Type: s, Time: time.Unix(n%(1<<35), nanos%1e9).UTC(),
			Data: Lead{Name: s, Content: s + s, SessionID: n, Count: int(nanos), CreatedAt: time.Unix(0, nanos).UTC()}}
		want, wantErr := json.Marshal(ev)
		got, err := ev.AppendJSON(nil)
		if wantErr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	})
}
