package main

import (
	"context"
	"io"
)

func dlqCmd(context.Context, []string, io.Writer, io.Writer) error { return usageErrorf("not yet") }
func forwarderCmd(context.Context, []string, io.Writer, io.Writer) error {
	return usageErrorf("not yet")
}
func statusCmd(context.Context, []string, io.Writer, io.Writer) error { return usageErrorf("not yet") }
func healthcheckCmd(context.Context, []string, io.Writer, io.Writer) error {
	return usageErrorf("not yet")
}
