package leadtest

import (
	"net/http/httptest"
	"testing"

	"github.com/leadbridge/leadbridge/internal/leadsim"
)

// StartAPI serves a LeadList API stand-in (internal/leadsim) that accepts key until the
// test ends, and returns it with its base URL.
func StartAPI(t testing.TB, key string) (*leadsim.Server, string) {
	t.Helper()
	api := leadsim.New(key)
	srv := httptest.NewServer(api)
	t.Cleanup(srv.Close)
	return api, srv.URL
}
