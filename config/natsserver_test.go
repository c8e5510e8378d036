package config

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// bus is a forwarders list with one nats forwarder on the embedded server (lines 6-9).
const bus = `forwarders:
  - name: bus
    type: nats
    url: embedded
`

func TestEmbeddedNATSServer(t *testing.T) {
	c := parseOK(t, head+bus+"nats_server:\n  listen: 127.0.0.1:4222\n  store_dir: ./nats\n  user: lb\n  password: pw123456\n")
	require.NotNil(t, c.NATSServer)
	assert.Equal(t, NATSServer{Listen: "127.0.0.1:4222", StoreDir: "./nats", User: "lb", Password: "pw123456"}, *c.NATSServer)
	assert.Equal(t, EmbeddedNATS, c.Forwarders[0].NATSConfig().URL)

	c = parseOK(t, head+hook)
	assert.Nil(t, c.NATSServer, "no nats_server key: no embedded server")
	c = parseOK(t, head+hook+"nats_server:\n")
	assert.Nil(t, c.NATSServer, "an empty nats_server key: no embedded server")
	c = parseOK(t, head+hook+"nats_server: {listen: ':4222', store_dir: /var/lib/leadbridge/nats, token: t0k3n-abc}\n")
	assert.Equal(t, "t0k3n-abc", c.NATSServer.Token)
}

func TestEmbeddedNATSServerErrors(t *testing.T) {
	t.Setenv("LB_TEST_NATS_PW", "pw-from-env-7731")
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{"url embedded without nats_server", head + bus,
			[]string{"forwarders[0].url: embedded needs nats_server (the embedded NATS server) to be configured (line 9)"}},
		{"listen and store_dir required", head + hook + "nats_server: {user: lb, password: ${LB_TEST_NATS_PW}}\n",
			[]string{"nats_server.listen: required", "nats_server.store_dir: required"}},
		{"listen not host:port", head + hook + "nats_server:\n  listen: localhost\n  store_dir: ./nats\n",
			[]string{`nats_server.listen: must be host:port, got "localhost" (line 11)`}},
		{"listen port out of range", head + hook + "nats_server:\n  listen: 127.0.0.1:70000\n  store_dir: ./nats\n",
			[]string{`nats_server.listen: must be host:port, got "127.0.0.1:70000" (line 11)`}},
		{"listen is http.listen", head + hook + "http: {listen: '127.0.0.1:9108'}\nnats_server:\n  listen: 127.0.0.1:9108\n  store_dir: ./nats\n",
			[]string{"nats_server.listen: is also http.listen; give each its own port (line 12)"}},
		{"password without user", head + hook + "nats_server:\n  listen: 127.0.0.1:4222\n  store_dir: ./nats\n  password: ${LB_TEST_NATS_PW}\n",
			[]string{"nats_server.user: required with password"}},
		{"user without password", head + hook + "nats_server:\n  listen: 127.0.0.1:4222\n  store_dir: ./nats\n  user: lb\n",
			[]string{"nats_server.password: required with user"}},
		{"user and token", head + hook + "nats_server:\n  listen: 127.0.0.1:4222\n  store_dir: ./nats\n  user: lb\n  password: ${LB_TEST_NATS_PW}\n  token: ${LB_TEST_NATS_PW}\n",
			[]string{"nats_server.token: cannot be combined with user"}},
		{"password from an unset variable", head + hook + "nats_server:\n  listen: 127.0.0.1:4222\n  store_dir: ./nats\n  user: lb\n  password: ${LB_TEST_UNSET_NATS_PW}\n",
			[]string{"nats_server.password: empty (is the environment variable set?) (line 14)"}},
		{"unknown key", head + hook + "nats_server:\n  listen: 127.0.0.1:4222\n  store_dir: ./nats\n  jetstream: false\n",
			[]string{"nats_server.jetstream: unknown key (line 13)"}},
		{"a list where the mapping belongs", head + hook + "nats_server: [a]\n",
			[]string{"nats_server: expected a mapping, got a list (line 10)"}},
		{"forwarder credentials with url embedded", head + bus + "    user: me\n    password: ${LB_TEST_NATS_PW}\n    tls: {ca_file: /etc/ca.pem}\n" +
			"nats_server: {listen: '127.0.0.1:4222', store_dir: ./nats}\n",
			[]string{"forwarders[0].user: not used with url: embedded: the forwarder presents nats_server's credentials (line 10)",
				"forwarders[0].password: not used with url: embedded", "forwarders[0].tls.ca_file: not used with url: embedded"}},
		{"embedded in a list", head + "forwarders:\n  - name: bus\n    type: nats\n    url: nats://a:4222,embedded\n" +
			"nats_server: {listen: '127.0.0.1:4222', store_dir: ./nats}\n",
			[]string{"forwarders[0].url: embedded stands alone: it cannot be one of a list of servers (line 9)"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml), "test.yaml")
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "pw-from-env-7731", "the password is never in a message")
		})
	}
}
