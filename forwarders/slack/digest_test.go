package slack

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

func TestBatchSize(t *testing.T) {
	on := mustNew(t, Config{Name: "sales", WebhookURL: "https://hooks.example.com/x", Digest: Digest{Threshold: 5}}, nil)
	off := mustNew(t, Config{Name: "sales", WebhookURL: "https://hooks.example.com/x"}, nil)
	for due, want := range map[int]int{1: 1, 5: 1, 6: 6, 20: 20, 21: 11, 40: 20, 45: 15, 200: 20} {
		assert.Equal(t, want, on.BatchSize(due), "%d due", due)
		assert.Equal(t, 1, off.BatchSize(due), "digests off, %d due", due)
	}
}

func TestCheckDigest(t *testing.T) {
	cfg := Config{Name: "sales", WebhookURL: "https://hooks.example.com/x", Digest: Digest{Threshold: -1, MaxItems: 46}}
	assert.ElementsMatch(t, []forwarders.SettingError{
		{Key: "digest.threshold", Msg: "must be between 0 (digests off) and 100, got -1"},
		{Key: "digest.max_items", Msg: "must be between 1 and 45 (a Slack message holds 50 blocks), got 46"},
	}, Check(cfg))
	cfg.Digest = Digest{Threshold: 101}
	assert.Equal(t, []forwarders.SettingError{{Key: "digest.threshold", Msg: "must be between 0 (digests off) and 100, got 101"}}, Check(cfg))
	cfg.Digest = Digest{Threshold: MaxDigestThreshold, MaxItems: MaxDigestItems}
	assert.Empty(t, Check(cfg))
}

func TestBuildDigest(t *testing.T) {
	ada := sampleLead()
	evil := sampleLead()
	evil.Kind = event.KindLead
	evil.Name = "<!channel> *Bob* & <https://evil.example|click>"
	evil.ChatbotName = "Shop\n<!here>"
	anonymous := sampleLead()
	anonymous.Name, anonymous.Email = "", ""
	evs := []event.Event{event.NewCreated(ada), event.NewCreated(evil), event.NewCreated(anonymous)}

	berlin, err := time.LoadLocation("Europe/Berlin")
	require.NoError(t, err)
	msg := decode(t, BuildDigest(evs, forwarders.Rest{Due: 180}, berlin))
	assert.Equal(t, "📬 3 new leads and appointments", msg.header())
	assert.Equal(t, []string{
		"📅 Ada Lovelace · appointment · Main site · Wed 22 Nov 2023 04:13 CET",
		"🙋 &lt;!channel&gt; *Bob* &amp; &lt;https://evil.example|click&gt; · lead · Shop &lt;!here&gt; · Wed 22 Nov 2023 04:13 CET",
		"📅 +1 555 0100 · appointment · Main site · Wed 22 Nov 2023 04:13 CET",
	}, msg.sections())
	assert.Equal(t, "…and 180 more to follow", msg.context())
	ids := []string{evs[0].ID, evs[1].ID, evs[2].ID}
	assert.Equal(t, ids, msg.listedIDs(), "the ids of the events it names, in order")
	assert.Equal(t, MetadataEventType, msg.Metadata.EventType)
	assert.Equal(t, ids, msg.Metadata.EventPayload.IDs)
	assert.Equal(t, "📬 3 new leads and appointments …and 180 more to follow", msg.Text)
	for _, personal := range []string{"Ada", "Bob", "Shop", "555"} { // the notification text carries nobody's data
		assert.NotContains(t, msg.Text, personal)
	}
	for _, o := range msg.textObjects() {
		if o["type"] == "mrkdwn" {
			assert.Equal(t, true, o["verbatim"], "Slack must not turn text into links by itself")
		}
	}

	one := decode(t, BuildDigest(evs[:1], forwarders.Rest{Due: 3, More: true}, nil))
	assert.Equal(t, "📅 1 new appointment", one.header())
	assert.Equal(t, "…and 3+ more to follow", one.context())
	upd := event.NewUpdated(ada, ada.CreatedAt)
	updated := decode(t, BuildDigest([]event.Event{upd, upd}, forwarders.Rest{}, nil))
	assert.Equal(t, "📅 2 appointments", updated.header())
	assert.Equal(t, "📅 Ada Lovelace · appointment updated · Main site · Wed 22 Nov 2023 03:13 UTC", updated.sections()[0])
	assert.Len(t, updated.blocksOf("context"), 1, "nothing follows: only the ids")
	assert.Equal(t, []string{upd.ID, upd.ID}, updated.listedIDs())
}

