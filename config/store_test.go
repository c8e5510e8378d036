package config

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestStoreBackendNATS(t *testing.T) {
	c := parseOK(t, head+hook+`store:
  backend: nats
  retention: 2160h
  nats:
    url: nats://n1:4222,nats://n2:4222
    prefix: lb-prod
    replicas: 3
    user: leadbridge
    password: s3cret-pass
    timeout: 2s
`)
	assert.Equal(t, BackendNATS, c.Store.Backend)
	assert.Equal(t, StoreNATS{URL: "nats://n1:4222,nats://n2:4222", Prefix: "lb-prod", Replicas: 3,
		User: "leadbridge", Password: "s3cret-pass", Timeout: 2 * time.Second}, c.Store.NATS)

	d := parseOK(t, head+hook+"store:\n  backend: nats\n  nats:\n    url: nats://127.0.0.1:4222\n")
	assert.Equal(t, StoreNATS{URL: "nats://127.0.0.1:4222", Prefix: "leadbridge", Replicas: 1, Timeout: 5 * time.Second}, d.Store.NATS, "defaults")
}

func TestStoreBackendProblems(t *testing.T) {
	for _, tc := range []struct {
		name, store string
		want        []string
	}{
		{"path with nats", "store:\n  backend: nats\n  path: ./lb.db\n  nats:\n    url: nats://127.0.0.1:4222\n",
			[]string{"store.path: belongs to the bbolt backend; remove it with store.backend: nats (line 12)"}},
		{"nats without url", "store:\n  backend: nats\n",
			[]string{"store.nats.url: required"}},
		{"replicas out of range", "store:\n  backend: nats\n  nats:\n    url: nats://127.0.0.1:4222\n    replicas: 6\n",
			[]string{"store.nats.replicas: must be 1..5, got 6 (line 14)"}},
		{"bad prefix", "store:\n  backend: nats\n  nats:\n    url: nats://127.0.0.1:4222\n    prefix: lead.bridge\n",
			[]string{`store.nats.prefix: must be letters, digits, - and _, got "lead.bridge" (line 14)`}},
		{"user without password", "store:\n  backend: nats\n  nats:\n    url: nats://127.0.0.1:4222\n    user: lb\n",
			[]string{"store.nats.password: required with user"}},
		{"two auth ways", "store:\n  backend: nats\n  nats:\n    url: nats://127.0.0.1:4222\n    token: tok-123456\n    user: lb\n    password: pw-123456\n",
			[]string{"store.nats.token: cannot be combined with user"}},
		{"nats keys with bbolt", "store:\n  path: ./lb.db\n  nats:\n    url: nats://127.0.0.1:4222\n",
			[]string{"store.nats: only with store.backend: nats (the backend is bbolt) (line 12)"}},
		{"unknown backend", "store:\n  backend: redis\n",
			[]string{`store.backend: must be one of bbolt, nats, got "redis" (line 11)`}},
		{"unknown nats key", "store:\n  backend: nats\n  nats:\n    url: nats://127.0.0.1:4222\n    subject: x\n",
			[]string{"store.nats.subject: unknown key (line 14)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(head+hook+tc.store), "test.yaml")
			require.Error(t, err)
			for _, w := range tc.want {
				assert.Contains(t, err.Error(), w)
			}
			assert.NotContains(t, err.Error(), "pw-123456", "no secret in an error")
			assert.NotContains(t, err.Error(), "tok-123456", "no secret in an error")
		})
	}
}
