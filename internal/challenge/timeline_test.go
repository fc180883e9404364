package challenge_test

import (
	"slices"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/challenge"
)

func TestTimeline(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sent := at(12)
	pending := challenge.Challenge{ID: "c", State: challenge.StatePending, CreatedAt: t0, ExpiresAt: at(60_000)}
	approved := pending
	approved.State, approved.Resolution, approved.ResolvedByDevice = challenge.StateApproved, challenge.ResolutionApprove, "phone"
	resolvedAt := at(3000)
	approved.ResolvedAt = &resolvedAt
	pushes := []challenge.Push{
		{DeliveryID: "d1", DeviceID: "phone", What: "challenge", Provider: "apns", Outcome: "sent", ProviderMessageID: "apns-1",
			Attempts: 1, Queued: t0, Updated: sent, Sent: &sent},
		{DeliveryID: "d2", DeviceID: "tablet", What: "challenge", Provider: "fcm", Outcome: "token_invalid", Reason: "UNREGISTERED",
			Attempts: 1, Queued: t0, Updated: at(20)},
		{DeliveryID: "d3", DeviceID: "watch", What: "challenge", Provider: "apns", Outcome: "pending", Queued: t0, Updated: t0},
	}
	fetches := []challenge.Fetch{{DeviceID: "phone", At: at(900)}}

	events := func(es []challenge.Event) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Event+":"+e.DeviceID)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		c    challenge.Challenge
		now  time.Time
		want []string
	}{
		{"approved", approved, at(5000), []string{"created:", "push_queued:phone", "push_queued:tablet", "push_queued:watch",
			"push_sent:phone", "push_token_invalid:tablet", "fetched:phone", "resolved:phone"}},
		{"pending", pending, at(5000), []string{"created:", "push_queued:phone", "push_queued:tablet", "push_queued:watch",
			"push_sent:phone", "push_token_invalid:tablet", "fetched:phone"}},
		{"expired, not yet swept", pending, at(61_000), []string{"created:", "push_queued:phone", "push_queued:tablet",
			"push_queued:watch", "push_sent:phone", "push_token_invalid:tablet", "fetched:phone", "expired:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := challenge.Timeline(tc.c, pushes, fetches, tc.now)
			if g := events(got); !slices.Equal(g, tc.want) {
				t.Fatalf("events\n got %v\nwant %v", g, tc.want)
			}
			for i := 1; i < len(got); i++ {
				if got[i].At.Before(got[i-1].At) {
					t.Fatalf("out of order at %d: %v", i, events(got))
				}
			}
		})
	}
	got := challenge.Timeline(approved, pushes, fetches, at(5000))
	if e := got[4]; e.ProviderMessageID != "apns-1" || e.Provider != "apns" || !e.At.Equal(sent) || e.Attempts != 1 {
		t.Fatalf("push_sent event: %+v", e)
	}
	if e := got[5]; e.Reason != "UNREGISTERED" || e.Provider != "fcm" {
		t.Fatalf("push_token_invalid event: %+v", e)
	}
	if e := got[len(got)-1]; e.State != challenge.StateApproved || e.Resolution != challenge.ResolutionApprove || !e.At.Equal(resolvedAt) {
		t.Fatalf("resolved event: %+v", e)
	}
}
