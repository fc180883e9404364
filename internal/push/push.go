// Package push sends pushes to devices. A Provider is one push service
// (APNs, FCM); with no credentials configured, the logging provider records
// each push in the server log instead, and apps poll.
package push

import (
	"context"
	"log/slog"
)

// Message is one push. It never carries a secret, a user name or sign-in
// context: only what kind of news it is and the challenge id, so the app
// fetches details over its authenticated channel.
type Message struct {
	// DeliveryID identifies the delivery row.
	DeliveryID string
	DeviceID   string
	// Provider is the device's push service (apns or fcm).
	Provider string
	// Token is the device's push token; providers must never log it.
	Token string
	// Kind is "challenge" or "notification".
	Kind string
	// Event names the notification (device_added, device_removed,
	// challenge_resolved), or is empty for a challenge.
	Event       string
	ChallengeID string
}

// Provider delivers messages.
type Provider interface {
	// Name is stored on the delivery row ("apns", "fcm", "log").
	Name() string
	// Send delivers m and returns the provider's message id.
	Send(ctx context.Context, m Message) (string, error)
}

// LogProvider records pushes in the log, without the token.
type LogProvider struct{ Logger *slog.Logger }

// Name is "log".
func (LogProvider) Name() string { return "log" }

// Send logs the push.
func (p LogProvider) Send(_ context.Context, m Message) (string, error) {
	p.Logger.Info("push (logging provider: no APNs/FCM credentials configured)",
		"delivery_id", m.DeliveryID, "device_id", m.DeviceID, "device_provider", m.Provider,
		"kind", m.Kind, "event", m.Event, "challenge_id", m.ChallengeID)
	return "log-" + m.DeliveryID, nil
}
