package config

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

func TestCompareNamesWhatAReloadChanges(t *testing.T) {
	running := parseOK(t, head+hook+"  - {name: old, type: webhook, url: \"https://old.example/\"}\n"+
		"  - {name: same, type: webhook, url: \"https://same.example/\"}\n")
	next := parseOK(t, `neoagent:
  api_key: key456
  chatbots:
    - serial: bot1
      name: Renamed
    - serial: bot3
poll: {interval: 5m}
store: {path: /elsewhere.db}
log: {level: debug}
forwarders:
  - {name: crm, type: webhook, url: "https://crm.example.com/hook", headers: {X-A: b}}
  - {name: same, type: webhook, url: "https://same.example/"}
  - {name: new, type: webhook, url: "https://new.example/"}
`)
	eff, kept := Reloadable(running, next)
	assert.Equal(t, []string{"store.path", "log.level"}, kept)
	assert.Equal(t, running.Store.Path, eff.Store.Path, "a restart-only key keeps its running value")
	assert.Equal(t, "/elsewhere.db", next.Store.Path, "next is not changed")
	d := Compare(running, eff, kept)
	assert.Equal(t, Diff{
		ChatbotsAdded: []string{"bot3"}, ChatbotsRemoved: []string{"bot2"}, ChatbotsChanged: []string{"bot1"},
		ForwardersAdded: []string{"new"}, ForwardersRemoved: []string{"old"}, ForwardersChanged: []string{"crm"},
		Pace: true, Client: true, Kept: kept,
	}, d)
	assert.False(t, d.Empty())
	assert.True(t, Compare(running, running, nil).Empty())
	assert.NotContains(t, fmt.Sprint(d.LogAttrs()...), "key456", "no value in the summary")
}

func TestRouterReadsTheConfigSetLast(t *testing.T) {
	one := parseOK(t, head+hook)
	two := parseOK(t, head+hook+"  - {name: new, type: webhook, url: \"https://new.example/\"}\n")
	r := NewRouter(one, nil)
	ev := event.Event{Source: "neoagent/bot1", Type: "neoagent.lead.created", Data: event.Lead{Chatbot: "bot1"}}
	assert.Equal(t, []string{"crm"}, r.Route(ev))
	var wg sync.WaitGroup
	wg.Go(func() { r.Set(two) })
	wg.Go(func() { _ = r.Route(ev) })
	wg.Wait()
	assert.Equal(t, []string{"crm", "new"}, r.Route(ev))
}

func TestAdminAddressReadsABrokenFile(t *testing.T) {
	t.Setenv("LB_RELOAD_TOKEN", "tok-123456")
	path := filepath.Join(t.TempDir(), "c.yaml")
	require.NoError(t, os.WriteFile(path, []byte(head+"  colour: red\nhttp: {listen: \"127.0.0.1:9999\", admin_token: \"${LB_RELOAD_TOKEN}\"}\n"), 0o600))
	h, err := AdminAddress(path)
	require.NoError(t, err, "problems outside http do not matter")
	assert.Equal(t, HTTP{Listen: "127.0.0.1:9999", AdminToken: "tok-123456"}, h)

	require.NoError(t, os.WriteFile(path, []byte(head+"http: {listen: [a]}\n"), 0o600))
	_, err = AdminAddress(path)
	require.ErrorContains(t, err, "http.listen")
	require.NoError(t, os.WriteFile(path, []byte("neoagent: [\n"), 0o600))
	_, err = AdminAddress(path)
	require.ErrorContains(t, err, "invalid YAML")
}
