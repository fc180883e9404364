package challenge

import (
	"cmp"
	"slices"
	"time"
)

// Push is the record of one push concerning a challenge: the challenge's
// own push to a device, or the "it is over" notification after it.
type Push struct {
	DeliveryID string
	DeviceID   string
	// What is "challenge" or the notification's event (challenge_resolved).
	What              string
	Provider          string
	Outcome           string // pending, sent, retrying, failed, token_invalid, skipped
	ProviderMessageID string
	Reason            string
	Attempts          int
	Queued            time.Time
	Updated           time.Time
	Sent              *time.Time
}

// Fetch records a device reading the challenge.
type Fetch struct {
	DeviceID string
	At       time.Time
}

// Event is one moment of a challenge's timeline.
type Event struct {
	At    time.Time
	Event string // created, push_queued, push_<outcome>, fetched, resolved, expired
	// For pushes and fetches:
	DeviceID          string
	DeliveryID        string
	Push              string // challenge or challenge_resolved
	Provider          string
	ProviderMessageID string
	Reason            string
	Attempts          int
	// For the resolution:
	State      string
	Resolution string
}

// Timeline orders what happened to a challenge: created, each push queued
// and handed to its provider (or why not), each device's fetch, and the
// answer, cancellation or expiry: the answer to "why didn't my push
// arrive?".
func Timeline(c Challenge, pushes []Push, fetches []Fetch, now time.Time) []Event {
	events := []Event{{At: c.CreatedAt, Event: "created"}}
	for _, p := range pushes {
		base := Event{DeviceID: p.DeviceID, DeliveryID: p.DeliveryID, Push: p.What, Provider: p.Provider, Attempts: p.Attempts}
		queued := base
		queued.At, queued.Event, queued.Attempts = p.Queued, "push_queued", 0
		events = append(events, queued)
		switch {
		case p.Outcome == "sent" && p.Sent != nil:
			e := base
			e.At, e.Event, e.ProviderMessageID = *p.Sent, "push_sent", p.ProviderMessageID
			events = append(events, e)
		case p.Outcome != "pending":
			e := base
			e.At, e.Event, e.Reason = p.Updated, "push_"+p.Outcome, p.Reason
			events = append(events, e)
		}
	}
	for _, f := range fetches {
		events = append(events, Event{At: f.At, Event: "fetched", DeviceID: f.DeviceID})
	}
	switch state := c.EffectiveState(now); {
	case state == StateExpired && c.ResolvedAt == nil:
		events = append(events, Event{At: c.ExpiresAt, Event: "expired", State: StateExpired, Resolution: ResolutionExpired})
	case state == StateExpired:
		events = append(events, Event{At: *c.ResolvedAt, Event: "expired", State: StateExpired, Resolution: ResolutionExpired})
	case state != StatePending && c.ResolvedAt != nil:
		events = append(events, Event{At: *c.ResolvedAt, Event: "resolved", State: c.State, Resolution: c.Resolution,
			DeviceID: c.ResolvedByDevice})
	}
	// Stable, so that events at the same instant keep their causal order.
	slices.SortStableFunc(events, func(a, b Event) int { return cmp.Compare(a.At.UnixNano(), b.At.UnixNano()) })
	return events
}
