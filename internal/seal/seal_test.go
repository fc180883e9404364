package seal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func newKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	t.Parallel()
	k1, k2 := newKey(t), newKey(t)
	old, err := NewKeyring(k1)
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := NewKeyring(k2, k1)
	if err != nil {
		t.Fatal(err)
	}
	at := Place{Table: "devices", Column: "push_token", Row: "d1"}
	secret := []byte("the push token")

	oldBox, err := old.Seal(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	newBox, err := rotated.Seal(secret, at)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(oldBox.Data, secret) {
		t.Fatal("ciphertext contains the plaintext")
	}
	if oldBox.KeyID != KeyID(k1) || newBox.KeyID != KeyID(k2) {
		t.Fatalf("key ids: %s %s", oldBox.KeyID, newBox.KeyID)
	}

	tampered := Box{KeyID: newBox.KeyID, Data: bytes.Clone(newBox.Data)}
	tampered.Data[len(tampered.Data)-1] ^= 1

	tests := []struct {
		name    string
		ring    *Keyring
		box     Box
		at      Place
		wantErr bool
	}{
		{"same key", old, oldBox, at, false},
		{"rotated ring opens old box", rotated, oldBox, at, false},
		{"rotated ring opens new box", rotated, newBox, at, false},
		{"old ring cannot open new box", old, newBox, at, true},
		{"other row", old, oldBox, Place{"devices", "push_token", "d2"}, true},
		{"other column", old, oldBox, Place{"devices", "totp_secret", "d1"}, true},
		{"other table", old, oldBox, Place{"applications", "push_token", "d1"}, true},
		{"ambiguous split", old, oldBox, Place{"devices\x00push_token", "", "d1"}, true},
		{"tampered", rotated, tampered, at, true},
		{"truncated", old, Box{KeyID: oldBox.KeyID, Data: oldBox.Data[:5]}, at, true},
		{"unknown key id", old, Box{KeyID: "nope", Data: oldBox.Data}, at, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := tc.ring.Open(tc.box, tc.at)
			if tc.wantErr {
				if !errors.Is(err, ErrOpen) {
					t.Fatalf("err = %v, want ErrOpen", err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("Open = %q, %v", got, err)
			}
		})
	}
	if !rotated.NeedsRotation(oldBox) || rotated.NeedsRotation(newBox) {
		t.Fatal("NeedsRotation wrong")
	}
}

func TestNonceIsFresh(t *testing.T) {
	t.Parallel()
	k, err := NewKeyring(newKey(t))
	if err != nil {
		t.Fatal(err)
	}
	at := Place{"t", "c", "r"}
	a, _ := k.Seal([]byte("x"), at)
	b, _ := k.Seal([]byte("x"), at)
	if bytes.Equal(a.Data, b.Data) {
		t.Fatal("two seals of the same value are equal: nonce reused")
	}
}

func TestNewKeyringRejectsBadKeys(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 16, 31, 33} {
		if _, err := NewKeyring(make([]byte, n)); err == nil {
			t.Errorf("key of %d bytes accepted", n)
		}
	}
	if _, err := NewKeyring(newKey(t), make([]byte, 8)); err == nil {
		t.Error("short previous key accepted")
	}
}
