package natsstore_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// limitOutbox makes the outbox stream of the default prefix refuse messages past max
// (0: no limit), as a full stream or disk would.
func limitOutbox(t *testing.T, js jetstream.JetStream, max int64) {
	t.Helper()
	st, err := js.Stream(t.Context(), natsstore.DefaultPrefix+"_outbox")
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	cfg := info.Config
	cfg.MaxMsgs = max
	if max == 0 {
		cfg.MaxMsgs = -1
	}
	_, err = js.UpdateStream(t.Context(), cfg)
	require.NoError(t, err)
}

func outboxMsgs(t *testing.T, js jetstream.JetStream) uint64 {
	t.Helper()
	st, err := js.Stream(t.Context(), natsstore.DefaultPrefix+"_outbox")
	require.NoError(t, err)
	info, err := st.Info(t.Context())
	require.NoError(t, err)
	return info.State.Msgs
}

// A page whose outbox entries the server takes only in part (the window was full of
// publishes when the stream began refusing them) is not taken at all: no record is
// claimed, the error says how many entries are not stored, and nothing it sent is still
// in flight. The next ingest takes every record, and the stream holds each delivery
// once: the entries stored the first time are dropped as repeats by their message ids.
func TestIngestWithAWindowPartlyRefusedTakesNothingThenEachEntryOnce(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	page := leadtest.Leads(bot, 1, 200, base) // 400 entries: more than one window of publishes

	limitOutbox(t, js, 300)
	_, err := s.Ingest(t.Context(), bot, page)
	require.Error(t, err)
	assert.ErrorContains(t, err, "publish to the outbox: ")
	assert.ErrorContains(t, err, "of 400 entries not stored")
	assert.NotContains(t, err.Error(), page[0].Name, "no lead data in the error")
	assert.EqualValues(t, 300, outboxMsgs(t, js), "the entries before the limit are stored")
	bots, err := s.Chatbots(t.Context())
	require.NoError(t, err)
	assert.Zero(t, bots[bot].Seen, "no record is claimed")
	dry, err := s.DryBackfill(t.Context(), bot, page, event.BackfillOptions{})
	t.Logf("reconnects %d %v", nc.Stats().Reconnects, nc.LastError())
	require.NoError(t, err)
	assert.Equal(t, 200, dry.New, "every record is still unseen")

	limitOutbox(t, js, 0)
	res, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 200, res.New, "the next ingest takes them all")
	assert.EqualValues(t, 400, outboxMsgs(t, js), "each delivery once: the 300 stored before were dropped as repeats")
	for _, fwd := range []string{"bus", "crm"} {
		ids := pendingIDs(t, s, fwd)
		assert.Len(t, ids, 200, fwd)
		for id, n := range counts(ids) {
			assert.Equal(t, 1, n, "%s: event %s owed %d times", fwd, id, n)
		}
	}
	res, err = s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 200}, res)
}

// An entry acknowledged on its first attempt writes nothing to the retry bucket (no
// purge marker per delivery); one acknowledged after a retry leaves no retry state.
func TestSharedAckWritesNoRetryStateItNeverHad(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm") })
	_, err := s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 3, base))
	require.NoError(t, err)
	sh := s.Shared(natsstore.SharedOptions{Drain: true})
	t.Cleanup(func() { _ = sh.Close() })
	ds, err := sh.Pending(t.Context(), "crm", 0, 10)
	require.NoError(t, err)
	require.Len(t, ds, 3)

	retried := ds[0]
	retried.Attempts, retried.FirstTry, retried.NextTry, retried.LastError = 1, time.Now(), time.Now(), "webhook crm: HTTP 503"
	require.NoError(t, sh.Record(t.Context(), []event.Outcome{
		{Delivery: retried, Verdict: event.Retrying},
		{Delivery: ds[1], Verdict: event.Acked},
		{Delivery: ds[2], Verdict: event.Acked},
	}))
	kv, err := js.KeyValue(t.Context(), natsstore.DefaultPrefix+"_retry")
	require.NoError(t, err)
	status, err := kv.Status(t.Context())
	require.NoError(t, err)
	assert.EqualValues(t, 1, status.Values(), "the retry state of the failed entry, and nothing for the two delivered")

	d, found, err := sh.Entry(t.Context(), "crm", ds[0].Seq)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, 1, d.Attempts, "the retry state is read with the entry")
	require.NoError(t, sh.Record(t.Context(), []event.Outcome{{Delivery: d, Verdict: event.Acked}}))
	keys, err := kv.ListKeys(t.Context())
	require.NoError(t, err)
	var left []string
	for k := range keys.Keys() {
		left = append(left, k)
	}
	assert.Empty(t, left, "the retried entry's state left with it")
	depth, err := s.Depth(t.Context())
	require.NoError(t, err)
	assert.Zero(t, depth["crm"])
}

