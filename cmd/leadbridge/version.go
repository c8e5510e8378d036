package main

import (
	"context"
	"fmt"
	"io"
)

// versionCmd prints the version set at build time.
func versionCmd(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "leadbridge %s\n", Version)
	return nil
}
