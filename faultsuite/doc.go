// Package faultsuite holds leadbridge's process-level fault suite (TestFaults): it builds
// the leadbridge binary and runs it as a daemon against a simulated LeadList API, an
// in-process NATS server with JetStream, webhook sinks and a Slack stand-in, injects
// faults on every side (API errors, target errors and timeouts, a NATS outage, SIGKILL
// and SIGTERM of the bridge), and checks that every record reached every target that
// wants it, counting repeats. The package has no code outside its tests.
package faultsuite
