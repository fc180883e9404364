package authenticator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/jose"
	"github.com/pushmfa/pushmfa/internal/totp"
)

func TestSaveLoad(t *testing.T) {
	t.Parallel()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := totp.NewSecret()
	d := &Device{Server: "https://mfa.example.com", DeviceID: "6b0f6a3e-3c53-4bb5-a2d7-1f6f0a5f1c7e", Name: "p", Key: key,
		TOTP: &TOTP{Secret: secret, Digits: 6, Period: 30, Algorithm: "SHA1"}}
	path := filepath.Join(t.TempDir(), "sub", "device.json")
	if err := d.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v %v", fi, err)
	}
	back, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Key.Equal(key) || back.DeviceID != d.DeviceID || back.Server != d.Server || back.TOTP.Secret != secret {
		t.Fatalf("round trip: %+v", back)
	}
	c1, _ := d.Code()
	c2, _ := back.Code()
	if c1 != c2 || len(c1) != 6 {
		t.Fatalf("codes %q %q", c1, c2)
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(path); err == nil || !strings.Contains(err.Error(), "readable by others") {
		t.Fatalf("group-readable key file: %v", err)
	}
}

// TestTokensVerify checks the authenticator's tokens against the server's
// verifier (they share no code: one signs with golang-jwt, the other
// parses headers and keys itself).
func TestTokensVerify(t *testing.T) {
	t.Parallel()
	key, _ := NewKey()
	now := time.Now()
	tok, err := EnrollToken(key, EnrollRequest{Code: "C", Platform: "ios", PushProvider: "none", Name: "n"}, now)
	if err != nil {
		t.Fatal(err)
	}
	e, err := jose.VerifyEnroll(tok, now)
	if err != nil || !e.Key.Equal(&key.PublicKey) || e.Claims.Name != "n" {
		t.Fatalf("enroll: %+v %v", e, err)
	}
	dt, err := DeviceToken(key, "id-1", "PUT", "/v1/device/push-token", now)
	if err != nil {
		t.Fatal(err)
	}
	v, err := jose.VerifyDevice(dt, &key.PublicKey, "PUT", "/v1/device/push-token", now)
	if err != nil || v.DeviceID != "id-1" {
		t.Fatalf("device: %+v %v", v, err)
	}
	// Each token has its own jti.
	dt2, _ := DeviceToken(key, "id-1", "PUT", "/v1/device/push-token", now)
	v2, _ := jose.VerifyDevice(dt2, &key.PublicKey, "PUT", "/v1/device/push-token", now)
	if v2.Claims.ID == v.Claims.ID {
		t.Fatal("jti repeated")
	}
}

func TestEnrollRefusesBadURI(t *testing.T) {
	t.Parallel()
	if _, err := Enroll(t.Context(), "https://example.com", EnrollOptions{}); err == nil {
		t.Fatal("accepted a non-enrollment URI")
	}
}
