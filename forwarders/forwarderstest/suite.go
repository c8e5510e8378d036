// Package forwarderstest is the shared test every forwarder passes: each kind of target
// failure is classified the same way (retryable, rate limited, permanent), and no secret
// and none of the lead's personal data leaks into a returned error, however hostile the
// target's answer.
package forwarderstest

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/leadbridge/leadbridge/event"
	"github.com/leadbridge/leadbridge/forwarders"
)

// Fault is a way the target behaves for one delivery attempt.
type Fault string

// The faults a Harness can stage.
const (
	OK          Fault = "ok"          // the target takes the event
	Retryable   Fault = "retryable"   // a passing failure (HTTP 503, no ack, server error)
	RateLimited Fault = "ratelimited" // HTTP 429 with Retry-After: 2
	Permanent   Fault = "permanent"   // a failure retrying cannot fix (HTTP 400, invalid_auth)
	Unreachable Fault = "unreachable" // nothing listens at the target's address
	// EchoSecret is a refusal (HTTP 401/403, or Slack's ok:false) whose body, or error
	// code, is nothing but one of the harness's Secrets (a token, a header value).
	EchoSecret Fault = "echosecret"
	// EchoLead is a refusal (HTTP 422, or Slack's ok:false) that quotes the lead back: the
	// first word of its name as the error code, and the lead's name, email and phone in
	// every free-text field the target's protocol has (Slack's response_metadata.messages).
	EchoLead Fault = "echolead"
	// PhoneWord is a refusal (HTTP 422, or Slack's ok:false) whose whole body, or error
	// code, is a bare phone number: PhoneNumber.
	PhoneWord Fault = "phoneword"
)

// PhoneNumber is the phone number a PhoneWord target answers with.
const PhoneNumber = "5551234567"

// PersonalData is what no error may contain of the SampleEvent: its name, email, phone and
// content, the first word of its name, and PhoneNumber.
func PersonalData() []string {
	l := SampleEvent().Data
	return []string{l.Name, l.Email, l.Phone, l.Content, strings.Fields(l.Name)[0], "evil.example", PhoneNumber}
}

// Harness tells the suite how to build a forwarder of one kind against a target staged
// to behave as the fault says. Faults lists those the kind can stage; OK is required.
type Harness struct {
	// Name is the forwarder name New must configure; errors must mention it.
	Name string
	// New builds the forwarder; the suite calls it once per fault.
	New func(t *testing.T, fault Fault) forwarders.Forwarder
	// Faults are the faults this kind supports.
	Faults []Fault
	// Secrets are strings (tokens, passwords, secret URLs) no error may contain.
	Secrets []string
}

// SampleEvent is a created appointment event whose text tries markup injection.
func SampleEvent() event.Event {
	return event.NewCreated(event.Lead{
		Chatbot:     "3254a9d0424c4806b9ea3d0763ccf000",
		ChatbotName: "Main site",
		Kind:        event.KindAppointment,
		Name:        "Ada <!channel>",
		Email:       "ada@example.com",
		Phone:       "+1 555 0100",
		Content:     "Call me <https://evil.example|here> & soon",
		SessionID:   31313,
		URI:         "www.example.com",
		Count:       2,
		CreatedAt:   time.Date(2023, 11, 22, 3, 13, 44, 54019000, time.UTC),
	})
}

// Run runs the shared suite against h.
func Run(t *testing.T, h Harness) {
	t.Helper()
	require.Contains(t, h.Faults, OK, "a harness must support the OK fault")
	for _, fault := range h.Faults {
		t.Run(string(fault), func(t *testing.T) {
			f := h.New(t, fault)
			require.Equal(t, h.Name, f.Name())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := f.Deliver(ctx, SampleEvent())
			if fault == OK {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), h.Name, "the error names the forwarder")
			for _, s := range h.Secrets {
				if s != "" {
					assert.NotContains(t, err.Error(), s, "a secret leaked into the error")
				}
			}
			for _, p := range PersonalData() {
				assert.NotContains(t, err.Error(), p, "personal data leaked into the error")
			}
			switch fault {
			case Permanent, EchoSecret, EchoLead, PhoneWord:
				assert.True(t, forwarders.IsPermanent(err), "want permanent: %v", err)
			case RateLimited:
				assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
				assert.GreaterOrEqual(t, forwarders.RetryAfterOf(err), time.Second, "Retry-After honoured")
			case Retryable, Unreachable:
				assert.False(t, forwarders.IsPermanent(err), "want retryable: %v", err)
			}
		})
	}
}
