package dedupe_test

import (
	"testing"
	"time"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/internal/leadtest"
)

// BenchmarkIngest ingests pages of 100 records of which half were seen on the previous page.
func BenchmarkIngest(b *testing.B) {
	s := open(b, dbPath(b), nil)
	_, err := s.Ingest(b.Context(), bot, leads(bot, 0, 100))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	from := 50
	for b.Loop() {
		res, err := s.Ingest(b.Context(), bot, leads(bot, from, 100))
		if err != nil {
			b.Fatal(err)
		}
		if res.New != 50 || res.Duplicate != 50 {
			b.Fatalf("got %+v, want 50 new and 50 duplicates", res)
		}
		from += 50
	}
}

// BenchmarkPendingAck drains a forwarder's outbox the way a dispatcher does: read a batch
// of 100 pending deliveries, then record their acks in one write, as the dispatcher's
// recorder gathers them. One op is one delivery.
func BenchmarkPendingAck(b *testing.B) {
	s := open(b, dbPath(b), nil)
	for i := 0; i < b.N; i += 100 {
		if _, err := s.Ingest(b.Context(), bot, leads(bot, i, min(100, b.N-i))); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	var after uint64
	for done := 0; done < b.N; {
		batch, err := s.Pending(b.Context(), "bus", after, 100)
		if err != nil {
			b.Fatal(err)
		}
		acks := make([]event.Outcome, len(batch))
		for i, d := range batch {
			acks[i] = event.Outcome{Delivery: event.Delivery{Forwarder: d.Forwarder, Seq: d.Seq}, Verdict: event.Acked}
		}
		if err := s.Record(b.Context(), acks); err != nil {
			b.Fatal(err)
		}
		after = batch[len(batch)-1].Seq
		done += len(batch)
	}
	b.StopTimer()
	if rest, _ := s.Pending(b.Context(), "bus", 0, 0); len(rest) != 0 {
		b.Fatalf("%d deliveries left", len(rest))
	}
}

// BenchmarkIdlePoll is the store's part of an idle poll: a page of 20 records all seen
// before, and the poll's bookkeeping.
func BenchmarkIdlePoll(b *testing.B) {
	s := open(b, dbPath(b), nil)
	page := leads(bot, 0, 20)
	if _, err := s.Ingest(b.Context(), bot, page); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		res, err := s.Ingest(b.Context(), bot, page)
		if err != nil {
			b.Fatal(err)
		}
		if res.Duplicate != 20 {
			b.Fatalf("got %+v, want 20 duplicates", res)
		}
		if err := s.RecordPoll(b.Context(), bot, t0, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRecordActivity records acks the way the pipeline does in its steady state:
// batches of 100 full deliveries (their events set, so each goes to the activity log)
// across two forwarders, with each forwarder's activity log already full, so that every
// attempt written prunes one. One op is one delivery.
func BenchmarkRecordActivity(b *testing.B) {
	s := open(b, dbPath(b), nil)
	const full = dedupe.ActivityPerForwarder
	n := (b.N+1)/2 + full // appointments: each owed to "bus" and "sales"
	for i := 0; i < n; i += 1000 {
		page := make([]event.Lead, min(1000, n-i))
		for j := range page {
			page[j] = leadtest.Lead(bot, event.KindAppointment, int64(i+j), t0.Add(time.Duration(i+j)*time.Minute))
		}
		if _, err := s.Ingest(b.Context(), bot, page); err != nil {
			b.Fatal(err)
		}
	}
	var batches [][]event.Outcome
	var bus, sales []event.Delivery
	for _, fwd := range []string{"bus", "sales"} {
		ds, err := s.Pending(b.Context(), fwd, 0, 0)
		if err != nil || len(ds) != n {
			b.Fatalf("%s: %d pending, %v; want %d", fwd, len(ds), err, n)
		}
		if fwd == "bus" {
			bus = ds
		} else {
			sales = ds
		}
	}
	acks := func(ds []event.Delivery) []event.Outcome {
		out := make([]event.Outcome, len(ds))
		for i, d := range ds {
			out[i] = event.Outcome{Delivery: d, Verdict: event.Acked, Took: time.Millisecond}
		}
		return out
	}
	for i := 0; i < full; i += 100 { // fill both logs
		batches = append(batches, acks(append(bus[i:i+100:i+100], sales[i:i+100]...)))
	}
	warm := len(batches)
	for i := full; i < n; i += 50 {
		j := min(i+50, n)
		batches = append(batches, acks(append(bus[i:j:j], sales[i:j]...)))
	}
	for _, batch := range batches[:warm] {
		if err := s.Record(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for _, batch := range batches[warm:] {
		if err := s.Record(b.Context(), batch); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if rest, _ := s.Pending(b.Context(), "bus", 0, 0); len(rest) != 0 {
		b.Fatalf("%d deliveries left", len(rest))
	}
}
