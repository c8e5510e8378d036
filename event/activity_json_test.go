package event

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestAttemptAppendJSONIsJSONMarshal: the activity log's hand-written attempt JSON is
// byte for byte json.Marshal's, optional fields set or not, and fails where it fails.
func TestAttemptAppendJSONIsJSONMarshal(t *testing.T) {
	zone := time.FixedZone("X", -(3*3600 + 30*60))
	for i, s := range jsonCases {
		for _, empty := range []bool{false, true} {
			a := Attempt{At: time.Date(2026, 11, 30, 12, 0, i, i*1001, zone), Forwarder: s, EventID: s, Chatbot: s,
				Kind: Kind(s), Verdict: Verdict(i % 4), Attempt: i, Took: time.Duration(i) * time.Millisecond,
				InOutbox: -time.Duration(i), Error: s, Account: s}
			if empty {
				a.Took, a.Error, a.Account = 0, "", ""
			}
			want, err := json.Marshal(a)
			require.NoError(t, err)
			got, err := a.AppendJSON([]byte("prefix"))
			require.NoError(t, err)
			assert.Equal(t, "prefix"+string(want), string(got))
		}
	}
	want, err := json.Marshal(Attempt{})
	require.NoError(t, err)
	got, err := Attempt{}.AppendJSON(nil)
	require.NoError(t, err)
	assert.Equal(t, string(want), string(got))

	bad := Attempt{At: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}
	_, wantErr := json.Marshal(bad)
	require.Error(t, wantErr)
	_, err = bad.AppendJSON(nil)
	assert.EqualError(t, err, wantErr.Error())
}

func FuzzAttemptAppendJSON(f *testing.F) {
	for _, s := range jsonCases {
		f.Add(s, int64(len(s)), int64(0), 1)
	}
	f.Fuzz(func(t *testing.T, s string, n int64, nanos int64, verdict int) {
		a := Attempt{At: time.Unix(n%(1<<35), nanos%1e9).UTC(), Forwarder: s, EventID: s + s, Chatbot: s,
			Kind: Kind(s), Verdict: Verdict(verdict), Attempt: int(n), Took: time.Duration(nanos),
			InOutbox: time.Duration(n), Error: s, Account: s[len(s)/2:]}
		want, wantErr := json.Marshal(a)
		got, err := a.AppendJSON(nil)
		if wantErr != nil {
			require.Error(t, err)
			return
		}
		require.NoError(t, err)
		require.Equal(t, string(want), string(got))
	})
}
