// Package forwarders owns the Forwarder contract, the error classification every target
// shares, and the Dispatcher that drains the durable outbox into forwarders with retries.
// Each target (nats, slack, webhook) is a sub-package implementing Forwarder.
package forwarders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/leadbridge/leadbridge/event"
)

// Forwarder delivers events to one configured target.
//
// Deliver makes exactly one attempt; the Dispatcher owns retries. It may be called
// concurrently for different events. A nil error means the target took the event.
// A failure is retried unless it is marked with Permanent (or Gone); a failure marked
// with RetryAfter asks the Dispatcher to wait at least that long before the next attempt.
// Errors never contain secrets (tokens, passwords, URLs that carry credentials).
type Forwarder interface {
	// Name is the forwarder's configured name, unique in a config.
	Name() string
	// Deliver makes one attempt to hand ev to the target.
	Deliver(ctx context.Context, ev event.Event) error
}

// Closer is implemented by forwarders that hold connections to release on shutdown.
type Closer interface {
	Close() error
}

// deliveryError carries how the Dispatcher should treat a failed attempt.
type deliveryError struct {
	err        error
	permanent  bool
	gone       bool
	retryAfter time.Duration
}

func (e *deliveryError) Error() string { return e.err.Error() }
func (e *deliveryError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the delivery goes to the dead letters.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &deliveryError{err: err, permanent: true}
}

// Gone marks err as the target saying it no longer exists (HTTP 410): the forwarder is
// paused and its deliveries stay in the outbox until an operator resumes it.
func Gone(err error) error {
	if err == nil {
		return nil
	}
	return &deliveryError{err: err, permanent: true, gone: true}
}

// RetryAfter marks err as retryable no sooner than d from now (a Retry-After header).
func RetryAfter(err error, d time.Duration) error {
	if err == nil {
		return nil
	}
	return &deliveryError{err: err, retryAfter: d}
}

// IsPermanent reports whether err was marked Permanent or Gone.
func IsPermanent(err error) bool {
	var de *deliveryError
	return errors.As(err, &de) && de.permanent
}

// IsGone reports whether err was marked Gone.
func IsGone(err error) bool {
	var de *deliveryError
	return errors.As(err, &de) && de.gone
}

// RetryAfterOf returns the wait asked for by err, or 0.
func RetryAfterOf(err error) time.Duration {
	var de *deliveryError
	if errors.As(err, &de) {
		return de.retryAfter
	}
	return 0
}

// Errorf builds an error that names the forwarder, for use inside Deliver.
func Errorf(forwarder, format string, args ...any) error {
	return fmt.Errorf("forwarder %q: "+format, append([]any{forwarder}, args...)...)
}

// SettingError is one problem with a forwarder's settings, as found by its package's
// Check, which owns the rules. Config places it under the forwarder's key path.
type SettingError struct {
	// Key is the setting's config key under the forwarder, such as "url" or "tls".
	Key string
	// Msg says what is wrong; it never quotes a secret.
	Msg string
}

// Error formats the problem as "key: msg".
func (e SettingError) Error() string { return e.Key + ": " + e.Msg }

// Begin is how every forwarder's New starts: the forwarder must have a name and its
// settings must pass its own check (probs). It returns the logger to use (one that
// discards when logger is nil) and fail, which prefixes an error with the forwarder's
// kind and name, as every error New returns is.
func Begin(kind, name string, logger *slog.Logger, probs []SettingError) (*slog.Logger, func(format string, args ...any) error, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if strings.TrimSpace(name) == "" {
		return nil, nil, fmt.Errorf("%s: name: must not be empty", kind)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%s %q: "+format, append([]any{kind, name}, args...)...)
	}
	if err := JoinSettingErrors(probs); err != nil {
		return nil, nil, fail("%w", err)
	}
	return logger, fail, nil
}

// JoinSettingErrors joins problems into one error ("key: msg; key: msg"), nil for none.
func JoinSettingErrors(probs []SettingError) error {
	if len(probs) == 0 {
		return nil
	}
	msgs := make([]string, len(probs))
	for i, p := range probs {
		msgs[i] = p.Error()
	}
	return errors.New(strings.Join(msgs, "; "))
}
