package event_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

func sample(t *testing.T, createTime string) event.Lead {
	t.Helper()
	at, err := time.Parse(time.RFC3339Nano, createTime)
	require.NoError(t, err)
	return event.Lead{
		Chatbot: "3254a9d0424c4806b9ea3d0763ccfxxx", ChatbotName: "Main site", Account: "client-a",
		Kind: event.KindAppointment, Name: "test444", Email: "test444@qq.com", Content: "Please share anything",
		SessionID: 31313, URI: "www.xxx.com", Count: 2, CreatedAt: at,
	}
}

func TestKeyIsTheSameInstantWhateverTheOffsetAndPrecision(t *testing.T) {
	want := "3254a9d0424c4806b9ea3d0763ccfxxx|Appointment|31313|2023-11-22T03:13:44.054019000Z"
	for _, ct := range []string{
		"2023-11-21T19:13:44.054019-08:00",
		"2023-11-22T03:13:44.054019Z",
		"2023-11-22T03:13:44.054019000Z",
		"2023-11-22T08:43:44.054019+05:30",
	} {
		l := sample(t, ct)
		assert.Equal(t, want, l.Key(), ct)
		sum := sha256.Sum256([]byte(want))
		assert.Equal(t, hex.EncodeToString(sum[:]), l.ID(), "the event id is the key's SHA-256")
	}
	// Any part of the identity changes the id.
	base := sample(t, "2023-11-22T03:13:44.054019Z")
	other := base
	other.SessionID++
	assert.NotEqual(t, base.ID(), other.ID())
	other = base
	other.Kind = event.KindLead
	assert.NotEqual(t, base.ID(), other.ID())
	other = base
	other.CreatedAt = other.CreatedAt.Add(time.Nanosecond)
	assert.NotEqual(t, base.ID(), other.ID())
	// Content is not identity.
	other = base
	other.Count, other.Content = 3, "more"
	assert.Equal(t, base.ID(), other.ID())
	assert.NotEqual(t, base.ContentHash(), other.ContentHash())
	// Nor is the account: a chatbot moved to another account keeps its records' ids.
	other = base
	other.Account = "reseller"
	assert.Equal(t, base.ID(), other.ID())
	assert.Equal(t, base.ContentHash(), other.ContentHash())
}

func TestCreatedEventIsTheDesignedCloudEvent(t *testing.T) {
	ev := event.NewCreated(sample(t, "2023-11-21T19:13:44.054019-08:00"))
	b, err := json.Marshal(ev)
	require.NoError(t, err)
	var got map[string]any
	require.NoError(t, json.Unmarshal(b, &got))
	assert.Equal(t, map[string]any{
		"specversion": "1.0", "id": ev.Data.ID(), "source": "neoagent/3254a9d0424c4806b9ea3d0763ccfxxx",
		"type": "neoagent.appointment.created", "time": "2023-11-22T03:13:44.054019Z",
		"datacontenttype": "application/json", "subject": "31313",
		"data": map[string]any{
			"chatbot": "3254a9d0424c4806b9ea3d0763ccfxxx", "chatbot_name": "Main site", "account": "client-a",
			"kind": "appointment",
			"name": "test444", "email": "test444@qq.com", "phone": "", "content": "Please share anything",
			"session_id": 31313.0, "uri": "www.xxx.com", "count": 2.0, "created_at": "2023-11-22T03:13:44.054019Z",
		},
	}, got)
	assert.Equal(t, event.ActionCreated, ev.Action())
	assert.Equal(t, event.KindAppointment, ev.Kind())
}

func TestUpdatedEventHasItsOwnStableID(t *testing.T) {
	l := sample(t, "2023-11-22T03:13:44.054019Z")
	seen := time.Date(2023, 11, 23, 0, 0, 0, 0, time.UTC)
	up := event.NewUpdated(l, seen)
	assert.Equal(t, "neoagent.appointment.updated", up.Type)
	assert.Equal(t, event.ActionUpdated, up.Action())
	assert.NotEqual(t, l.ID(), up.ID)
	assert.Equal(t, up.ID, event.NewUpdated(l, seen.Add(time.Hour)).ID, "the same change gives the same id")
	l.Count++
	assert.NotEqual(t, up.ID, event.NewUpdated(l, seen).ID, "another change gives another id")
	assert.Equal(t, seen, up.Time)
}

func TestParseKind(t *testing.T) {
	for in, want := range map[string]event.Kind{"Lead": event.KindLead, "appointment": event.KindAppointment, " LEAD ": event.KindLead} {
		k, err := event.ParseKind(in)
		require.NoError(t, err)
		assert.Equal(t, want, k)
	}
	_, err := event.ParseKind("Booking")
	assert.ErrorContains(t, err, `"Booking"`)
}

// TestIdentityAndContentHashAreStable pins a record's key, id and content hash to the
// values earlier versions stored: a store keeps them, so any change would make every
// record seen before new or updated again.
func TestIdentityAndContentHashAreStable(t *testing.T) {
	l := event.Lead{Chatbot: "bot-1", Kind: event.KindAppointment, SessionID: 42, Count: 3, Content: "hi\x00there",
		Name: "N", Email: "e@x", Phone: "+1", CreatedAt: time.Date(2023, 11, 22, 3, 13, 44, 54019000, time.UTC)}
	assert.Equal(t, "bot-1|Appointment|42|2023-11-22T03:13:44.054019000Z", l.Key())
	assert.Equal(t, "c6da6dce1685875b3d6a70db5278b38135f9eba18dec3fc0bf28b37d571908da", l.ID())
	assert.Equal(t, "e2a57163f0c4c6340bfeea4a0996ff170abc6cc8a8ab01af1b98cbd07d6b44fa", l.ContentHash())
	sum := l.ContentSum()
	assert.Equal(t, l.ContentHash(), hex.EncodeToString(sum[:]))
}
