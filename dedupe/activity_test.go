package dedupe_test

import (
	"encoding/binary"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

// outcome is the outcome the dispatcher hands Record for delivery d.
func outcome(d event.Delivery, v event.Verdict, attempts int, lastErr string) event.Outcome {
	d.Attempts, d.LastError = attempts, lastErr
	return event.Outcome{Delivery: d, Verdict: v}
}

func TestRecordWritesTheActivityLog(t *testing.T) {
	now := t0.Add(12 * time.Hour)
	s := open(t, dbPath(t), func(o *dedupe.Options) { o.Now = func() time.Time { return now } })
	page := []event.Lead{leadtest.Lead(bot, event.KindLead, 1, t0), leadtest.Lead(bot, event.KindAppointment, 2, t0.Add(time.Minute))}
	_, err := s.Ingest(t.Context(), bot, page)
	require.NoError(t, err)
	bus, sales := pending(t, s, "bus"), pending(t, s, "sales")
	require.Len(t, bus, 2)
	require.Len(t, sales, 1)

	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(bus[0], event.Acked, 0, "")}))
	now = now.Add(time.Second)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{
		outcome(sales[0], event.Retrying, 1, "webhook https://crm.example.com: 503 Service Unavailable")}))
	now = now.Add(time.Minute)
	dead := outcome(sales[0], event.Dead, 2, "webhook https://crm.example.com: 400 Bad Request")
	dead.At, dead.Took = now, 250*time.Millisecond
	require.NoError(t, s.Record(t.Context(), []event.Outcome{dead}))

	all, err := s.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	require.Len(t, all, 3)
	assert.Equal(t, event.Attempt{At: now, Forwarder: "sales", EventID: page[1].ID(), Chatbot: bot, Kind: event.KindAppointment,
		Verdict: event.Dead, Attempt: 2, Took: 250 * time.Millisecond, InOutbox: now.Sub(sales[0].Enqueued),
		Error: "webhook https://crm.example.com: 400 Bad Request", Account: event.DefaultAccount},
		all[0], "newest first")
	assert.Equal(t, event.Retrying, all[1].Verdict)
	assert.Equal(t, 1, all[1].Attempt)
	assert.Equal(t, event.Acked, all[2].Verdict)
	assert.Equal(t, 1, all[2].Attempt, "a first attempt that succeeded is attempt 1")
	assert.Empty(t, all[2].Error)

	for name, q := range map[string]event.ActivityQuery{
		"forwarder": {Forwarder: "bus"},
		"kind":      {Kind: event.KindLead},
		"verdict":   {Verdict: event.Acked},
		"event":     {EventID: page[0].ID()},
	} {
		got, err := s.Activity(t.Context(), q)
		require.NoError(t, err, name)
		require.Len(t, got, 1, name)
		assert.Equal(t, page[0].ID(), got[0].EventID, name)
	}
	got, err := s.Activity(t.Context(), event.ActivityQuery{Chatbot: "someone-else"})
	require.NoError(t, err)
	assert.Empty(t, got)
	got, err = s.Activity(t.Context(), event.ActivityQuery{Limit: 1})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, event.Dead, got[0].Verdict)

	// The event stays readable after it left the outbox (delivered) or went to the dead letters.
	assert.Empty(t, pending(t, s, "sales"))
	ev, found, err := s.ActivityEvent(t.Context(), page[1].ID())
	require.NoError(t, err)
	require.True(t, found)
	assert.Equal(t, sales[0].Event, ev)
	_, found, err = s.ActivityEvent(t.Context(), "no-such-id")
	require.NoError(t, err)
	assert.False(t, found)
}

func TestActivityLogKeepsTheNewestPerForwarder(t *testing.T) {
	s := open(t, dbPath(t), nil)
	n := dedupe.ActivityPerForwarder + 5
	_, err := s.Ingest(t.Context(), bot, leads(bot, 1, n))
	require.NoError(t, err)
	ds := pending(t, s, "bus")
	require.Len(t, ds, n)
	outcomes := make([]event.Outcome, 0, n)
	for _, d := range ds {
		outcomes = append(outcomes, outcome(d, event.Acked, 0, ""))
	}
	require.NoError(t, s.Record(t.Context(), outcomes[:10]))
	require.NoError(t, s.Record(t.Context(), outcomes[10:]))

	all, err := s.Activity(t.Context(), event.ActivityQuery{Forwarder: "bus"})
	require.NoError(t, err)
	require.Len(t, all, dedupe.ActivityPerForwarder)
	oldest := all[len(all)-1]
	assert.Equal(t, ds[5].Event.ID, oldest.EventID, "the five oldest were pruned")
	for _, d := range ds[:5] {
		_, found, err := s.ActivityEvent(t.Context(), d.Event.ID)
		require.NoError(t, err)
		assert.False(t, found, "an event no attempt refers to any more is forgotten")
	}
	_, found, err := s.ActivityEvent(t.Context(), ds[5].Event.ID)
	require.NoError(t, err)
	assert.True(t, found)
}