// A digest of MaxDigestItems records stays within Slack's limits (50 blocks, 10 elements
// in a context block, 3000 characters a text) and names every id, in its context line
// and its metadata.
func TestBuildDigestOfMostItemsFitsSlack(t *testing.T) {
	evs := make([]event.Event, MaxDigestItems)
	var ids []string
	for i := range evs {
		l := sampleLead()
		l.SessionID = int64(5000 + i)
		evs[i] = event.NewCreated(l)
		ids = append(ids, evs[i].ID)
	}
	msg := decode(t, BuildDigest(evs, forwarders.Rest{Due: 1000, More: true}, nil))
	assert.LessOrEqual(t, len(msg.Blocks), 50)
	for _, c := range msg.blocksOf("context") {
		assert.LessOrEqual(t, len(c["elements"].([]any)), 10)
	}
	for _, o := range msg.textObjects() {
		assert.LessOrEqual(t, len(textOf(o)), maxSection)
	}
	assert.Equal(t, ids, msg.listedIDs())
	assert.Equal(t, ids, msg.Metadata.EventPayload.IDs)
}

// burst takes n appointments into a new store whose outbox routes them to "sales".
func burst(t *testing.T, n int) *dedupe.Store {
	t.Helper()
	st := leadtest.OpenStore(t, dedupe.Options{Retention: 90 * 24 * time.Hour, Initial: dedupe.InitialEmit,
		Route: leadtest.RouteTo("sales")})
	_, err := st.Ingest(t.Context(), "bot1", burstLeads(n))
	require.NoError(t, err)
	return st
}

// burstLeads are n appointments of chatbot bot1, sessions from 1000.
func burstLeads(n int) []event.Lead {
	leads := make([]event.Lead, n)
	for i := range leads {
		leads[i] = leadtest.Lead("bot1", event.KindAppointment, int64(1000+i), time.Date(2026, 11, 20, 10, 0, i, 0, time.UTC))
	}
	return leads
}

// drainTo delivers st's outbox through f with fast retries.
func drainTo(t *testing.T, st *dedupe.Store, f forwarders.Forwarder) {
	t.Helper()
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: f,
		Retry: forwarders.RetryPolicy{InitialInterval: 20 * time.Millisecond, MaxInterval: 100 * time.Millisecond, MaxElapsed: time.Minute}}}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Drain(ctx))
	require.NoError(t, ctx.Err(), "drain did not finish")
}

// named is the sessions of the people a digest's lines name ("person 1007 · ...").
var named = regexp.MustCompile(`person (\d+) ·`)

// sessionsIn returns the sessions named by the digest lines of texts.
func sessionsIn(texts []string) []int {
	var out []int
	for _, s := range texts {
		for _, m := range named.FindAllStringSubmatch(s, -1) {
			n, _ := strconv.Atoi(m[1])
			out = append(out, n)
		}
	}
	return out
}

func sessions(from, n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = from + i
	}
	return out
}

func requireOutboxEmpty(t *testing.T, st *dedupe.Store) {
	t.Helper()
	depth, err := st.Depth(t.Context())
	require.NoError(t, err)
	require.Zero(t, depth["sales"], "entries left in the outbox")
}

func TestDigestBurstThroughTheDispatcher(t *testing.T) {
	slack := leadtest.NewSlack(t)
	f := mustNew(t, Config{Name: "sales", WebhookURL: slack.URL(), RateLimit: time.Millisecond,
		Digest: Digest{Threshold: DefaultDigestThreshold}}, nil)
	st := burst(t, 40)
	drainTo(t, st, f)

	msgs := slack.Messages()
	require.NotEmpty(t, msgs)
	assert.LessOrEqual(t, len(msgs), 3, "a burst of 40 is a few digests")
	var texts, ids []string
	for _, m := range msgs {
		raw, err := json.Marshal(m)
		require.NoError(t, err)
		texts = append(texts, string(raw))
		assert.Contains(t, m["text"], "new appointments", "every message is a digest")
		var d struct {
			Metadata metadata `json:"metadata"`
		}
		require.NoError(t, json.Unmarshal(raw, &d))
		assert.Equal(t, MetadataEventType, d.Metadata.EventType)
		ids = append(ids, d.Metadata.EventPayload.IDs...)
	}
	assert.ElementsMatch(t, sessions(1000, 40), sessionsIn(texts), "every appointment named exactly once")
	assert.ElementsMatch(t, burstIDs(40), ids, "every appointment's id in exactly one digest's metadata")
	requireOutboxEmpty(t, st)
}

// burstIDs are the event ids of burst's n appointments.
func burstIDs(n int) []string {
	var out []string
	for _, l := range burstLeads(n) {
		out = append(out, l.ID())
	}
	return out
}

