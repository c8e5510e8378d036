package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/internal/leadtest"
	"github.com/leadbridge/leadbridge/ops"
)

// leaseSerials are four chatbots two daemons share.
var leaseSerials = []string{serialA, serialB, serialC, "3254a9d0424c4806b9ea3d0763ccfd04"}

// leaseConfig is natsConfig with the four chatbots of leaseSerials and initial: skip.
func leaseConfig(t *testing.T, name, apiURL, sinkURL, natsURL, addr string) string {
	t.Helper()
	t.Setenv("LB_TEST_KEY", testKey)
	var bots strings.Builder
	for i, s := range leaseSerials {
		fmt.Fprintf(&bots, "    - {serial: %s, name: Bot %d}\n", s, i)
	}
	body := fmt.Sprintf(`
neoagent:
  base_url: %s
  api_key: ${LB_TEST_KEY}
  timeout: 5s
  chatbots:
%spoll: {interval: 1s, initial: skip, jitter: 0}
store:
  backend: nats
  nats: {url: "%s", replicas: 1, timeout: 5s}
forwarders:
  - {name: crm, type: webhook, url: "%s/hook"}
http: {listen: "%s"}
log: {level: info, format: json}
`, apiURL, bots.String(), natsURL, sinkURL, addr)
	path := filepath.Join(t.TempDir(), name+".yaml")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

// Two daemons on the JetStream store split the chatbots 2/2 through leases, `status`
// from any machine names the replica polling each, the records in the API at the start
// are a baseline whichever daemon polls, and a later record goes out once.
func TestDaemonsShareChatbotsAndStatusNamesThePoller(t *testing.T) {
	ns := leadtest.StartNATS(t, leadtest.NATSOptions{})
	api, apiURL := leadtest.StartAPI(t, testKey)
	sink := leadtest.NewSink(t, nil)
	for _, s := range leaseSerials {
		api.Generate(s, time.Now().Add(-time.Hour))
	}
	var addrs []string
	for _, name := range []string{"a", "b"} {
		addr := freeAddr(t)
		startDaemon(t, leaseConfig(t, name, apiURL, sink.URL, ns.URL(), addr), addr)
		addrs = append(addrs, addr)
	}
	elsewhere := leaseConfig(t, "op", apiURL, sink.URL, ns.URL(), freeAddr(t))
	var st ops.Status
	require.Eventually(t, func() bool {
		code, out, _ := runMain(t, "status", "--json", "--config", elsewhere)
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return false
		}
		per := map[string]int{}
		for _, c := range st.Chatbots {
			if c.PolledBy == "" || c.LastOK.IsZero() {
				return false
			}
			per[c.PolledBy]++
		}
		return len(per) == 2 && per[st.Chatbots[0].PolledBy] == 2
	}, 30*time.Second, 200*time.Millisecond, "each daemon polls two chatbots, and status says which")
	assert.Contains(t, st.Chatbots[0].PolledBy, fmt.Sprintf("-%d-", os.Getpid()), "a replica is named by host, pid and a random part")

	// Each daemon's metrics name it as status does, with its leases and the live replicas.
	names := map[string]bool{}
	for _, addr := range addrs {
		var name string
		require.Eventually(t, func() bool {
			m := scrape(t, addr)
			name = ""
			for key, v := range m {
				if n, ok := strings.CutPrefix(key, "leadbridge_replica_info{replica="); ok && v == 1 {
					name = strings.TrimSuffix(n, "}")
				}
			}
			return name != "" && m["leadbridge_leases_held{}"] == 2 && m["leadbridge_replicas_live{}"] == 2
		}, 10*time.Second, 100*time.Millisecond, "the metrics of the daemon on %s", addr)
		names[name] = true
	}
	per := map[string]bool{}
	for _, c := range st.Chatbots {
		per[c.PolledBy] = true
	}
	assert.Equal(t, per, names, "replica_info names the replicas status shows")

	code, out, stderr := runMain(t, "status", "--config", elsewhere)
	require.Equal(t, 0, code, stderr)
	assert.Regexp(t, `(?m)^CHATBOT\s+SERIAL\s+ACCOUNT\s+POLLED BY\s+LAST POLL`, out)
	assert.Regexp(t, `(?m)^Bot 0\s+`+serialA+`\s+\S+\s+`+st.Chatbots[0].PolledBy+`\s`, out)

	api.Generate(serialC, time.Now())
	require.Eventually(t, func() bool { return sink.Count() == 1 }, 20*time.Second, 20*time.Millisecond)
	// Every chatbot is polled again after that delivery, and nothing more went out.
	sent := time.Now()
	require.Eventually(t, func() bool {
		code, out, _ := runMain(t, "status", "--json", "--config", elsewhere)
		if code != 0 || json.Unmarshal([]byte(out), &st) != nil {
			return false
		}
		for _, c := range st.Chatbots {
			if !c.LastOK.After(sent) {
				return false
			}
		}
		return true
	}, 20*time.Second, 200*time.Millisecond)
	assert.Equal(t, 1, sink.Count(), "the baseline is never sent; the new record once")
}
