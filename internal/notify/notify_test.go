package notify

import (
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/challenge"
)

func TestHub(t *testing.T) {
	t.Parallel()
	h := NewHub(10)
	c := challenge.Challenge{ID: "c1", State: challenge.StatePending}

	// Not listening yet: nothing is remembered or trusted.
	h.Remember(c, h.Epoch())
	if _, ok := h.Lookup("c1"); ok {
		t.Fatal("trusted without a listener")
	}
	h.Connected()
	h.Remember(c, h.Epoch())
	if got, ok := h.Lookup("c1"); !ok || got.State != challenge.StatePending {
		t.Fatalf("lookup %+v %v", got, ok)
	}

	// A waiter gets the change; what the hub knows follows it.
	w := h.Watch("c1")
	other := h.Watch("c2")
	h.Publish(Change{ID: "c1", State: challenge.StateApproved, Resolution: "approve", ResolvedAt: time.Now()})
	select {
	case ch := <-w.C:
		if ch.State != challenge.StateApproved {
			t.Fatal(ch)
		}
	default:
		t.Fatal("waiter not woken")
	}
	select {
	case <-other.C:
		t.Fatal("another challenge's waiter was woken")
	default:
	}
	if got, _ := h.Lookup("c1"); got.State != challenge.StateApproved || got.ResolvedAt == nil {
		t.Fatalf("known state %+v", got)
	}
	h.Unwatch(w)
	if h.Waiting() != 1 {
		t.Fatalf("%d waiting", h.Waiting())
	}

	// A reconnect resets waiters and distrusts what was known.
	h.Disconnected()
	if _, ok := h.Lookup("c1"); ok {
		t.Fatal("trusted while disconnected")
	}
	h.Connected()
	select {
	case <-other.Reset:
	default:
		t.Fatal("waiter not reset on reconnect")
	}
	if _, ok := h.Lookup("c1"); ok {
		t.Fatal("knowledge from before the reconnect trusted")
	}
	h.Unwatch(other)

	// A change that beats Remember is not lost.
	h.Publish(Change{ID: "c3", State: challenge.StateDenied, Resolution: "deny", ResolvedAt: time.Now()})
	h.Remember(challenge.Challenge{ID: "c3", State: challenge.StatePending}, h.Epoch())
	if got, _ := h.Lookup("c3"); got.State != challenge.StateDenied {
		t.Fatalf("early change lost: %+v", got)
	}

	// A reconnect while a challenge was being created: a change made
	// elsewhere meanwhile may have been missed, so it is not remembered.
	since := h.Epoch()
	h.Disconnected()
	h.Connected()
	h.Remember(challenge.Challenge{ID: "c4", State: challenge.StatePending}, since)
	if _, ok := h.Lookup("c4"); ok {
		t.Fatal("a challenge created across a reconnect was trusted")
	}
	h.Disconnected()
	h.Remember(challenge.Challenge{ID: "c5", State: challenge.StatePending}, h.Epoch())
	if _, ok := h.Lookup("c5"); ok {
		t.Fatal("a challenge created while the listener was down was trusted")
	}
	h.Connected()

	// Forget sends the next lookup to the database.
	h.Forget("c3")
	if _, ok := h.Lookup("c3"); ok {
		t.Fatal("forgotten challenge still known")
	}
}
