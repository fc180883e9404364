// Package audit defines audit events and their tamper-evident hash chain.
//
// Events are written in the same transaction as the act they record, without
// a hash, so writers never wait for one another. A sealer then takes each
// tenant's unsealed events in order and gives each a sequence number and
// hash = SHA-256(previous hash || canonical content), where the canonical
// content is the RFC 8785 JSON of the event. Changing, removing or reordering
// a sealed event breaks every later link; the head hash, exported outside the
// database, anchors the chain's end.
package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/gowebpki/jcs"
)

// Event types. They are part of the admin API and never renamed.
const (
	TenantCreated            = "tenant.created"
	PolicyUpdated            = "policy.updated"
	ApplicationCreated       = "application.created"
	ApplicationUpdated       = "application.updated"
	ApplicationSecretRotated = "application.secret_rotated"
	ApplicationDeleted       = "application.deleted"
	UserCreated              = "user.created"
	UserLocked               = "user.locked"
	UserUnlocked             = "user.unlocked"
	AdminTokenCreated        = "admin_token.created"
	AdminTokenRevoked        = "admin_token.revoked"
)

// Actor types.
const (
	ActorAdmin       = "admin"
	ActorApplication = "application"
	ActorDevice      = "device"
	ActorSystem      = "system"
)

// Actor is who did the act: an admin token, an application, a device or the
// system itself. ID is the credential's id ("bootstrap" for the bootstrap
// token), never a secret.
type Actor struct {
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Event is one audit record.
type Event struct {
	ID         int64
	TenantID   string
	OccurredAt time.Time
	Type       string
	Actor      Actor
	// UserID is the user the act concerns, or "".
	UserID string
	// Data holds the act's details as a JSON object. It never holds secrets.
	Data json.RawMessage
	// Seq, PrevHash and Hash are set by the sealer; Seq is 0 until then.
	Seq      int64
	PrevHash []byte
	Hash     []byte
}

// Sealed reports whether the sealer has chained the event.
func (e Event) Sealed() bool { return e.Seq > 0 }

// Genesis is the previous hash of a tenant's first event.
var Genesis = make([]byte, sha256.Size)

// timeLayout fixes microsecond precision (what PostgreSQL stores), so the
// canonical text of a time read back from the database never changes.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// Canonical returns the RFC 8785 canonical JSON of the event's content: every
// field but the hashes.
func Canonical(e Event) ([]byte, error) {
	data := e.Data
	if len(bytes.TrimSpace(data)) == 0 {
		data = json.RawMessage("{}")
	}
	var user *string
	if e.UserID != "" {
		user = &e.UserID
	}
	raw, err := json.Marshal(struct {
		ID         int64           `json:"id"`
		TenantID   string          `json:"tenant_id"`
		Seq        int64           `json:"seq"`
		OccurredAt string          `json:"occurred_at"`
		Type       string          `json:"type"`
		Actor      Actor           `json:"actor"`
		UserID     *string         `json:"user_id"`
		Data       json.RawMessage `json:"data"`
	}{e.ID, e.TenantID, e.Seq, e.OccurredAt.UTC().Format(timeLayout), e.Type, e.Actor, user, data})
	if err != nil {
		return nil, fmt.Errorf("audit: marshal event %d: %w", e.ID, err)
	}
	out, err := jcs.Transform(raw)
	if err != nil {
		return nil, fmt.Errorf("audit: canonicalize event %d: %w", e.ID, err)
	}
	return out, nil
}

// Link computes an event's hash from the previous hash and its content.
func Link(prev []byte, e Event) ([]byte, error) {
	c, err := Canonical(e)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(prev)
	h.Write(c)
	return h.Sum(nil), nil
}

// Break names the first broken link of a chain.
type Break struct {
	Seq     int64
	EventID int64
	Reason  string
}

// Verifier checks a tenant's sealed events, fed in sequence order.
type Verifier struct {
	prev  []byte
	seq   int64
	first *Break
}

// NewVerifier starts a check at the chain's genesis.
func NewVerifier() *Verifier { return &Verifier{prev: Genesis} }

// Add checks the next event. It returns false once the chain is broken; the
// first break is kept.
func (v *Verifier) Add(e Event) bool {
	if v.first != nil {
		return false
	}
	fail := func(reason string) bool {
		v.first = &Break{Seq: e.Seq, EventID: e.ID, Reason: reason}
		return false
	}
	switch {
	case e.Seq != v.seq+1:
		return fail(fmt.Sprintf("sequence gap: expected %d", v.seq+1))
	case !bytes.Equal(e.PrevHash, v.prev):
		return fail("previous hash does not match the preceding event")
	}
	h, err := Link(v.prev, e)
	if err != nil {
		return fail(err.Error())
	}
	if !bytes.Equal(h, e.Hash) {
		return fail("hash does not match the event's content")
	}
	v.prev, v.seq = h, e.Seq
	return true
}

// Result reports the verified head (the last good link) and the first break.
func (v *Verifier) Result() (headSeq int64, headHash []byte, broken *Break) {
	return v.seq, v.prev, v.first
}

// Hex formats a hash for the wire and for logs.
func Hex(h []byte) string { return hex.EncodeToString(h) }