// Outcomes of different entries are applied independently: one the server refuses (its
// entry cannot be deleted) is named in the error, the others are applied all the same,
// and recording the same outcomes again applies the one left without doing the others
// twice.
func TestRecordAppliesEveryOutcomeButTheOneThatFails(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) {
		o.Users = []*natsserver.User{
			{Username: "full", Password: "full"},
			{Username: "nodelete", Password: "nodelete", Permissions: &natsserver.Permissions{
				Publish: &natsserver.SubjectPermission{Allow: []string{">"}, Deny: []string{"$JS.API.STREAM.MSG.DELETE.>"}}}},
		}
	}})
	conn := func(user string) *natsgo.Conn {
		nc, err := natsgo.Connect(ns.URL(), natsgo.UserInfo(user, user))
		require.NoError(t, err)
		t.Cleanup(nc.Close)
		return nc
	}
	route := func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm") }
	full := open(t, conn("full"), route)
	cut := open(t, conn("nodelete"), func(o *natsstore.Options) { route(o); o.Timeout = 300 * time.Millisecond })
	_, err := full.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 2, base))
	require.NoError(t, err)
	ds, err := full.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 2)

	retried := ds[1]
	retried.Attempts, retried.FirstTry, retried.NextTry, retried.LastError = 1, base, base.Add(time.Minute), "webhook crm: HTTP 503"
	outcomes := []event.Outcome{{Delivery: ds[0], Verdict: event.Acked}, {Delivery: retried, Verdict: event.Retrying}}
	err = cut.Record(t.Context(), outcomes)
	require.Error(t, err)
	assert.ErrorContains(t, err, "1 of 2 not applied, the first: crm #")
	after, err := full.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, after, 2, "the refused ack left its entry")
	assert.Equal(t, 1, after[1].Attempts, "the retry after the refused ack was applied")
	log, err := full.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	assert.Len(t, log, 1, "the activity log has the outcome applied, not the refused one")

	require.NoError(t, full.Record(t.Context(), outcomes))
	after, err = full.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, after, 1, "recorded again: the ack applied")
	assert.Equal(t, 1, after[0].Attempts, "and the retry once, as it was")
}

