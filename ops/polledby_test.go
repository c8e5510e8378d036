package ops_test

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/ops"
)

// With replicas sharing the chatbots, the chatbot table names the replica polling each
// ("-" while none holds it); without, the table keeps its columns.
func TestWriteStatusPolledBy(t *testing.T) {
	s := ops.Status{Version: "1.2.3", Chatbots: []ops.ChatbotStatus{
		{Serial: serialA, Name: chatbotName, Account: "default", PolledBy: "node1-412-0a1b2c3d"},
		{Serial: serialB, Name: "Shop", Account: "default"},
	}}
	var b strings.Builder
	require.NoError(t, ops.WriteStatus(&b, s, ops.StatusView{}))
	out := b.String()
	assert.Regexp(t, `(?m)^CHATBOT\s+SERIAL\s+ACCOUNT\s+POLLED BY\s+LAST POLL\s+SEEN\s+RESULT$`, out)
	assert.Regexp(t, `(?m)^Main site\s+`+serialA+`\s+default\s+node1-412-0a1b2c3d\s+never\s+0\s+not polled yet$`, out)
	assert.Regexp(t, `(?m)^Shop\s+`+serialB+`\s+default\s+-\s+never\s+0\s+not polled yet$`, out)

	s.Chatbots[0].PolledBy = ""
	b.Reset()
	require.NoError(t, ops.WriteStatus(&b, s, ops.StatusView{}))
	assert.Regexp(t, `(?m)^CHATBOT\s+SERIAL\s+ACCOUNT\s+LAST POLL\s+SEEN\s+RESULT$`, b.String())
	assert.NotContains(t, b.String(), "POLLED BY")
}
