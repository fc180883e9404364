package totp

import (
	"encoding/base32"
	"net/url"
	"testing"
	"time"

	"github.com/pquerna/otp"
)

// The SHA-1 test vectors of RFC 6238, Appendix B (8 digits, 30 s steps,
// key "12345678901234567890").
func TestRFC6238Vectors(t *testing.T) {
	t.Parallel()
	secret := base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString([]byte("12345678901234567890"))
	p := Params{Digits: 8, Period: 30}
	for _, v := range []struct {
		unix int64
		code string
	}{
		{59, "94287082"},
		{1111111109, "07081804"},
		{1111111111, "14050471"},
		{1234567890, "89005924"},
		{2000000000, "69279037"},
		{20000000000, "65353130"},
	} {
		got, err := p.Code(secret, time.Unix(v.unix, 0))
		if err != nil || got != v.code {
			t.Errorf("T=%d: %s, %v; want %s", v.unix, got, err, v.code)
		}
		step, ok, err := p.Match(secret, v.code, time.Unix(v.unix, 0))
		if err != nil || !ok || step != v.unix/30 {
			t.Errorf("T=%d: Match = %d %v %v", v.unix, step, ok, err)
		}
	}
	// Six digits are the last six of the same values (RFC 4226 truncation).
	got, _ := Params{Digits: 6, Period: 30}.Code(secret, time.Unix(59, 0))
	if got != "287082" {
		t.Fatalf("6 digits: %s", got)
	}
}

func TestMatchSkew(t *testing.T) {
	t.Parallel()
	secret, err := NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	p := Params{Digits: 6, Period: 30}
	now := time.Unix(1_800_000_015, 0)
	cases := []struct {
		name   string
		offset time.Duration
		ok     bool
	}{
		{"current", 0, true},
		{"one step behind", -30 * time.Second, true},
		{"one step ahead", 30 * time.Second, true},
		{"two steps behind", -60 * time.Second, false},
		{"two steps ahead", 60 * time.Second, false},
	}
	for _, tc := range cases {
		code, _ := p.Code(secret, now.Add(tc.offset))
		step, ok, err := p.Match(secret, code, now)
		if err != nil || ok != tc.ok {
			t.Errorf("%s: ok = %v, %v", tc.name, ok, err)
		}
		if ok && step != p.Step(now.Add(tc.offset)) {
			t.Errorf("%s: step %d", tc.name, step)
		}
	}
	for _, bad := range []string{"", "12345", "1234567", "abcdef"} {
		if _, ok, _ := p.Match(secret, bad, now); ok {
			t.Errorf("%q matched", bad)
		}
	}
}

func TestURIIsReadByTheLibrary(t *testing.T) {
	t.Parallel()
	secret, _ := NewSecret()
	if len(secret) != 32 {
		t.Fatalf("secret %q: want 32 base32 characters", secret)
	}
	uri := Params{Digits: 8, Period: 30}.URI(secret, "Acme Corp", "alice@example.com")
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		t.Fatal(err)
	}
	if key.Secret() != secret || key.Issuer() != "Acme Corp" || key.AccountName() != "alice@example.com" ||
		key.Digits() != 8 || key.Period() != 30 || key.Type() != "totp" {
		t.Fatalf("parsed back %s: %+v", uri, key)
	}
	if u, _ := url.Parse(uri); u.Scheme != "otpauth" {
		t.Fatal(uri)
	}
}