// A new outbox is a work queue: an entry delivered through the shared consumer leaves
// the stream with its ack. An outbox an earlier version created with limits retention
// keeps it (JetStream cannot change it), and its delivered entries are deleted instead.
func TestTheOutboxIsAWorkQueueUnlessAnEarlierVersionMadeIt(t *testing.T) {
	for _, earlier := range []bool{false, true} {
		t.Run(map[bool]string{false: "new", true: "earlier"}[earlier], func(t *testing.T) {
			ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
			nc, js := ns.Connect()
			t.Cleanup(nc.Close)
			want := jetstream.WorkQueuePolicy
			if earlier {
				want = jetstream.LimitsPolicy
				_, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: "leadbridge_outbox",
					Subjects: []string{"leadbridge.outbox.*"}, Storage: jetstream.FileStorage, Duplicates: time.Hour,
					Retention: jetstream.LimitsPolicy, Discard: jetstream.DiscardNew})
				require.NoError(t, err)
			}
			s := open(t, nc, func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm") })
			st, err := js.Stream(t.Context(), "leadbridge_outbox")
			require.NoError(t, err)
			assert.Equal(t, want, st.CachedInfo().Config.Retention)

			_, err = s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 3, base))
			require.NoError(t, err)
			sh := s.Shared(natsstore.SharedOptions{Drain: true})
			t.Cleanup(func() { _ = sh.Close() })
			ds, err := sh.Pending(t.Context(), "crm", 0, 10)
			require.NoError(t, err)
			require.Len(t, ds, 3)
			var outcomes []event.Outcome
			for _, d := range ds {
				outcomes = append(outcomes, event.Outcome{Delivery: d, Verdict: event.Acked})
			}
			require.NoError(t, sh.Record(t.Context(), outcomes))
			assert.Zero(t, outboxMsgs(t, js), "every delivered entry left the stream")
		})
	}
}

// An ack the server does not confirm (the consumer was deleted under the replica
// holding the entries) does not stall the recorder: the delivered entries are deleted
// instead.
func TestADeliveredEntryWhoseAckIsNotConfirmedIsDeleted(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm"); o.Timeout = 300 * time.Millisecond })
	_, err := s.Ingest(t.Context(), bot, leadtest.Leads(bot, 1, 2, base))
	require.NoError(t, err)
	sh := s.Shared(natsstore.SharedOptions{Drain: true})
	t.Cleanup(func() { _ = sh.Close() })
	ds, err := sh.Pending(t.Context(), "crm", 0, 10)
	require.NoError(t, err)
	require.Len(t, ds, 2)
	require.NoError(t, js.DeleteConsumer(t.Context(), "leadbridge_outbox", "leadbridge_crm"))

	require.NoError(t, sh.Record(t.Context(), []event.Outcome{
		{Delivery: ds[0], Verdict: event.Acked}, {Delivery: ds[1], Verdict: event.Acked}}))
	assert.Zero(t, outboxMsgs(t, js))
}

// A record whose outbox entry is larger than the server takes in one message is
// rejected by name (index, event id, sizes; no lead data) instead of failing its page at
// every poll: the others are taken, it is not claimed.
func TestARecordTooLargeForTheServerIsRejectedAndTheRestTaken(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) { o.MaxPayload = 64 << 10 }})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, nil)
	page := leadtest.Leads(bot, 1, 3, base)
	page[1].Content = strings.Repeat("secret words ", 10000)

	res, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 2, res.New)
	require.Len(t, res.Rejected, 1)
	r := res.Rejected[0]
	assert.Equal(t, 1, r.Index)
	assert.Equal(t, page[1].ID(), r.EventID)
	assert.Contains(t, r.Reason, "more than the NATS server takes in one message (max_payload 65536)")
	assert.NotContains(t, r.Reason, "secret")
	assert.EqualValues(t, 4, outboxMsgs(t, js), "the two others owed to both forwarders")

	res, err = s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 2, res.Duplicate)
	assert.Len(t, res.Rejected, 1, "not claimed: rejected again, never taken as seen")
}

// A page of more records than one batched read holds is read in several, each request
// within the server's max_payload, however small: every record is taken once, and all
// are duplicates the next time.
func TestAPageReadInBatchesWithinASmallMaxPayload(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) { o.MaxPayload = 16 << 10 }})
	nc, js := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm") })
	page := leadtest.Leads(bot, 1, 1100, base)

	res, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, 1100, res.New)
	assert.EqualValues(t, 1100, outboxMsgs(t, js))
	res, err = s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	assert.Equal(t, event.Ingested{Duplicate: 1100}, res)
}

