package webhook

import (
	"crypto/rand"
	"encoding/base64"
)

// NewSecret returns a fresh Standard Webhooks signing secret for a webhook forwarder's
// secret key: "whsec_" and the base64 of 32 random bytes.
func NewSecret() string {
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	return secretPrefix + base64.StdEncoding.EncodeToString(key)
}