func TestActivityLogForgetsAttemptsOlderThanAWeek(t *testing.T) {
	now := t0.Add(12 * time.Hour)
	path := dbPath(t)
	s := open(t, path, func(o *dedupe.Options) { o.Now = func() time.Time { return now } })
	_, err := s.Ingest(t.Context(), bot, []event.Lead{leadtest.Lead(bot, event.KindAppointment, 1, t0), leadtest.Lead(bot, event.KindLead, 2, t0)})
	require.NoError(t, err)
	bus, sales := pending(t, s, "bus"), pending(t, s, "sales")
	// Both forwarders log an attempt; a week and a day later only bus records again.
	require.NoError(t, s.Record(t.Context(), []event.Outcome{
		outcome(bus[0], event.Retrying, 1, "timeout"), outcome(sales[0], event.Retrying, 1, "timeout")}))
	now = now.Add(dedupe.ActivityMaxAge + 24*time.Hour)
	dedupe.Elapse(s, dedupe.ActivityMaxAge+24*time.Hour)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{outcome(bus[1], event.Acked, 0, "")}))

	all, err := s.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	require.Len(t, all, 1, "the week-old attempts of both forwarders are gone, the idle one's too")
	assert.Equal(t, bus[1].Event.ID, all[0].EventID)
	_, found, err := s.ActivityEvent(t.Context(), sales[0].Event.ID)
	require.NoError(t, err)
	assert.False(t, found)

	// Since selects by time.
	got, err := s.Activity(t.Context(), event.ActivityQuery{Since: now.Add(time.Second)})
	require.NoError(t, err)
	assert.Empty(t, got)
}

func TestActivityOfAStoreWithoutALog(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	require.NoError(t, s.Close())
	ro := open(t, path, func(o *dedupe.Options) { o.ReadOnly = true })
	got, err := ro.Activity(t.Context(), event.ActivityQuery{})
	require.NoError(t, err)
	assert.Empty(t, got)
	_, found, err := ro.ActivityEvent(t.Context(), "x")
	require.NoError(t, err)
	assert.False(t, found)
}

func TestActivityByAccountAlsoOfAttemptsLoggedBeforeAccounts(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	agency := leadtest.Lead(bot, event.KindLead, 1, t0)
	agency.Account = "agency"
	_, err := s.Ingest(t.Context(), bot, []event.Lead{agency, leadtest.Lead(bot, event.KindLead, 2, t0)})
	require.NoError(t, err)
	var outcomes []event.Outcome
	for _, d := range pending(t, s, "bus") {
		outcomes = append(outcomes, outcome(d, event.Acked, 0, ""))
	}
	require.NoError(t, s.Record(t.Context(), outcomes))

	byAccount := func(s *dedupe.Store, account string) []string {
		got, err := s.Activity(t.Context(), event.ActivityQuery{Account: account})
		require.NoError(t, err)
		var ids []string
		for _, a := range got {
			assert.Equal(t, account, a.Account)
			ids = append(ids, a.EventID)
		}
		return ids
	}
	assert.Equal(t, []string{agency.ID()}, byAccount(s, "agency"))
	assert.Len(t, byAccount(s, event.DefaultAccount), 1)
	assert.Empty(t, byAccount(s, "nobody"))

	// Attempts written before they named the account: it comes from the event kept beside the log.
	require.NoError(t, s.Close())
	asOlderLog(t, path, nil, func(a map[string]any) {
		require.Contains(t, a, "account")
		delete(a, "account")
	})
	s = open(t, path, nil)
	assert.Equal(t, []string{agency.ID()}, byAccount(s, "agency"))
	assert.Len(t, byAccount(s, event.DefaultAccount), 1)
}

