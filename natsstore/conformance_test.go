package natsstore_test

import (
	"context"
	"testing"

	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/internal/storetest"
	"github.com/leadbridge/leadbridge/natsstore"
)

// TestConformance runs the store conformance suite against an in-process nats-server
// with JetStream in t.TempDir().
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
		nc, _ := ns.Connect()
		t.Cleanup(nc.Close)
		return func(c storetest.Config) (storetest.Store, error) {
			return natsstore.Open(context.Background(), natsstore.Options{Conn: nc, Route: c.Route, Initial: c.Initial,
				EmitUpdates: c.EmitUpdates, Retention: c.Retention, Now: c.Now})
		}
	})
}
