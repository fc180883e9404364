// Package policy defines a tenant's security policy: its fields, their
// defaults and their bounds, exactly as DESIGN.md's wire contract lists them.
package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/pushmfa/pushmfa/internal/errs"
)

// Policy is a tenant's policy. The JSON names are the wire contract.
type Policy struct {
	ChallengeTTLSeconds      int  `json:"challenge_ttl_seconds"`
	EnrollmentTTLSeconds     int  `json:"enrollment_ttl_seconds"`
	NumberMatching           bool `json:"number_matching"`
	PushEnabled              bool `json:"push_enabled"`
	RequireUserVerification  bool `json:"require_user_verification"`
	ChallengesPerWindow      int  `json:"challenges_per_window"`
	ChallengeWindowSeconds   int  `json:"challenge_window_seconds"`
	MaxPendingChallenges     int  `json:"max_pending_challenges"`
	DenialBackoffAfter       int  `json:"denial_backoff_after"`
	FraudLockoutAfter        int  `json:"fraud_lockout_after"`
	TOTPEnabled              bool `json:"totp_enabled"`
	TOTPDigits               int  `json:"totp_digits"`
	TOTPMaxAttempts          int  `json:"totp_max_attempts"`
	TOTPAttemptWindowSeconds int  `json:"totp_attempt_window_seconds"`
	MaxDevices               int  `json:"max_devices"`
}

// ChallengeTTL is the challenge lifetime as a duration.
func (p Policy) ChallengeTTL() time.Duration {
	return time.Duration(p.ChallengeTTLSeconds) * time.Second
}

// EnrollmentTTL is the activation code lifetime as a duration.
func (p Policy) EnrollmentTTL() time.Duration {
	return time.Duration(p.EnrollmentTTLSeconds) * time.Second
}

// field describes one policy field: its default and what values it allows.
type field struct {
	name    string
	lo, hi  int   // inclusive bounds of an integer field
	allowed []int // when set, the only allowed values
	intp    func(*Policy) *int
	boolp   func(*Policy) *bool
}

// fields lists every field, in the wire contract's order.
var fields = []field{
	{name: "challenge_ttl_seconds", lo: 10, hi: 600, intp: func(p *Policy) *int { return &p.ChallengeTTLSeconds }},
	{name: "enrollment_ttl_seconds", lo: 60, hi: 604800, intp: func(p *Policy) *int { return &p.EnrollmentTTLSeconds }},
	{name: "number_matching", boolp: func(p *Policy) *bool { return &p.NumberMatching }},
	{name: "push_enabled", boolp: func(p *Policy) *bool { return &p.PushEnabled }},
	{name: "require_user_verification", boolp: func(p *Policy) *bool { return &p.RequireUserVerification }},
	{name: "challenges_per_window", lo: 1, hi: 1000000, intp: func(p *Policy) *int { return &p.ChallengesPerWindow }},
	{name: "challenge_window_seconds", lo: 1, hi: 86400, intp: func(p *Policy) *int { return &p.ChallengeWindowSeconds }},
	{name: "max_pending_challenges", lo: 1, hi: 1000, intp: func(p *Policy) *int { return &p.MaxPendingChallenges }},
	{name: "denial_backoff_after", lo: 1, hi: 1000, intp: func(p *Policy) *int { return &p.DenialBackoffAfter }},
	{name: "fraud_lockout_after", lo: 1, hi: 100, intp: func(p *Policy) *int { return &p.FraudLockoutAfter }},
	{name: "totp_enabled", boolp: func(p *Policy) *bool { return &p.TOTPEnabled }},
	{name: "totp_digits", lo: 6, hi: 8, allowed: []int{6, 8}, intp: func(p *Policy) *int { return &p.TOTPDigits }},
	{name: "totp_max_attempts", lo: 1, hi: 100, intp: func(p *Policy) *int { return &p.TOTPMaxAttempts }},
	{name: "totp_attempt_window_seconds", lo: 30, hi: 86400, intp: func(p *Policy) *int { return &p.TOTPAttemptWindowSeconds }},
	{name: "max_devices", lo: 1, hi: 100, intp: func(p *Policy) *int { return &p.MaxDevices }},
}

