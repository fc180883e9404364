// Package seal encrypts the secrets the service must be able to read back
// (push tokens, TOTP seeds, webhook secrets, Duo skeys, enrollment codes) with
// AES-256-GCM under the master key.
//
// Each ciphertext is bound by its associated data to the table, column and row
// it is stored in, so a value copied into another row or column fails to open.
// The id of the key that sealed it is stored beside it, so the master key can
// rotate: new values are sealed under the current key and older ones still open
// under the previous keys.
package seal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
)

// KeySize is the size of a master key in bytes (AES-256).
const KeySize = 32

// ErrOpen is returned for a ciphertext that does not open: wrong key, wrong
// associated data (a value moved between rows), or tampering.
var ErrOpen = errors.New("seal: ciphertext does not open")

// Box is a sealed value as stored: the id of the key that sealed it and
// nonce||ciphertext||tag.
type Box struct {
	KeyID string
	Data  []byte
}

// Place says where a sealed value lives. It is the associated data, so a
// sealed value only opens where it was sealed.
type Place struct {
	Table, Column, Row string
}

func (p Place) ad() []byte {
	// NUL separators cannot occur in identifiers, so the encoding is unambiguous.
	return []byte("pushmfa/seal/v1\x00" + p.Table + "\x00" + p.Column + "\x00" + p.Row)
}

// Keyring holds the current master key and the previous ones.
type Keyring struct {
	currentID string
	aeads     map[string]cipher.AEAD
}

// KeyID derives the public id of a key: a truncated SHA-256 under a domain
// separator, which reveals nothing useful about a 256-bit key.
func KeyID(key []byte) string {
	sum := sha256.Sum256(append([]byte("pushmfa/key-id\x00"), key...))
	return hex.EncodeToString(sum[:8])
}

// NewKeyring builds a keyring that seals with current and opens with current
// or any of previous.
func NewKeyring(current []byte, previous ...[]byte) (*Keyring, error) {
	k := &Keyring{aeads: make(map[string]cipher.AEAD)}
	for i, key := range append([][]byte{current}, previous...) {
		if len(key) != KeySize {
			return nil, fmt.Errorf("seal: key %d is %d bytes, want %d", i, len(key), KeySize)
		}
		block, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("seal: %w", err)
		}
		id := KeyID(key)
		if i == 0 {
			k.currentID = id
		}
		if _, dup := k.aeads[id]; !dup {
			k.aeads[id] = aead
		}
	}
	return k, nil
}

// CurrentKeyID is the id of the key new values are sealed with.
func (k *Keyring) CurrentKeyID() string { return k.currentID }

// Seal encrypts plaintext for the given place under the current key.
func (k *Keyring) Seal(plaintext []byte, at Place) (Box, error) {
	aead := k.aeads[k.currentID]
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	// Random 96-bit nonces are safe far beyond the number of secrets this
	// service will ever seal under one key.
	if _, err := rand.Read(nonce); err != nil {
		return Box{}, fmt.Errorf("seal: %w", err)
	}
	return Box{KeyID: k.currentID, Data: aead.Seal(nonce, nonce, plaintext, at.ad())}, nil
}

// Open decrypts a box sealed for the given place.
func (k *Keyring) Open(b Box, at Place) ([]byte, error) {
	aead, ok := k.aeads[b.KeyID]
	if !ok {
		return nil, fmt.Errorf("%w: unknown key id %q (is MASTER_KEY_PREVIOUS missing a rotated key?)", ErrOpen, b.KeyID)
	}
	if len(b.Data) < aead.NonceSize()+aead.Overhead() {
		return nil, ErrOpen
	}
	n := aead.NonceSize()
	pt, err := aead.Open(nil, b.Data[:n], b.Data[n:], at.ad())
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

// NeedsRotation reports whether b was sealed under a key other than the
// current one, so a re-sealing job can find it.
func (k *Keyring) NeedsRotation(b Box) bool { return b.KeyID != k.currentID }
