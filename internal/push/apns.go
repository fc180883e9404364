package push

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/payload"
	"github.com/sideshow/apns2/token"
)

// The app's localisation keys and notification category: the alert text
// lives in the app, so the push itself says nothing about the sign-in.
const (
	APNsTitleKey = "PUSHMFA_SIGN_IN_TITLE"
	APNsBodyKey  = "PUSHMFA_SIGN_IN_BODY"
	// APNsCategory is the category whose actions (Approve, Deny) the app
	// registers.
	APNsCategory = "PUSHMFA_SIGN_IN"
)

// APNsConfig is token-based (.p8) authentication with Apple.
type APNsConfig struct {
	KeyFile string
	KeyID   string
	TeamID  string
	Topic   string // the app's bundle id
	// Endpoint is the host, https://api.push.apple.com by default (the
	// sandbox, or a fake in tests).
	Endpoint string
}

// APNs sends through Apple's HTTP/2 provider API with sideshow/apns2.
type APNs struct {
	client *apns2.Client
	topic  string
}

// NewAPNs loads the key and prepares the client (it connects on first use).
func NewAPNs(cfg APNsConfig) (*APNs, error) {
	b, err := os.ReadFile(cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("APNS_KEY_FILE: %w", err)
	}
	key, err := token.AuthKeyFromBytes(b)
	if err != nil {
		// The parser's own words (ASN.1 tags) help nobody.
		return nil, fmt.Errorf("APNS_KEY_FILE: %s is not an APNs signing key (the AuthKey_<KEYID>.p8 file Apple issues: a PKCS#8 PEM P-256 key)", cfg.KeyFile)
	}
	client := apns2.NewTokenClient(&token.Token{AuthKey: key, KeyID: cfg.KeyID, TeamID: cfg.TeamID})
	client.Host = cfg.Endpoint
	if client.Host == "" {
		client.Host = apns2.HostProduction
	}
	// apns2 does not surface response headers; Retry-After is read here.
	client.HTTPClient.Transport = recordingTransport{base: client.HTTPClient.Transport}
	return &APNs{client: client, topic: cfg.Topic}, nil
}

// Name is "apns".
func (*APNs) Name() string { return "apns" }

// Send pushes m: a challenge as an alert (priority 10, expiring with the
// challenge, collapsing on its id, in the category with Approve and Deny,
// mutable so the app can fetch the details), a notification as a
// background push.
func (a *APNs) Send(ctx context.Context, m Message) (string, error) {
	n := &apns2.Notification{DeviceToken: m.Token, Topic: a.topic, Expiration: m.Expires}
	p := payload.NewPayload().Custom("type", m.Kind)
	if m.ChallengeID != "" {
		p.Custom("challenge_id", m.ChallengeID)
	}
	if m.Kind == KindChallenge {
		n.PushType, n.Priority, n.CollapseID = apns2.PushTypeAlert, apns2.PriorityHigh, m.ChallengeID
		p.AlertTitleLocKey(APNsTitleKey).AlertLocKey(APNsBodyKey).Category(APNsCategory).MutableContent().Sound("default")
	} else {
		n.PushType, n.Priority = apns2.PushTypeBackground, apns2.PriorityLow
		p.ContentAvailable().Custom("event", m.Event)
	}
	n.Payload = p
	var seen answer
	res, err := a.client.PushWithContext(withHeaderSink(ctx, &seen), n)
	if err != nil {
		// No answer: the connection or the deadline failed.
		return "", &Error{Provider: "apns", Class: Retry, Reason: networkReason(err)}
	}
	if res.Sent() {
		return res.ApnsID, nil
	}
	return "", &Error{Provider: "apns", Class: apnsClass(res.StatusCode, res.Reason), Status: res.StatusCode,
		Reason: res.Reason, RetryAfter: retryAfter(seen.header, time.Now())}
}

// apnsClass reads Apple's answer (developer.apple.com, "Handling
// notification responses from APNs").
func apnsClass(status int, reason string) Class {
	switch reason {
	case apns2.ReasonBadDeviceToken, apns2.ReasonUnregistered, apns2.ReasonExpiredToken:
		return TokenInvalid
	case apns2.ReasonDeviceTokenNotForTopic,
		// Every token is "not for the topic" when APNS_TOPIC names the
		// wrong app: a configuration slip must not erase every device's
		// token, so this is ours, like a topic the key may not use.
		apns2.ReasonTopicDisallowed, apns2.ReasonBadTopic, apns2.ReasonMissingTopic, apns2.ReasonBadCertificate,
		apns2.ReasonBadCertificateEnvironment, apns2.ReasonInvalidProviderToken, apns2.ReasonMissingProviderToken,
		apns2.ReasonExpiredProviderToken, apns2.ReasonForbidden:
		return ProviderFault
	case apns2.ReasonTooManyRequests, apns2.ReasonTooManyProviderTokenUpdates, apns2.ReasonIdleTimeout,
		apns2.ReasonInternalServerError, apns2.ReasonServiceUnavailable, apns2.ReasonShutdown:
		return Retry
	}
	switch {
	case status == http.StatusGone:
		return TokenInvalid
	case status == http.StatusForbidden:
		return ProviderFault
	case status == http.StatusTooManyRequests || status >= 500:
		return Retry
	}
	return Rejected
}

// networkReason describes a failure to get an answer without repeating
// the URL (it carries the device token).
func networkReason(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "no answer before the deadline"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return "no answer: " + inner.Error()
		}
	}
	return "no answer"
}

// headerSink is the context key under which a send leaves an *answer for
// its transport to fill in: the client libraries do not surface response
// headers.
type headerSink struct{}

// answer is the status and headers of a provider's reply.
type answer struct {
	status int
	header http.Header
}

func withHeaderSink(ctx context.Context, a *answer) context.Context {
	return context.WithValue(ctx, headerSink{}, a)
}

// recordingTransport hands the provider what its client library hides: the
// status and headers of each answer (Retry-After), through the request's
// header sink. With hide503 it also shows the library a 503 as a 500, so
// that the Firebase SDK does not retry it by itself: the worker retries,
// durably, and stops once the push is stale. The body, which the library
// reads the error from, is left as the service sent it.
type recordingTransport struct {
	base    http.RoundTripper
	hide503 bool
}

func (t recordingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	res, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if sink, ok := r.Context().Value(headerSink{}).(*answer); ok {
		sink.status, sink.header = res.StatusCode, res.Header.Clone()
	}
	if t.hide503 && res.StatusCode == http.StatusServiceUnavailable {
		res.StatusCode, res.Status = http.StatusInternalServerError, "500 Internal Server Error"
	}
	return res, nil
}

// CloseIdleConnections lets the transport go (tests, shutdown).
func (t recordingTransport) CloseIdleConnections() {
	if c, ok := t.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}