// Default returns the policy a new tenant gets.
func Default() Policy {
	return Policy{
		ChallengeTTLSeconds:      60,
		EnrollmentTTLSeconds:     600,
		NumberMatching:           true,
		PushEnabled:              true,
		RequireUserVerification:  false,
		ChallengesPerWindow:      10,
		ChallengeWindowSeconds:   300,
		MaxPendingChallenges:     3,
		DenialBackoffAfter:       3,
		FraudLockoutAfter:        1,
		TOTPEnabled:              true,
		TOTPDigits:               6,
		TOTPMaxAttempts:          5,
		TOTPAttemptWindowSeconds: 300,
		MaxDevices:               5,
	}
}

// Validate checks every field against its bounds and reports the first one
// out of range as invalid_policy naming the field.
func (p Policy) Validate() error {
	for _, f := range fields {
		if f.intp == nil {
			continue
		}
		if err := f.check(*f.intp(&p)); err != nil {
			return err
		}
	}
	return nil
}

func (f field) check(v int) error {
	if f.allowed != nil {
		if !slices.Contains(f.allowed, v) {
			return errs.Field(errs.InvalidPolicy, f.name, "%s must be one of %v, got %d", f.name, f.allowed, v)
		}
		return nil
	}
	if v < f.lo || v > f.hi {
		return errs.Field(errs.InvalidPolicy, f.name, "%s must be between %d and %d, got %d", f.name, f.lo, f.hi, v)
	}
	return nil
}

// Patch is a partial update: any subset of the fields, as raw JSON values.
type Patch map[string]json.RawMessage

// Apply returns p with the patch applied. An unknown field is invalid_request;
// a null, a value of the wrong type or out of range is invalid_policy naming
// the field. p itself is not changed.
func (p Policy) Apply(patch Patch) (Policy, error) {
	out := p
	for name, raw := range patch {
		i := slices.IndexFunc(fields, func(f field) bool { return f.name == name })
		if i < 0 {
			return p, errs.Invalid(name, "unknown policy field %q", name)
		}
		f := fields[i]
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			return p, errs.Field(errs.InvalidPolicy, name, "%s must not be null", name)
		}
		if f.boolp != nil {
			var b bool
			if err := json.Unmarshal(raw, &b); err != nil {
				return p, errs.Field(errs.InvalidPolicy, name, "%s must be a boolean", name)
			}
			*f.boolp(&out) = b
			continue
		}
		n, err := wholeNumber(raw)
		if err != nil {
			return p, errs.Field(errs.InvalidPolicy, name, "%s must be an integer", name)
		}
		if err := f.check(n); err != nil {
			return p, err
		}
		*f.intp(&out) = n
	}
	return out, nil
}

// wholeNumber accepts a JSON number with an integral value that fits an int
// (so 60 and 6e1 are accepted, 60.5 and "60" are not).
func wholeNumber(raw json.RawMessage) (int, error) {
	// json.Number would also take a quoted "60": insist on a bare number.
	if t := bytes.TrimSpace(raw); len(t) == 0 || (t[0] != '-' && (t[0] < '0' || t[0] > '9')) {
		return 0, fmt.Errorf("not a number")
	}
	var num json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&num); err != nil {
		return 0, err
	}
	if n, err := num.Int64(); err == nil {
		if n < -1<<31 || n > 1<<31-1 {
			return 0, fmt.Errorf("out of range")
		}
		return int(n), nil
	}
	f, err := num.Float64()
	if err != nil || f != float64(int64(f)) || f < -1<<31 || f > 1<<31-1 {
		return 0, fmt.Errorf("not an integer")
	}
	return int(f), nil
}

// Bounds describes a field's allowed values, for documentation and tests.
type Bounds struct {
	Name    string
	Lo, Hi  int
	Allowed []int
	Bool    bool
}

// AllBounds lists every field with its bounds, in the wire contract's order.
func AllBounds() []Bounds {
	out := make([]Bounds, len(fields))
	for i, f := range fields {
		out[i] = Bounds{Name: f.name, Lo: f.lo, Hi: f.hi, Allowed: f.allowed, Bool: f.boolp != nil}
	}
	return out
}
