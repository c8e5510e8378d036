package leadtest

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/dedupe"
	"github.com/leadbridge/leadbridge/event"
)

// OpenStore opens a real bbolt store shaped by o, in a file of the test's temporary
// directory unless o.Path names one, and closes it when the test ends.
func OpenStore(t testing.TB, o dedupe.Options) *dedupe.Store {
	t.Helper()
	if o.Path == "" {
		o.Path = filepath.Join(t.TempDir(), "leadbridge.db")
	}
	s, err := dedupe.Open(o)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// RouteTo is a dedupe route that sends every event to the given forwarders.
func RouteTo(forwarders ...string) func(event.Event) []string {
	return func(event.Event) []string { return forwarders }
}

// Pending is every outbox entry of forwarder, oldest first.
func Pending(t testing.TB, s *dedupe.Store, forwarder string) []event.Delivery {
	t.Helper()
	ds, err := s.Pending(t.Context(), forwarder, 0, 0)
	require.NoError(t, err)
	return ds
}

// Lead is a lead (or appointment) of chatbot serial with made-up personal data that
// names its session.
func Lead(serial string, kind event.Kind, session int64, created time.Time) event.Lead {
	return event.Lead{
		Chatbot: serial, ChatbotName: "Main site", Kind: kind,
		Name: fmt.Sprintf("person %d", session), Email: fmt.Sprintf("p%d@example.com", session),
		Content: "hello", SessionID: session, URI: "www.example.com", Count: 1, CreatedAt: created,
	}
}

// Leads is n leads of chatbot serial, sessions from, from+1, ..., created a second apart
// from base.
func Leads(serial string, from, n int, base time.Time) []event.Lead {
	out := make([]event.Lead, n)
	for i := range out {
		s := from + i
		out[i] = Lead(serial, event.KindLead, int64(s), base.Add(time.Duration(i)*time.Second))
	}
	return out
}
