package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
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
		AccountsChanged: []string{"default"}, Pace: true, Kept: kept,
	}, d)
	assert.Equal(t, Diff{}, Compare(running, running, nil), "the running config against itself changes nothing")
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

func TestCompareSeesEveryAccountAndEachChatbotsSchedule(t *testing.T) {
	running := parseOK(t, agency+retention+hook)
	next := parseOK(t, `neoagent:
  api_key: key123
  max_rps: 2
  chatbots:
    - serial: bot1
  accounts:
    - name: client-a
      base_url: https://a.example
      api_key: key-a-rotated
      timeout: 10s
      max_rps: 7.5
      chatbots:
        - {serial: a1, name: Main site, interval: 45s}
        - {serial: a2, lookback: 72h}
    - name: reseller
      base_url: https://ai.reseller.example
      api_key: key-r
      chatbots:
        - serial: r1
        - serial: r2
    - name: newcomer
      base_url: https://n.example
      api_key: key-n
      chatbots:
        - serial: n1
`+retention+hook)
	eff, kept := Reloadable(running, next)
	require.Empty(t, kept)
	d := Compare(running, eff, kept)
	assert.Equal(t, []string{"r2", "n1"}, d.ChatbotsAdded, "chatbots of every account, not only the top-level ones")
	assert.Equal(t, []string{"a1"}, d.ChatbotsChanged, "a chatbot's own interval is a change")
	assert.Empty(t, d.ChatbotsRemoved)
	assert.Equal(t, []string{"newcomer"}, d.AccountsAdded)
	assert.Equal(t, []string{"client-a"}, d.AccountsChanged, "a rotated key changes only that account")
	assert.Empty(t, d.AccountsRemoved)
	assert.False(t, d.Pace)
	assert.NotContains(t, fmt.Sprint(d.LogAttrs()...), "key-a-rotated", "no value in the summary")

	// The account removed with its chatbots; a chatbot moved to another account changes.
	moved := parseOK(t, agency[:strings.Index(agency, "    - name: reseller")]+retention+hook)
	moved.NeoAgent.Accounts[0].Chatbots = append(moved.NeoAgent.Accounts[0].Chatbots, Chatbot{Serial: "bot1", Name: "bot1"})
	moved.NeoAgent.Chatbots = nil
	d = Compare(running, moved, nil)
	assert.Equal(t, []string{"bot1"}, d.ChatbotsChanged, "moved to client-a")
	assert.Equal(t, []string{"r1"}, d.ChatbotsRemoved)
	assert.Equal(t, []string{"default", "reseller"}, d.AccountsRemoved)

	// neoagent.max_body_bytes and max_rps reach every account that takes them.
	wider := parseOK(t, strings.Replace(agency, "max_rps: 2", "max_rps: 3", 1)+retention+hook)
	assert.Equal(t, []string{"default", "reseller"}, Compare(running, wider, nil).AccountsChanged,
		"client-a keeps its own max_rps")
}

func TestNATSServerNeedsARestart(t *testing.T) {
	running := parseOK(t, head+hook)
	next := parseOK(t, head+hook+"nats_server: {listen: \"127.0.0.1:4999\", store_dir: /tmp/js}\n")
	eff, kept := Reloadable(running, next)
	assert.Equal(t, []string{"nats_server"}, kept)
	assert.Nil(t, eff.NATSServer)
}
