package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/forwarders/forwarderstest"
)

// The headers of a signed delivery take a handful of allocations, not one or more per
// header (canonicalising Set, a fresh HMAC keyed anew for each request), and still say
// the same: configured extras, the forwarder's own headers, a signature a receiver
// checks with the key.
func TestHeaderBuildsCheaply(t *testing.T) {
	const secret = "whsec_c2VjcmV0LWtleS1mb3ItbGVhZGJyaWRnZS10ZXN0cyE="
	f, err := New(Config{Name: "crm", URL: "http://crm.example/hook", Secret: secret,
		Headers: map[string]string{"authorization": "Bearer T0KEN"}}, nil)
	require.NoError(t, err)
	ev := forwarderstest.SampleEvent()
	body := []byte(`{"id":"x"}`)
	now := time.Unix(1_700_000_000, 0)

	if !raceEnabled {
		allocs := testing.AllocsPerRun(100, func() { f.header(ev, body, contentTypeCloudEvent, now) })
		assert.LessOrEqual(t, allocs, 6.0, "allocations per request's headers")
	}

	h := f.header(ev, body, contentTypeCloudEvent, now)
	key, err := signingKey(secret)
	require.NoError(t, err)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(ev.ID + ".1700000000." + string(body)))
	want := "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	for _, c := range []struct{ name, want string }{
		{"User-Agent", f.userAgent},
		{"Authorization", "Bearer T0KEN"},
		{"Content-Type", contentTypeCloudEvent},
		{"Webhook-Id", ev.ID},
		{"Webhook-Timestamp", "1700000000"},
		{"Webhook-Signature", want},
	} {
		assert.Equal(t, []string{c.want}, h.Values(c.name), c.name)
	}
	assert.Len(t, h, 6)
	assert.Equal(t, h.Get("Webhook-Signature"), f.header(ev, body, contentTypeCloudEvent, now).Get("Webhook-Signature"),
		"a signer used again signs the same")
}
