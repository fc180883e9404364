package push

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	firebase "firebase.google.com/go/v4"
	"firebase.google.com/go/v4/errorutils"
	"firebase.google.com/go/v4/messaging"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/google"
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
	tokens oauth2.TokenSource // caches the access token until it is near expiry
}

// fcmScope is the one OAuth2 scope sending needs.
const fcmScope = "https://www.googleapis.com/auth/firebase.messaging"

// tokenTimeout bounds a request for an access token. The token source
// does not take the send's context, so this and the send's own deadline
// together must stay within the deliver job's timeout.
const tokenTimeout = 4 * time.Second

// NewFCM reads the service account and prepares the client (it fetches an
// OAuth2 token on first use).
//
// The SDK gets an HTTP client built here, with Google's own OAuth2 flow for
// the service account, so that the worker, not the SDK, retries a 503: the
// SDK would wait out the backoff or the Retry-After inside the send,
// holding a worker and past the push's expiry, where the worker snoozes
// the job durably and stops once the push is stale.
func NewFCM(ctx context.Context, cfg FCMConfig) (*FCM, error) {
	b, err := os.ReadFile(cfg.CredentialsFile)
	if err != nil {
		return nil, fmt.Errorf("FCM_CREDENTIALS_FILE: %w", err)
	}
	// Token requests get a deadline of their own: the token source holds
	// its lock while one is in flight, so a hung one would stall every send.
	ctx = context.WithValue(ctx, oauth2.HTTPClient, &http.Client{Timeout: tokenTimeout})
	creds, err := google.CredentialsFromJSONWithType(ctx, b, google.ServiceAccount, fcmScope)
	if err != nil {
		return nil, fmt.Errorf("FCM_CREDENTIALS_FILE: %w", err)
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.MaxIdleConnsPerHost = 64
	hc := &http.Client{Transport: &oauth2.Transport{Source: creds.TokenSource, Base: recordingTransport{base: base, hide503: true}}}
	opts := []option.ClientOption{option.WithHTTPClient(hc)}
	if cfg.Endpoint != "" {
		opts = append(opts, option.WithEndpoint(cfg.Endpoint))
	}
	app, err := firebase.NewApp(ctx, &firebase.Config{ProjectID: cfg.ProjectID}, opts...)
	if err != nil {
		return nil, fmt.Errorf("FCM: %w", err)
	}
	client, err := app.Messaging(ctx)
	if err != nil {
		return nil, fmt.Errorf("FCM: %w", err)
	}
	return &FCM{client: client, tokens: creds.TokenSource}, nil
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
	// The access token first (cached, so this is cheap): the SDK would
	// take a refusal for a network error and retry it for seconds.
	if _, err := f.tokens.Token(); err != nil {
		return "", tokenError(err)
	}
	var seen answer
	name, err := f.client.Send(withHeaderSink(ctx, &seen), &messaging.Message{Token: m.Token, Data: data, Android: android})
	if err == nil {
		return name, nil
	}
	return "", fcmError(err, seen)
}

// tokenError reads a failure to get an access token: Google's refusal of
// the service account is ours to fix; its token endpoint failing or out of
// reach is transient.
func tokenError(err error) *Error {
	var refused *oauth2.RetrieveError
	if !errors.As(err, &refused) || refused.Response == nil {
		return &Error{Provider: "fcm", Class: Retry, Reason: "access token: " + networkReason(err)}
	}
	e := &Error{Provider: "fcm", Status: refused.Response.StatusCode, Class: ProviderFault,
		Reason: "the token endpoint refused the service account"}
	if code := oauthErrorCode(refused); code != "" {
		e.Reason += ": " + code
	}
	if e.Status == http.StatusTooManyRequests || e.Status >= 500 {
		e.Class, e.Reason = Retry, "access token: "+http.StatusText(e.Status)
		e.RetryAfter = retryAfter(refused.Response.Header, time.Now())
	}
	return e
}

// oauthErrorCode is the OAuth2 error code (invalid_grant...) of a refusal.
// The JWT flow leaves it in the body, unparsed.
func oauthErrorCode(r *oauth2.RetrieveError) string {
	if r.ErrorCode != "" {
		return r.ErrorCode
	}
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(r.Body, &body) != nil || len(body.Error) > 64 {
		return ""
	}
	return body.Error
}

// fcmReplies reads FCM's error codes (firebase.google.com/docs/cloud-
// messaging, "FCM error codes"), in order.
var fcmReplies = []struct {
	is     func(error) bool
	class  Class
	reason string
}{
	{messaging.IsUnregistered, TokenInvalid, "UNREGISTERED"},
	// FCM's answer to a malformed or foreign token, and to any other
	// argument it finds invalid: only the first is the device's. A fault in
	// our messages would otherwise erase every Android device's token.
	{invalidToken, TokenInvalid, "INVALID_ARGUMENT"},
	{messaging.IsInvalidArgument, ProviderFault, "INVALID_ARGUMENT (message)"},
	// The token belongs to another sender: one device registered with
	// another project, or (far likelier, and for every device at once)
	// FCM_PROJECT_ID or the service account names the wrong project.
	// Erasing every token on a configuration slip would be much worse than
	// one device that keeps failing, so it is ours.
	{messaging.IsSenderIDMismatch, ProviderFault, "SENDER_ID_MISMATCH"},
	{messaging.IsQuotaExceeded, Retry, "QUOTA_EXCEEDED"},
	{messaging.IsUnavailable, Retry, "UNAVAILABLE"},
	{messaging.IsInternal, Retry, "INTERNAL"},
	{messaging.IsThirdPartyAuthError, ProviderFault, "THIRD_PARTY_AUTH_ERROR"},
	{errorutils.IsPermissionDenied, ProviderFault, "PERMISSION_DENIED"},
	{errorutils.IsUnauthenticated, ProviderFault, "UNAUTHENTICATED"},
}

// invalidToken reports an INVALID_ARGUMENT about the registration token.
// FCM says so in words only ("The registration token is not a valid FCM
// registration token", with no detail naming the field); Google's request
// checks name the field in a BadRequest detail (message.token).
func invalidToken(err error) bool {
	if !messaging.IsInvalidArgument(err) {
		return false
	}
	res := errorutils.HTTPResponse(err)
	if res == nil || res.Body == nil {
		return false
	}
	var body struct {
		Error struct {
			Message string `json:"message"`
			Details []struct {
				FieldViolations []struct {
					Field string `json:"field"`
				} `json:"fieldViolations"`
			} `json:"details"`
		} `json:"error"`
	}
	if json.NewDecoder(io.LimitReader(res.Body, 64<<10)).Decode(&body) != nil {
		return false
	}
	if strings.Contains(strings.ToLower(body.Error.Message), "registration token") {
		return true
	}
	for _, d := range body.Error.Details {
		for _, v := range d.FieldViolations {
			if v.Field == "message.token" {
				return true
			}
		}
	}
	return false
}

// fcmError reads the SDK's error, with the status and headers FCM answered.
func fcmError(err error, seen answer) *Error {
	e := &Error{Provider: "fcm", Class: Rejected, Status: seen.status, RetryAfter: retryAfter(seen.header, time.Now())}
	for _, r := range fcmReplies {
		if r.is(err) {
			e.Class, e.Reason = r.class, r.reason
			return e
		}
	}
	switch {
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
