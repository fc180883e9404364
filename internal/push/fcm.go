package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"google.golang.org/api/option"
)

// FCMConfig is a Firebase service account.
type FCMConfig struct {
	CredentialsFile string
	ProjectID       string
	// Endpoint is the FCM v1 API, https://fcm.googleapis.com/v1 by default
	// (a fake in tests).
	Endpoint string
}

// FCM sends through the FCM HTTP v1 API with the Firebase Admin SDK.
type FCM struct {
	client *messaging.Client
}

// NewFCM reads the service account and prepares the client (it fetches an
// OAuth2 token on first use).
func NewFCM(ctx context.Context, cfg FCMConfig) (*FCM, error) {
	opts := []option.ClientOption{option.WithCredentialsFile(cfg.CredentialsFile)}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: cfg.ProjectID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("FCM_CREDENTIALS_FILE: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("FCM_CREDENTIALS_FILE: %w", err)
	}
	return &FCM{client: client}, nil
}

// Name is "fcm".
func (*FCM) Name() string { return "fcm" }

// Send pushes m as a data message: a challenge at high priority, living as
// long as the challenge and collapsing on its id; a notification at normal
// priority.
func (f *FCM) Send(ctx context.Context, m Message) (string, error) {
	data := map[string]string{"type": m.Kind}
	if m.ChallengeID != "" {
		data["challenge_id"] = m.ChallengeID
	}
	if m.Event != "" {
		data["event"] = m.Event
	}
	ttl := max(time.Until(m.Expires).Truncate(time.Second), 0)
	android := &messaging.AndroidConfig{Priority: "normal", TTL: &ttl}
	if m.Kind == KindChallenge {
		android.Priority, android.CollapseKey = "high", m.ChallengeID
	}
	name, err := f.client.Send(ctx, &messaging.Message{Token: m.Token, Data: data, Android: android})
	if err == nil {
		return name, nil
	}
	return "", fcmError(err)
}

// fcmError reads the SDK's error (firebase.google.com/docs/cloud-messaging,
// "FCM error codes").
func fcmError(err error) *Error {
	e := &Error{Provider: "fcm", Class: Rejected}
	if res := errorutils.HTTPResponse(err); res != nil {
		e.Status = res.StatusCode
		e.RetryAfter = retryAfter(res.Header, time.Now())
	}
	var oauth *oauth2.RetrieveError
	switch {
	case messaging.IsUnregistered(err):
		e.Class, e.Reason = TokenInvalid, "UNREGISTERED"
	case messaging.IsInvalidArgument(err):
		// FCM's answer to a malformed or foreign token; our messages are
		// well formed.
		e.Class, e.Reason = TokenInvalid, "INVALID_ARGUMENT"
	case messaging.IsSenderIDMismatch(err):
		e.Class, e.Reason = TokenInvalid, "SENDER_ID_MISMATCH"
	case messaging.IsQuotaExceeded(err):
		e.Class, e.Reason = Retry, "QUOTA_EXCEEDED"
	case messaging.IsUnavailable(err):
		e.Class, e.Reason = Retry, "UNAVAILABLE"
	case messaging.IsInternal(err):
		e.Class, e.Reason = Retry, "INTERNAL"
	case messaging.IsThirdPartyAuthError(err):
		e.Class, e.Reason = ProviderFault, "THIRD_PARTY_AUTH_ERROR"
	case errorutils.IsPermissionDenied(err):
		e.Class, e.Reason = ProviderFault, "PERMISSION_DENIED"
	case errorutils.IsUnauthenticated(err):
		e.Class, e.Reason = ProviderFault, "UNAUTHENTICATED"
	case errors.As(err, &oauth):
		// The service account was refused its access token.
		e.Class, e.Reason = ProviderFault, "credentials refused by the token endpoint"
		if oauth.Response != nil {
			e.Status = oauth.Response.StatusCode
		}
	case e.Status == http.StatusTooManyRequests || e.Status >= 500:
		e.Class, e.Reason = Retry, http.StatusText(e.Status)
	case e.Status == 0:
		// No answer: the connection or the deadline failed.
		e.Class, e.Reason = Retry, networkReason(err)
	default:
		e.Reason = http.StatusText(e.Status)
	}
	return e
}
