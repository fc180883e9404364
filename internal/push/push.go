// Package push sends pushes to devices through Apple's and Google's push
// services. A Provider is one push service; with no credentials configured
// for a service, the logging provider records each push in the server log
// instead, and apps poll.
//
// A push never carries a secret, a user name or sign-in context: only what
// kind of news it is and the challenge it concerns, so the app fetches the
// details over its own authenticated channel.
package push

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// Kinds of message.
const (
	KindChallenge    = "challenge"
	KindNotification = "notification"
)

// Message is one push to one device.
type Message struct {
	// DeliveryID identifies the delivery row.
	DeliveryID string
	DeviceID   string
	// Provider is the device's push service (apns or fcm).
	Provider string
	// Token is the device's push token; providers must never log it.
	Token string
	// Kind is KindChallenge (an alert the user acts on) or KindNotification
	// (a background push: news for the app).
	Kind string
	// Event names the notification (device_added, device_removed,
	// challenge_resolved), or is empty for a challenge.
	Event       string
	ChallengeID string
	// Expires is when the push stops being worth delivering: the
	// challenge's expiry, or the notification's end of life.
	Expires time.Time
}

// NotificationLifetime is how long a notification is worth delivering.
const NotificationLifetime = time.Hour

// Provider delivers messages.
type Provider interface {
	// Name is stored on the delivery row ("apns", "fcm", "log").
	Name() string
	// Send hands m to the push service and returns the service's id for it
	// (the apns-id, the FCM message name). Failures are *Error.
	Send(ctx context.Context, m Message) (string, error)
}

// Class says what a failed send means for the delivery and the device.
type Class int

const (
	// Retry is transient (rate limit, server error, network): try again
	// later, after RetryAfter when the service said.
	Retry Class = iota + 1
	// TokenInvalid means the device's token is dead (the app was removed or
	// the token rotated): the device goes poll-only until it registers a new
	// one.
	TokenInvalid
	// ProviderFault is our side's fault toward the service (a bad key, a
	// topic the key may not use, a permission): no device is to blame.
	ProviderFault
	// Rejected is a refusal of this message that retrying will not change.
	Rejected
)

func (c Class) String() string {
	switch c {
	case Retry:
		return "retry"
	case TokenInvalid:
		return "token_invalid"
	case ProviderFault:
		return "provider_fault"
	case Rejected:
		return "rejected"
	}
	return "unknown"
}

// Error is a failed send.
type Error struct {
	Provider string
	Class    Class
	// Status is the HTTP status the service answered (0 without an answer).
	Status int
	// Reason is the service's reason code (BadDeviceToken, UNREGISTERED...)
	// or a short description; never a token.
	Reason string
	// RetryAfter is the wait the service asked for, when it did.
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Status != 0 {
		return fmt.Sprintf("%s: %d %s", e.Provider, e.Status, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.Provider, e.Reason)
}

// Classify returns the send error as *Error; an error of another type (a
// provider bug) is a Retry, so nothing is lost.
func Classify(provider string, err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Provider: provider, Class: Retry, Reason: err.Error()}
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Router picks the provider for a device's push service: the real service
// when it is configured, else the logging provider.
type Router struct {
	APNs, FCM Provider // nil when not configured
	Log       Provider
}

// For returns the provider for a device whose push service is name.
func (r Router) For(name string) Provider {
	switch {
	case name == "apns" && r.APNs != nil:
		return r.APNs
	case name == "fcm" && r.FCM != nil:
		return r.FCM
	}
	return r.Log
}

// LogProvider records pushes in the log, without the token.
type LogProvider struct{ Logger *slog.Logger }

// Name is "log".
func (LogProvider) Name() string { return "log" }

// Send logs the push.
func (p LogProvider) Send(_ context.Context, m Message) (string, error) {
	p.Logger.Info("push (logging provider: no credentials configured for this push service)",
		"delivery_id", m.DeliveryID, "device_id", m.DeviceID, "device_provider", m.Provider,
		"kind", m.Kind, "event", m.Event, "challenge_id", m.ChallengeID)
	return "log-" + m.DeliveryID, nil
}
