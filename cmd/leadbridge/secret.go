package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
)

// secretCmd prints a fresh Standard Webhooks signing secret for a webhook forwarder's
// secret: "whsec_" and the base64 of 32 random bytes.
func secretCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("secret", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	key := make([]byte, 32)
	_, _ = rand.Read(key) // never fails (crypto/rand)
	fmt.Fprintln(stdout, "whsec_"+base64.StdEncoding.EncodeToString(key))
	return nil
}
