package push

import (
	"bytes"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestRouter(t *testing.T) {
	t.Parallel()
	apns, fcm, log := &APNs{}, &FCM{}, LogProvider{}
	configured := Router{APNs: apns, FCM: fcm, Log: log}
	logOnly := Router{Log: log}
	tests := []struct {
		r    Router
		name string
		want Provider
	}{
		{configured, "apns", apns},
		{configured, "fcm", fcm},
		{configured, "none", log},
		{configured, "", log},
		{logOnly, "apns", log},
		{logOnly, "fcm", log},
	}
	for _, tt := range tests {
		if got := tt.r.For(tt.name); got != tt.want {
			t.Errorf("For(%q) = %T, want %T", tt.name, got, tt.want)
		}
	}
}

func TestLogProviderLeavesTheTokenOut(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	p := LogProvider{Logger: slog.New(slog.NewJSONHandler(&buf, nil))}
	m := challengeMessage("apns", "secret-device-token-0123")
	id, err := p.Send(t.Context(), m)
	if err != nil || id != "log-"+m.DeliveryID {
		t.Fatalf("Send = %q, %v", id, err)
	}
	out := buf.String()
	for _, want := range []string{"logging provider", m.ChallengeID, m.DeviceID, m.DeliveryID, `"kind":"challenge"`} {
		if !strings.Contains(out, want) {
			t.Errorf("the log line lacks %q: %s", want, out)
		}
	}
	assertNothingSecret(t, out, m.Token)
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"0", 0},
		{"7", 7 * time.Second},
		{"-3", 0},
		{"soon", 0},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		h := http.Header{}
		if tt.value != "" {
			h.Set("Retry-After", tt.value)
		}
		if got := retryAfter(h, now); got != tt.want {
			t.Errorf("Retry-After %q: %v, want %v", tt.value, got, tt.want)
		}
	}
	if got := retryAfter(nil, now); got != 0 {
		t.Errorf("no header: %v", got)
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	e := &Error{Provider: "apns", Class: TokenInvalid, Status: 410, Reason: "Unregistered"}
	if got := Classify("apns", e); got != e {
		t.Errorf("Classify(*Error) = %+v", got)
	}
	// An error of another kind (a provider's bug) is retried: nothing is
	// lost to it.
	if got := Classify("fcm", errors.New("boom")); got.Class != Retry || got.Provider != "fcm" || got.Reason != "boom" {
		t.Errorf("Classify(other) = %+v", got)
	}
	for c, want := range map[Class]string{Retry: "retry", TokenInvalid: "token_invalid", ProviderFault: "provider_fault", Rejected: "rejected", 0: "unknown"} {
		if c.String() != want {
			t.Errorf("%d: %q, want %q", c, c.String(), want)
		}
	}
	if got := e.Error(); got != "apns: 410 Unregistered" {
		t.Errorf("Error() = %q", got)
	}
	if got := (&Error{Provider: "fcm", Reason: "no answer"}).Error(); got != "fcm: no answer" {
		t.Errorf("Error() = %q", got)
	}
}
