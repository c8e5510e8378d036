package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
)

// agency is a neoagent section with the top-level (default) account and two more (lines 1-19).
const agency = `neoagent:
  api_key: key123
  max_rps: 2
  chatbots:
    - serial: bot1
  accounts:
    - name: client-a
      base_url: https://a.example
      api_key: key-a
      timeout: 10s
      max_rps: 7.5
      chatbots:
        - {serial: a1, name: Main site, interval: 30s}
        - {serial: a2, lookback: 72h}
    - name: reseller
      base_url: https://ai.reseller.example
      api_key: key-r
      chatbots:
        - serial: r1
`

// retention is a store section placed after agency and its additions.
const retention = "store:\n  retention: 2160h\n"

func TestAccountsAndTheDefaultAccount(t *testing.T) {
	c := parseOK(t, agency+retention+hook+"    accounts: [client-a]\n")
	all := c.AllAccounts()
	require.Len(t, all, 3)
	assert.Equal(t, Account{Name: event.DefaultAccount, BaseURL: "https://app.neoagent.co", APIKey: "key123",
		Timeout: 30 * time.Second, MaxRPS: 2, Chatbots: []Chatbot{{Serial: "bot1", Name: "bot1"}}}, all[0])
	assert.Equal(t, Account{Name: "client-a", BaseURL: "https://a.example", APIKey: "key-a", Timeout: 10 * time.Second,
		MaxRPS: 7.5, Chatbots: []Chatbot{{Serial: "a1", Name: "Main site", Interval: 30 * time.Second},
			{Serial: "a2", Name: "a2", Lookback: 72 * time.Hour}}}, all[1])
	// Left out: timeout and max_rps from neoagent's.
	assert.Equal(t, Account{Name: "reseller", BaseURL: "https://ai.reseller.example", APIKey: "key-r",
		Timeout: 30 * time.Second, MaxRPS: 2, Chatbots: []Chatbot{{Serial: "r1", Name: "r1"}}}, all[2])

	assert.Equal(t, []event.Chatbot{
		{Serial: "bot1", Name: "bot1", Account: "default"},
		{Serial: "a1", Name: "Main site", Account: "client-a", Interval: 30 * time.Second},
		{Serial: "a2", Name: "a2", Account: "client-a", Lookback: 72 * time.Hour},
		{Serial: "r1", Name: "r1", Account: "reseller"},
	}, c.Chatbots())
	cb, ok := c.Chatbot("r1")
	require.True(t, ok)
	assert.Equal(t, "r1", cb.Name)

	ev := func(account string) event.Event {
		return event.NewCreated(event.Lead{Account: account, Chatbot: "a1", Kind: event.KindLead, CreatedAt: time.Unix(0, 0)})
	}
	assert.Equal(t, []string{"crm"}, c.Route(ev("client-a")))
	assert.Empty(t, c.Route(ev("reseller")), "the accounts filter keeps other accounts' events out")
}

// With neoagent.accounts alone, there is no default account and no top-level key needed.
func TestAccountsWithoutTheDefaultAccount(t *testing.T) {
	c := parseOK(t, "neoagent:\n  accounts:\n    - {name: default, api_key: k, chatbots: [{serial: x}]}\n"+hook)
	require.Len(t, c.AllAccounts(), 1)
	a, ok := c.Account("default")
	require.True(t, ok)
	assert.Equal(t, "https://app.neoagent.co", a.BaseURL, "base_url from neoagent.base_url's default")
	assert.Equal(t, DefaultMaxRPS, a.MaxRPS)
}

func TestAccountErrorsNameTheirKeyPaths(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"serial in two accounts", agency + "        - serial: a1\n" + retention + hook,
			[]string{`neoagent.accounts[1].chatbots[1].serial: duplicate serial "a1" (also neoagent.accounts[0].chatbots[0]): a serial belongs to one account only (line 20)`}},
		{"serial in the default account and another", agency + "        - serial: bot1\n" + retention + hook,
			[]string{`neoagent.accounts[1].chatbots[1].serial: duplicate serial "bot1" (also neoagent.chatbots[0])`}},
		{"account name twice", agency + "    - {name: client-a, api_key: k, chatbots: [{serial: z}]}\n" + retention + hook,
			[]string{`neoagent.accounts[2].name: duplicate account name "client-a" (also neoagent.accounts[0]) (line 20)`}},
		{"an account named default beside top-level chatbots", agency + "    - {name: default, api_key: k, chatbots: [{serial: z}]}\n" + retention + hook,
			[]string{`neoagent.accounts[2].name: duplicate account name "default" (also neoagent (the top-level account, named default))`}},
		{"account without name, key or chatbots", "neoagent:\n  accounts:\n    - base_url: https://x.example\n" + hook,
			[]string{"neoagent.accounts[0].name: required (line 3)", "neoagent.accounts[0].api_key: required (line 3)",
				"neoagent.accounts[0].chatbots: at least one chatbot is required (line 3)"}},
		{"bad account keys", "neoagent:\n  accounts:\n    - {name: a.b, api_key: k, base_url: ftp://x, timeout: 0s, max_rps: 0, chatbots: [{serial: z}]}\n" + hook,
			[]string{`neoagent.accounts[0].name: must be letters, digits, - and _, got "a.b"`,
				`neoagent.accounts[0].base_url: must be an http or https URL, got ftp://x`,
				"neoagent.accounts[0].timeout: must be positive, got 0s",
				"neoagent.accounts[0].max_rps: must be above 0 and at most 1000 requests per second, got 0"}},
		{"infinite budget", head + "  max_rps: .inf\n" + hook,
			[]string{"neoagent.max_rps: must be above 0 and at most 1000 requests per second, got +Inf (line 6)"}},
		{"unknown key in an account", "neoagent:\n  accounts:\n    - {name: a, api_key: k, chatbots: [{serial: z}], apikey: x}\n" + hook,
			[]string{"neoagent.accounts[0].apikey: unknown key (line 3)"}},
		{"forwarder for an unknown account", agency + retention + hook + "    accounts: [client-b]\n",
			[]string{`forwarders[0].accounts[0]: unknown account "client-b" (not a name in neoagent.accounts, nor default with top-level neoagent.chatbots) (line 26)`}},
		{"chatbot interval and lookback too short", "neoagent:\n  api_key: k\n  chatbots:\n    - {serial: x, interval: 500ms, lookback: 1h}\n" + hook,
			[]string{"neoagent.chatbots[0].interval: must be at least 1s, got 500ms (line 4)",
				"neoagent.chatbots[0].lookback: must be at least 24h0m0s, got 1h0m0s (line 4)"}},
		{"explicit zero interval", "neoagent:\n  api_key: k\n  chatbots:\n    - {serial: x, interval: 0s}\n" + hook,
			[]string{"neoagent.chatbots[0].interval: must be at least 1s, got 0s (line 4)"}},
		{"chatbot lookback beyond retention", agency + "        - {serial: r2, lookback: 2112h}\n" + retention + hook,
			[]string{"neoagent.accounts[1].chatbots[1].lookback: must be below store.retention (2160h0m0s) - 48h0m0s = 2112h0m0s, got 2112h0m0s (line 20)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), "test.yaml")
			var ve *ValidationError
			require.ErrorAs(t, err, &ve)
			for _, w := range tt.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.Len(t, ve.Problems, len(tt.want), err.Error())
		})
	}
}
