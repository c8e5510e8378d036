package main

import (
	"context"
	"fmt"
	"io"

	"github.com/leadbridge/leadbridge/forwarders/webhook"
)

// secretCmd prints a fresh Standard Webhooks signing secret for a webhook forwarder's
// secret (webhook.NewSecret).
func secretCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("secret", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintln(stdout, webhook.NewSecret())
	return nil
}
