package credential

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestNewAndKind(t *testing.T) {
	t.Parallel()
	for _, k := range []Kind{AppSecret, AdminToken, WebhookSecret} {
		s, err := New(k)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(s.Reveal(), string(k)) || len(s.Reveal()) != len(k)+secretLen {
			t.Fatalf("%s: bad text length %d", k, len(s.Reveal()))
		}
		got, ok := s.Kind()
		if got != k || !ok {
			t.Fatalf("Kind() = %q %v, want %q true", got, ok, k)
		}
		s2, _ := New(k)
		if s2.Reveal() == s.Reveal() {
			t.Fatal("two credentials are equal")
		}
	}
}

func TestKindRejectsMalformed(t *testing.T) {
	t.Parallel()
	good, _ := New(AppSecret)
	tests := []struct {
		name, text string
		wantKind   Kind
	}{
		{"empty", "", ""},
		{"no prefix", "abc", ""},
		{"truncated", good.Reveal()[:len(good.Reveal())-1], AppSecret},
		{"extended", good.Reveal() + "A", AppSecret},
		{"bad alphabet", string(AppSecret) + strings.Repeat("+", secretLen), AppSecret},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			k, ok := FromText(tc.text).Kind()
			if ok || k != tc.wantKind {
				t.Fatalf("Kind() = %q %v, want %q false", k, ok, tc.wantKind)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	s, _ := New(AdminToken)
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("x", "token", s, "any", any(s))
	out := buf.String() + fmt.Sprintf("%v %s %+v %#v", s, s, s, s)
	if strings.Contains(out, s.Reveal()[len(AdminToken):]) {
		t.Fatalf("secret leaked: %s", out)
	}
}

func TestDigestAndEqual(t *testing.T) {
	t.Parallel()
	a, _ := New(AppSecret)
	b, _ := New(AppSecret)
	if len(a.Digest()) != 32 {
		t.Fatal("digest is not SHA-256")
	}
	if !Equal(a.Digest(), FromText(a.Reveal()).Digest()) || Equal(a.Digest(), b.Digest()) {
		t.Fatal("Equal wrong")
	}
}
