package challenge

import (
	"time"

	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/policy"
)

// Denial backoff: from the policy's denial_backoff_after-th consecutive
// denial, the next push waits BackoffBase, doubling with each further denial
// up to BackoffMax; an approval resets it.
const (
	BackoffBase = 30 * time.Second
	BackoffMax  = time.Hour
)

// DenialBackoff is how long after the latest of `consecutive` denials the
// next push must wait (zero below the policy's threshold).
func DenialBackoff(p policy.Policy, consecutive int) time.Duration {
	if consecutive < p.DenialBackoffAfter {
		return 0
	}
	d := BackoffBase
	for i := p.DenialBackoffAfter; i < consecutive && d < BackoffMax; i++ {
		d *= 2
	}
	return min(d, BackoffMax)
}

// Usage is what the guard needs to know about a user's recent challenges,
// counted in PostgreSQL so it holds across replicas.
type Usage struct {
	// InWindow is the number of challenges created within the policy's
	// window, and OldestInWindow the creation time of the oldest of them.
	InWindow       int
	OldestInWindow time.Time
	// Pending is the number of unexpired pending challenges, and
	// NextExpiry when the first of them expires.
	Pending    int
	NextExpiry time.Time
	// BlockedUntil is the end of the denial backoff, if any.
	BlockedUntil *time.Time
}

// Guard reasons, recorded in the audit log.
const (
	GuardWindow  = "window"
	GuardPending = "pending"
	GuardBackoff = "denial_backoff"
)

// Guard decides whether a new push challenge may be sent now. A refusal is
// too_many_challenges with the time after which asking again can succeed.
func Guard(p policy.Policy, u Usage, now time.Time) (reason string, err error) {
	retry := func(reason string, until time.Time, msg string) (string, error) {
		wait := until.Sub(now)
		if wait < time.Second {
			wait = time.Second
		}
		return reason, &errs.Error{Code: TooManyChallenges, Message: msg, RetryAfter: wait}
	}
	if u.BlockedUntil != nil && now.Before(*u.BlockedUntil) {
		return retry(GuardBackoff, *u.BlockedUntil, "the user denied several sign-in requests in a row; wait before pushing again")
	}
	if u.Pending >= p.MaxPendingChallenges {
		return retry(GuardPending, u.NextExpiry, "the user already has the most pending sign-in requests the policy allows")
	}
	if u.InWindow >= p.ChallengesPerWindow {
		window := time.Duration(p.ChallengeWindowSeconds) * time.Second
		return retry(GuardWindow, u.OldestInWindow.Add(window), "too many sign-in requests for this user in the policy's window")
	}
	return "", nil
}