// A record the store takes can always be given up on: its dead letter (the entry with
// its attempts, times and last error) fits in what the server takes in one message, so
// a record whose entry is just under max_payload is rejected at ingest rather than
// taken and then failing its dead letter at every try (which would hold up the
// recording of every other outcome behind it). A last error too long for a message is
// cut, in a retry state as in a dead letter.
func TestEveryRecordTakenCanBeDeadLettered(t *testing.T) {
	const limit = 16 << 10
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) { o.MaxPayload = limit }})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm") })

	// Records whose events step from 1,500 bytes under the limit to over it.
	page := leadtest.Leads(bot, 1, 60, base)
	for i := range page {
		page[i].Content = ""
		raw, err := json.Marshal(event.NewCreated(page[i]))
		require.NoError(t, err)
		page[i].Content = strings.Repeat("w", limit-1500+25*i-len(raw))
	}
	res, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	require.NotZero(t, res.New)
	require.NotEmpty(t, res.Rejected, "the largest are rejected")
	assert.Equal(t, len(page), res.New+len(res.Rejected))
	for _, r := range res.Rejected {
		assert.Contains(t, r.Reason, "max_payload 16384")
	}

	ds, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, res.New)
	at := base.Add(2 * time.Hour)
	var outcomes []event.Outcome
	for k, d := range ds {
		d.Attempts, d.FirstTry, d.NextTry = 8, at.Add(-time.Hour), at
		d.LastError = "webhook crm: status 500 Internal Server Error: " + strings.Repeat("e", 200)
		verdict := event.Dead
		if k == 0 { // an error text longer than any message
			d.LastError = strings.Repeat("long error ", 3000)
			verdict = event.Retrying
		}
		outcomes = append(outcomes, event.Outcome{Delivery: d, Verdict: verdict, At: at})
	}
	require.NoError(t, s.Record(t.Context(), outcomes), "every record taken can be given up on")
	d, found, err := s.Entry(t.Context(), "crm", ds[0].Seq)
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, 8, d.Attempts)
	assert.True(t, strings.HasPrefix(d.LastError, "long error long error"), "the error's start is kept")
	assert.Less(t, len(d.LastError), limit)

	outcomes[0].Delivery = d
	outcomes[0].Verdict = event.Dead
	outcomes[0].Delivery.LastError = strings.Repeat("long error ", 3000)
	require.NoError(t, s.Record(t.Context(), outcomes[:1]))
	left, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	assert.Empty(t, left)
	dead, err := s.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	assert.Len(t, dead, res.New)
}

// A store copy brings over a dead letter or a retried entry whose last error is longer
// than the server takes in one message, with the error cut, instead of failing the copy
// at it at every run.
func TestImportCutsALastErrorTooLongForAMessage(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{Tweak: func(o *natsserver.Options) { o.MaxPayload = 16 << 10 }})
	nc, _ := ns.Connect()
	t.Cleanup(nc.Close)
	s := open(t, nc, func(o *natsstore.Options) { o.Route = leadtest.RouteTo("crm") })
	long := strings.Repeat("long error ", 3000)
	d := event.Delivery{Forwarder: "crm", Seq: 7, Event: event.NewCreated(leadtest.Lead(bot, event.KindLead, 1, base)),
		Enqueued: base, Attempts: 3, FirstTry: base, NextTry: base.Add(time.Minute), LastError: long}

	require.NoError(t, s.ImportDeadLetter(t.Context(), "bbolt", 1, event.DeadLetter{Delivery: d, Failed: base}))
	dead, err := s.DeadLetters(t.Context(), "crm")
	require.NoError(t, err)
	require.Len(t, dead, 1)
	assert.True(t, strings.HasPrefix(dead[0].LastError, "long error long error"))
	assert.Less(t, len(dead[0].LastError), 16<<10)

	require.NoError(t, s.ImportDelivery(t.Context(), "bbolt", d))
	ds, err := s.Pending(t.Context(), "crm", 0, 0)
	require.NoError(t, err)
	require.Len(t, ds, 1)
	assert.Equal(t, 3, ds[0].Attempts, "the retry state came along")
	assert.True(t, strings.HasPrefix(ds[0].LastError, "long error long error"))
}
