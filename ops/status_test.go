package ops_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/ops"
)

func TestWriteStatus(t *testing.T) {
	now := time.Now()
	longErr := "LeadList HTTP 500 Internal Server Error: upstream timed out while\nreading the response body from the backend cluster number seven"
	s := ops.Status{
		Version: "1.2.3",
		Daemon:  true,
		Chatbots: []ops.ChatbotStatus{
			{Serial: serialA, Name: chatbotName, Account: "default", LastPoll: now.Add(-2*time.Minute - 5*time.Second), LastOK: now.Add(-2 * time.Minute), Seen: 120},
			{Serial: serialB, Name: "Shop", Account: "default", LastPoll: now.Add(-40 * time.Second), LastOK: now.Add(-3 * time.Hour), LastError: longErr, Seen: 7},
			{Serial: "c0ffee", Name: "New bot", Account: "client-a"},
		},
		Forwarders: []ops.ForwarderStatus{
			{Name: "bus", Type: "nats", Pending: 0},
			{Name: "crm", Type: "webhook", Pending: 3, Dead: 1, Paused: true,
				PausedReason: "webhook crm: HTTP 410 Gone", PausedSince: now.Add(-90 * time.Minute)},
			{Name: "old", Type: ops.TypeUnconfigured, Pending: 1},
			{Name: "gone", Type: ops.TypeUnconfigured, Dead: 2},
		},
	}
	var b strings.Builder
	require.NoError(t, ops.WriteStatus(&b, s, ops.StatusView{}))
	out := b.String()
	t.Log("\n" + out)

	lines := strings.Split(out, "\n")
	line := func(prefix string) string {
		for _, l := range lines {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		require.Failf(t, "no line", "starting with %q in\n%s", prefix, out)
		return ""
	}
	assert.Contains(t, lines[0], "1.2.3")
	assert.Contains(t, lines[0], "daemon running")

	assert.Regexp(t, `^default\s+2\s+1\s+1\s+0\s+127\s+40s ago$`, line("default "))
	assert.Regexp(t, `^client-a\s+1\s+0\s+0\s+1\s+0\s+never$`, line("client-a "))
	assert.Regexp(t, `^Main site\s+`+serialA+`\s+default\s+2m ago\s+120\s+ok$`, line(chatbotName))
	shop := line("Shop ")
	assert.Regexp(t, `^Shop\s+`+serialB+`\s+default\s+40s ago\s+7\s+error: LeadList HTTP 500 Internal Server Error: upstream \S+ \S+…$`, shop)
	assert.NotContains(t, out, "cluster number seven", "long errors are cut")
	assert.Contains(t, line("New bot"), "never")
	assert.Contains(t, line("New bot"), "not polled yet")

	assert.Regexp(t, `^bus\s+nats\s+0\s+0\s+running`, line("bus "))
	assert.Regexp(t, `^crm\s+webhook\s+3\s+1\s+PAUSED 1h ago: webhook crm: HTTP 410 Gone`, line("crm "))
	assert.Regexp(t, "^old\\s+unconfigured\\s+1\\s+0\\s+STRANDED: not in the config; `outbox move --from old --to NEW` or `outbox drop --forwarder old`$", line("old "))
	assert.Regexp(t, "^gone\\s+unconfigured\\s+0\\s+2\\s+not in the config; its dead letters: `dlq drop --forwarder gone --all`$", line("gone "))

	assert.Equal(t, "3 chatbots in 2 accounts (1 failing), 4 forwarders (1 paused), 4 pending (1 stranded), 3 dead letters", lines[len(lines)-2])
}

func TestLocalStatusWithoutDaemon(t *testing.T) {
	s := openStore(t, "bus")
	ingest(t, s, 2)
	local := &ops.Local{
		Store:      s,
		Chatbots:   []event.Chatbot{{Serial: serialA, Name: chatbotName}},
		Forwarders: []ops.ForwarderInfo{{Name: "bus", Type: "webhook"}},
		Version:    "1.2.3",
	}
	st, err := local.Status(t.Context())
	require.NoError(t, err)
	assert.False(t, st.Daemon)
	assert.Equal(t, []ops.ForwarderStatus{{Name: "bus", Type: "webhook", Pending: 2}}, st.Forwarders)
	assert.Equal(t, 2, st.Chatbots[0].Seen)

	require.NoError(t, s.Pause(t.Context(), "bus", "gone", "hash"))
	was, err := local.Resume(t.Context(), "bus")
	require.NoError(t, err)
	assert.True(t, was, "resume works on the store alone")

	var b strings.Builder
	require.NoError(t, ops.WriteStatus(&b, st, ops.StatusView{}))
	assert.Contains(t, b.String(), "daemon not running")
	assert.Contains(t, b.String(), "not polled yet")
}

// With a thousand chatbots in two accounts, status is a line per account and the failing
// chatbots; --account, --failing and --all pick what is shown.
func TestWriteStatusAtScale(t *testing.T) {
	now := time.Now()
	s := ops.Status{Version: "1.2.3", Daemon: true}
	for i := range 1000 {
		c := ops.ChatbotStatus{Serial: fmt.Sprintf("bot%04d", i), Name: fmt.Sprintf("Site %d", i), Account: "client-a",
			LastPoll: now.Add(-time.Minute), LastOK: now.Add(-time.Minute), Seen: 1}
		if i%2 == 1 {
			c.Account = "reseller"
		}
		if i == 7 || i == 500 || i == 999 {
			c.LastError = "LeadList HTTP 503"
		}
		s.Chatbots = append(s.Chatbots, c)
	}
	write := func(v ops.StatusView) (string, []string) {
		t.Helper()
		var b strings.Builder
		require.NoError(t, ops.WriteStatus(&b, s, v))
		return b.String(), strings.Split(strings.TrimSpace(b.String()), "\n")
	}

	out, lines := write(ops.StatusView{})
	t.Log("\n" + out)
	assert.Less(t, len(lines), 20, "readable: no line per healthy chatbot")
	assert.Regexp(t, `(?m)^client-a\s+500\s+499\s+1\s+0\s+500\s+1m ago$`, out)
	assert.Regexp(t, `(?m)^reseller\s+500\s+498\s+2\s+0\s+500\s+1m ago$`, out)
	for _, serial := range []string{"bot0007", "bot0500", "bot0999"} {
		assert.Regexp(t, `(?m)^Site \d+\s+`+serial+`\s+\S+\s+1m ago\s+1\s+error: LeadList HTTP 503$`, out)
	}
	assert.Contains(t, out, "(997 chatbots not failing, not listed: --all lists them)")
	assert.Contains(t, out, "1000 chatbots in 2 accounts (3 failing)")

	out, _ = write(ops.StatusView{Account: "reseller"})
	assert.NotContains(t, out, "client-a")
	assert.Contains(t, out, "bot0007")
	assert.NotContains(t, out, "bot0500")
	assert.Contains(t, out, "500 chatbots in 1 account (2 failing)")

	out, _ = write(ops.StatusView{Account: "client-a", Failing: true})
	assert.Contains(t, out, "bot0500")
	assert.NotContains(t, out, "not listed")
	assert.NotContains(t, out, "reseller")

	_, lines = write(ops.StatusView{All: true})
	assert.Greater(t, len(lines), 1000, "--all lists every chatbot")

	var b strings.Builder
	err := ops.WriteStatus(&b, s, ops.StatusView{Account: "client-b"})
	assert.EqualError(t, err, `status: no account "client-b" among the chatbots (accounts: client-a, reseller)`)
	filtered, err := ops.StatusView{Failing: true}.Filter(s)
	require.NoError(t, err)
	assert.Len(t, filtered.Chatbots, 3, "status --json --failing")
}
