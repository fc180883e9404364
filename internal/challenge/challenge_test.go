package challenge

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/policy"
)

func TestDigestIsCanonical(t *testing.T) {
	t.Parallel()
	c := Context{App: "Contoso VPN", Message: "Sign in to Contoso", IP: "203.0.113.5", Location: "Zürich, CH",
		Browser: "Firefox 135", CreatedAt: "2026-11-24T10:00:00Z"}
	d, err := c.Digest()
	if err != nil {
		t.Fatal(err)
	}
	// The same object with other key order and escapes, as a device might
	// have received and re-serialised it.
	alt := `{ "created_at":"2026-11-24T10:00:00Z", "browser":"Firefox 135", "location":"Z\u00fcrich, CH",
		"ip":"203.0.113.5", "message":"Sign in to Contoso", "app":"Contoso VPN" }`
	d2, err := DigestJSON([]byte(alt))
	if err != nil || EncodeDigest(d) != EncodeDigest(d2) {
		t.Fatalf("digests differ: %s %s %v", EncodeDigest(d), EncodeDigest(d2), err)
	}
	// And it is SHA-256 of RFC 8785's form: sorted keys, no whitespace,
	// UTF-8 as is.
	want := sha256.Sum256([]byte(`{"app":"Contoso VPN","browser":"Firefox 135","created_at":"2026-11-24T10:00:00Z",` +
		`"ip":"203.0.113.5","location":"Zürich, CH","message":"Sign in to Contoso"}`))
	if EncodeDigest(d) != EncodeDigest(want[:]) {
		t.Fatal("not SHA-256 over the canonical form")
	}
	// Absent fields are absent, not empty strings.
	raw, _ := json.Marshal(Context{App: "a", CreatedAt: "t"})
	if string(raw) != `{"app":"a","created_at":"t"}` {
		t.Fatalf("%s", raw)
	}
	other := c
	other.IP = "203.0.113.6"
	d3, _ := other.Digest()
	if EncodeDigest(d3) == EncodeDigest(d) {
		t.Fatal("a changed context has the same digest")
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := []Request{{}, {Message: strings.Repeat("é", 200), IP: "::1", Location: "x", Browser: "y"}, {IP: "192.0.2.1"}}
	for _, r := range ok {
		if err := r.Validate(); err != nil {
			t.Errorf("%+v: %v", r, err)
		}
	}
	bad := map[string]Request{
		"context.ip":       {IP: "999.1.1.1"},
		"message":          {Message: strings.Repeat("a", 201)},
		"context.location": {Location: "a\x00b"},
		"context.browser":  {Browser: "\xff"},
	}
	for field, r := range bad {
		var e *errs.Error
		if err := r.Validate(); !errors.As(err, &e) || e.Field != field {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func TestNumberAndNonce(t *testing.T) {
	t.Parallel()
	seen := map[int]bool{}
	for range 5000 {
		n, err := NewNumber()
		if err != nil || n < 10 || n > 99 {
			t.Fatalf("%d %v", n, err)
		}
		seen[n] = true
	}
	if len(seen) != 90 {
		t.Fatalf("%d of 90 numbers drawn in 5000 tries", len(seen))
	}
	a, _ := NewNonce()
	b, _ := NewNonce()
	if len(a) != 16 || string(a) == string(b) {
		t.Fatal("nonce")
	}
}

func TestNumberMatchingRule(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		policy    bool
		app       string
		requested bool
		want      bool
	}{
		{true, "required", false, true},
		{true, "when_supported", false, true},
		{true, "off", false, false},
		{false, "required", false, false},
		{false, "off", true, true}, // a request turns it on
		{true, "off", true, true},
	} {
		if got := NumberMatching(tc.policy, tc.app, tc.requested); got != tc.want {
			t.Errorf("%+v: %v", tc, got)
		}
	}
}

func TestDenialBackoff(t *testing.T) {
	t.Parallel()
	p := policy.Default() // from the third consecutive denial
	for _, tc := range []struct {
		n    int
		want time.Duration
	}{{0, 0}, {2, 0}, {3, 30 * time.Second}, {4, time.Minute}, {5, 2 * time.Minute}, {9, 32 * time.Minute}, {10, time.Hour}, {50, time.Hour}} {
		if got := DenialBackoff(p, tc.n); got != tc.want {
			t.Errorf("%d denials: %s, want %s", tc.n, got, tc.want)
		}
	}
}

func TestGuard(t *testing.T) {
	t.Parallel()
	p := policy.Default() // 10 per 300 s, 3 pending
	now := time.Unix(1_800_000_000, 0)
	later := now.Add(40 * time.Second)
	cases := []struct {
		name   string
		u      Usage
		reason string
		retry  time.Duration
	}{
		{"fresh", Usage{}, "", 0},
		{"below limits", Usage{InWindow: 9, Pending: 2}, "", 0},
		{"window full", Usage{InWindow: 10, OldestInWindow: now.Add(-100 * time.Second)}, GuardWindow, 200 * time.Second},
		{"pending full", Usage{Pending: 3, NextExpiry: now.Add(20 * time.Second)}, GuardPending, 20 * time.Second},
		{"backoff", Usage{BlockedUntil: &later}, GuardBackoff, 40 * time.Second},
		{"backoff over", Usage{BlockedUntil: &now}, "", 0},
		{"retry at least a second", Usage{Pending: 3, NextExpiry: now}, GuardPending, time.Second},
	}
	for _, tc := range cases {
		reason, err := Guard(p, tc.u, now)
		if reason != tc.reason {
			t.Errorf("%s: reason %q", tc.name, reason)
		}
		if tc.reason == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		var e *errs.Error
		if !errors.As(err, &e) || e.Code != TooManyChallenges || e.RetryAfter != tc.retry {
			t.Errorf("%s: %#v", tc.name, err)
		}
	}
}

func TestEffectiveState(t *testing.T) {
	t.Parallel()
	now := time.Now()
	c := Challenge{State: StatePending, ExpiresAt: now}
	if c.EffectiveState(now) != StateExpired || errs.CodeOf(c.Answerable(now)) != Expired {
		t.Fatal("pending past its time is expired")
	}
	c.ExpiresAt = now.Add(time.Second)
	if c.Answerable(now) != nil {
		t.Fatal("pending is answerable")
	}
	c.State = StateCancelled
	if errs.CodeOf(c.Answerable(now)) != Resolved {
		t.Fatal("cancelled is resolved")
	}
}
