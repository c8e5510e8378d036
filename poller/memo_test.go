package poller

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
)

// failSecondPart is the real store, failing the second part of a page while armed
// (a store write failing half-way through a large answer, e.g. disk full).
type failSecondPart struct {
	*dedupe.Store
	armed atomic.Bool
}

func (f *failSecondPart) IngestPage(ctx context.Context, serial string, read func(take func([]event.Lead, bool) (event.Ingested, error)) error) error {
	return f.Store.IngestPage(ctx, serial, func(take func([]event.Lead, bool) (event.Ingested, error)) error {
		part := 0
		return read(func(leads []event.Lead, last bool) (event.Ingested, error) {
			part++
			if part == 2 && f.armed.Load() {
				return event.Ingested{}, errors.New("injected: disk full")
			}
			return take(leads, last)
		})
	})
}

// The memo says "the store has seen this very answer", but the store's view of the
// answer's records can change meanwhile: a later answer taken half-way changes a
// record's stored content. When the API then serves the remembered answer again, the
// content change back is an update the store announces: any take of other records
// clears the memo, so it cannot hide it. (Found by a hostile review; failed before.)
func TestMemoDoesNotHideAnUpdateAfterAPartialTake(t *testing.T) {
	recs := func(content string) []string {
		out := []string{fmt.Sprintf(`{"Type":"Lead","Name":"r","Email":"","PhoneNumber":"","CreateTime":"2023-11-23T10:00:00Z","Content":%q,"SessionID":1,"URI":"","Count":1}`, content)}
		for i := range DefaultChunkRecords + 10 {
			out = append(out, fmt.Sprintf(`{"Type":"Lead","Name":"f","Email":"","PhoneNumber":"","CreateTime":"2023-11-23T11:00:00Z","Content":"x","SessionID":%d,"URI":"","Count":1}`, 1000+i))
		}
		return out
	}
	srv := newLeadListServer(t)
	store := &failSecondPart{Store: openStore(t, dedupe.Options{Initial: dedupe.InitialEmit, EmitUpdates: true})}
	l := &Loop{Client: srv.client(5 * time.Second), Store: store, Chatbots: []event.Chatbot{mainSite},
		Now: func() time.Time { return pollNow }}

	srv.setRecords(mainSite.Serial, recs("c1")...) // answer A
	res, err := l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	require.Equal(t, DefaultChunkRecords+11, res.New)

	srv.setRecords(mainSite.Serial, recs("c2")...) // answer B, taken half-way: R's update to c2 is in
	store.armed.Store(true)
	res, err = l.PollOnce(context.Background(), mainSite)
	require.Error(t, err)
	require.Equal(t, 1, res.Updated, "R's change to c2 was taken and announced")
	store.armed.Store(false)

	srv.setRecords(mainSite.Serial, recs("c1")...) // answer A again: R is back to c1
	res, err = l.PollOnce(context.Background(), mainSite)
	require.NoError(t, err)
	assert.Equal(t, 1, res.Updated, "R changed from c2 (what the store holds) back to c1: an update")
}