// asOlderLog rewrites the activity log of the closed store at path as leadbridge wrote
// it before attempts referred to event records: each attempt its JSON alone (edit, when
// not nil, changes it), each event kept once in activity_events by id with a count of
// the attempts referring to it, in the binary form or, for an event in asJSON, as JSON;
// and the event records only the log referred to are gone.
func asOlderLog(t *testing.T, path string, asJSON map[string]event.Event, edit func(map[string]any)) {
	t.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, db.Close()) }()
	require.NoError(t, db.Update(func(tx *bolt.Tx) error {
		log, events := tx.Bucket([]byte("activity")), tx.Bucket([]byte("events"))
		kept, err := tx.CreateBucket([]byte("activity_events"))
		require.NoError(t, err)
		return log.ForEachBucket(func(name []byte) error {
			b := log.Bucket(name)
			old := map[string][]byte{}
			require.NoError(t, b.ForEach(func(k, v []byte) error {
				require.Equal(t, byte(1), v[0], "an attempt refers to its event record")
				ref := v[1:9]
				var a map[string]any
				require.NoError(t, json.Unmarshal(v[21:], &a))
				id := a["event_id"].(string)
				if edit != nil {
					edit(a)
				}
				raw, err := json.Marshal(a)
				require.NoError(t, err)
				old[string(k)] = raw

				rec := events.Get(ref)
				require.NotNil(t, rec)
				refs := binary.BigEndian.Uint32(rec[1:5])
				prev := kept.Get([]byte(id))
				n := uint32(1)
				if prev != nil {
					n += binary.BigEndian.Uint32(prev)
				}
				body := append([]byte{rec[0]}, rec[5:]...)
				if ev, ok := asJSON[id]; ok {
					body, err = json.Marshal(ev)
					require.NoError(t, err)
				}
				require.NoError(t, kept.Put([]byte(id), append(binary.BigEndian.AppendUint32(nil, n), body...)))
				if refs <= 1 {
					return events.Delete(ref)
				}
				nv := slices.Clone(rec)
				binary.BigEndian.PutUint32(nv[1:], refs-1)
				return events.Put(ref, nv)
			}))
			for k, v := range old {
				if err := b.Put([]byte(k), v); err != nil {
					return err
				}
			}
			return nil
		})
	}))
}

// TestActivityLogOfAnOlderLeadbridge: a log written before attempts referred to event
// records (their events kept by id beside the log, in the binary form or, older still,
// as JSON) still reads back, account included, and is pruned as new attempts come, its
// kept events with it.
func TestActivityLogOfAnOlderLeadbridge(t *testing.T) {
	path := dbPath(t)
	s := open(t, path, nil)
	a, b := leadtest.Lead(bot, event.KindAppointment, 1, t0), leadtest.Lead(bot, event.KindLead, 2, t0)
	a.Account = "agency"
	n := dedupe.ActivityPerForwarder
	_, err := s.Ingest(t.Context(), bot, append([]event.Lead{a, b}, leads(bot, 3, n)...))
	require.NoError(t, err)
	bus := pending(t, s, "bus")
	require.Len(t, bus, n+2)
	require.NoError(t, s.Record(t.Context(), []event.Outcome{
		outcome(bus[0], event.Acked, 0, ""), outcome(bus[1], event.Retrying, 1, "timeout")}))
	require.NoError(t, s.Close())
	asOlderLog(t, path, map[string]event.Event{a.ID(): bus[0].Event}, nil)

	s = open(t, path, nil)
	for _, d := range bus[:2] {
		ev, found, err := s.ActivityEvent(t.Context(), d.Event.ID)
		require.NoError(t, err)
		require.True(t, found)
		assert.Equal(t, d.Event, ev)
	}
	got, err := s.Activity(t.Context(), event.ActivityQuery{Account: "agency"})
	require.NoError(t, err)
	require.Len(t, got, 1)
	assert.Equal(t, a.ID(), got[0].EventID)
	retried, found, err := s.Entry(t.Context(), "bus", bus[1].Seq)
	require.NoError(t, err)
	require.True(t, found, "the entry that failed stays, its event record with it")
	assert.Equal(t, bus[1].Event, retried.Event)

	// n new attempts push the two old ones out; their kept events go with them.
	outcomes := make([]event.Outcome, 0, n)
	for _, d := range bus[2:] {
		outcomes = append(outcomes, outcome(d, event.Acked, 0, ""))
	}
	require.NoError(t, s.Record(t.Context(), outcomes))
	for _, d := range bus[:2] {
		_, found, err := s.ActivityEvent(t.Context(), d.Event.ID)
		require.NoError(t, err)
		assert.False(t, found)
	}
	all, err := s.Activity(t.Context(), event.ActivityQuery{Forwarder: "bus"})
	require.NoError(t, err)
	assert.Len(t, all, n)
	require.NoError(t, s.Close())
	db, err := bolt.Open(path, 0o600, nil)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		assert.Zero(t, tx.Bucket([]byte("activity_events")).Stats().KeyN, "the old log's kept events were pruned with it")
		return nil
	}))
}
