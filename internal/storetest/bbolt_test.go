package storetest_test

import (
	"path/filepath"
	"testing"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/internal/storetest"
)

// TestBbolt runs the conformance suite against the bbolt store, a file in t.TempDir().
func TestBbolt(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		path := filepath.Join(t.TempDir(), "leadbridge.db")
		return func(c storetest.Config) (storetest.Store, error) {
			return dedupe.Open(dedupe.Options{Path: path, Route: c.Route, Initial: c.Initial,
				EmitUpdates: c.EmitUpdates, Retention: c.Retention, Now: c.Now})
		}
	})
}