// A threshold above max_items: the burst of 11 is three digests (4, 4, 3), its last
// part not single messages although fewer than the threshold are left once the first
// digests are out.
func TestDigestBurstStaysDigestsToTheEnd(t *testing.T) {
	slack := leadtest.NewSlack(t)
	f := mustNew(t, Config{Name: "sales", WebhookURL: slack.URL(), RateLimit: time.Millisecond,
		Digest: Digest{Threshold: 10, MaxItems: 4}}, nil)
	st := burst(t, 11)
	drainTo(t, st, f)

	msgs := slack.Messages()
	var texts []string
	for _, m := range msgs {
		raw, err := json.Marshal(m)
		require.NoError(t, err)
		texts = append(texts, string(raw))
	}
	assert.Equal(t, 3, len(msgs), "digests: %v", texts)
	assert.ElementsMatch(t, sessions(1000, 11), sessionsIn(texts))
	requireOutboxEmpty(t, st)
}

func TestDigestThresholdKeepsSingleMessages(t *testing.T) {
	for _, n := range []int{1, DefaultDigestThreshold} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			slack := leadtest.NewSlack(t)
			f := mustNew(t, Config{Name: "sales", WebhookURL: slack.URL(), RateLimit: time.Millisecond,
				Digest: Digest{Threshold: DefaultDigestThreshold}}, nil)
			st := burst(t, n)
			drainTo(t, st, f)

			msgs := slack.Messages()
			require.Equal(t, n, len(msgs), "one message per appointment")
			for _, m := range msgs {
				assert.True(t, strings.HasPrefix(m["text"].(string), "New appointment from person "), m["text"])
			}
			requireOutboxEmpty(t, st)
		})
	}
}

func TestDigestRefusedThenTaken(t *testing.T) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) {
			fs := newFakeSlack(t, reply{status: http.StatusInternalServerError, body: "internal_error"})
			f := m.new(t, fs.srv.URL, func(c *Config) { c.Digest = Digest{Threshold: DefaultDigestThreshold} })
			st := burst(t, 8)
			drainTo(t, st, f)

			got := fs.received()
			require.Equal(t, 2, len(got), "the refused digest, then the same digest again")
			for _, p := range got {
				assert.Equal(t, "📅 8 new appointments", p.msg.header())
				assert.Equal(t, sessions(1000, 8), sessionsIn(p.msg.sections()))
				// The repeat is told apart by its ids, in the context line and the metadata.
				assert.Equal(t, burstIDs(8), p.msg.listedIDs())
				assert.Equal(t, MetadataEventType, p.msg.Metadata.EventType)
				assert.Equal(t, burstIDs(8), p.msg.Metadata.EventPayload.IDs)
			}
			requireOutboxEmpty(t, st)
			dead, err := st.DeadLetters(t.Context(), "sales")
			require.NoError(t, err)
			assert.Empty(t, dead)
		})
	}
}

func TestDigestPermanentRefusalDeadLettersEveryNamedEntry(t *testing.T) {
	fs := newFakeSlack(t, reply{status: http.StatusNotFound, body: "no_service"})
	f := modes[0].new(t, fs.srv.URL, func(c *Config) { c.Digest = Digest{Threshold: DefaultDigestThreshold} })
	st := burst(t, 8)
	drainTo(t, st, f)

	require.Equal(t, 1, len(fs.received()), "a permanent refusal is not retried")
	dead, err := st.DeadLetters(t.Context(), "sales")
	require.NoError(t, err)
	require.Len(t, dead, 8)
	for _, dl := range dead {
		assert.Equal(t, 1, dl.Attempts)
		assert.Contains(t, dl.LastError, "no_service")
		assert.NotContains(t, dl.LastError, "SECRET")
	}
	requireOutboxEmpty(t, st)
}

// An archived channel refusing a digest pauses the forwarder once and keeps every entry
// the digest named, with the failed attempt recorded and nothing dead-lettered.
func TestDigestToAnArchivedChannelPauses(t *testing.T) {
	fs := newFakeSlack(t, reply{status: http.StatusGone, body: "channel_is_archived"})
	f := modes[0].new(t, fs.srv.URL, func(c *Config) { c.Digest = Digest{Threshold: DefaultDigestThreshold} })
	st := burst(t, 8)
	var results []forwarders.Result
	d := &forwarders.Dispatcher{Outbox: st, Routes: []forwarders.Route{{Forwarder: f}},
		OnResult: func(_ event.Delivery, r forwarders.Result, _ time.Duration, _ error) { results = append(results, r) }}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	require.NoError(t, d.Drain(ctx), "a paused lane is drained")
	require.NoError(t, ctx.Err())

	assert.Equal(t, 1, len(fs.received()))
	assert.Equal(t, []forwarders.Result{forwarders.ResultPaused}, results, "reported once")
	pending := leadtest.Pending(t, st, "sales")
	require.Len(t, pending, 8)
	for _, p := range pending {
		assert.Equal(t, 1, p.Attempts)
		assert.Contains(t, p.LastError, "channel_is_archived")
	}
	dead, err := st.DeadLetters(t.Context(), "sales")
	require.NoError(t, err)
	assert.Empty(t, dead)
}
