// Package storecopy copies a bbolt store (dedupe) into a JetStream store (natsstore), so
// that an operator moving to several replicas keeps the history and sends nothing twice.
package storecopy

import (
	"context"
	"maps"
	"slices"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/natsstore"
)

// Tally is what a copy took.
type Tally struct {
	Seen     int // seen keys added
	Already  int // seen keys the destination held already
	Chatbots int // chatbot states merged
	Pending  int // pending deliveries copied
	Dead     int // dead letters copied
	Pauses   int // pauses copied
}

// Copy copies src into dst: seen keys first, then chatbot state, pending deliveries
// (with their retry state), dead letters and pauses. name names the source in message
// ids, so that a copy run again soon after adds no entry twice. It stops at the first
// error; the Tally says what was copied until then.
func Copy(ctx context.Context, src *dedupe.Store, dst *natsstore.Store, name string) (Tally, error) {
	var t Tally
	err := src.EachSeen(ctx, func(k dedupe.SeenKey) error {
		added, err := dst.ImportSeen(ctx, k.Key, k.Created, k.LastSeen, k.Hash)
		switch {
		case err != nil:
			return err // neither copied nor already there
		case added:
			t.Seen++
		default:
			t.Already++
		}
		return nil
	})
	if err != nil {
		return t, err
	}
	bots, err := src.Chatbots(ctx)
	if err != nil {
		return t, err
	}
	for serial, st := range bots {
		if err := dst.ImportChatbot(ctx, serial, st); err != nil {
			return t, err
		}
		t.Chatbots++
	}
	depth, err := src.Depth(ctx)
	if err != nil {
		return t, err
	}
	for _, fwd := range slices.Sorted(maps.Keys(depth)) {
		ds, err := src.Pending(ctx, fwd, 0, 0)
		if err != nil {
			return t, err
		}
		for _, d := range ds {
			if err := dst.ImportDelivery(ctx, name, d); err != nil {
				return t, err
			}
			t.Pending++
		}
	}
	dead, err := src.DeadLetters(ctx, "")
	if err != nil {
		return t, err
	}
	for i, dl := range dead {
		if err := dst.ImportDeadLetter(ctx, name, i, dl); err != nil {
			return t, err
		}
		t.Dead++
	}
	paused, err := src.Paused(ctx)
	if err != nil {
		return t, err
	}
	for fwd, p := range paused {
		if err := dst.ImportPause(ctx, fwd, p); err != nil {
			return t, err
		}
		t.Pauses++
	}
	return t, nil
}
