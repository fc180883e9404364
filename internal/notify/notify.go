// Package notify wakes long-polls the instant a challenge changes, whichever
// server instance made the change. Each process holds one LISTEN connection
// (internal/postgres.Listener) that feeds a Hub; the Hub fans each change
// out to the requests waiting on that challenge, so thousands of waiters
// share one connection and cost a goroutine and a small struct each.
//
// The Hub also remembers the challenges this instance created. While its
// LISTEN connection has stayed up since a challenge was created, every later
// change of that challenge has reached the Hub, so the instance knows the
// challenge's state without asking the database. A reconnect resets that
// knowledge: changes may have been missed, so waiters re-read.
package notify

import (
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/pushmfa/pushmfa/internal/challenge"
)

// Change is a challenge's transition to a terminal state, as broadcast.
type Change struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Resolution string    `json:"resolution"`
	Fraud      bool      `json:"fraud,omitempty"`
	ResolvedAt time.Time `json:"resolved_at"`
}

// Apply returns c with the change applied.
func (ch Change) Apply(c challenge.Challenge) challenge.Challenge {
	c.State, c.Resolution, c.Fraud = ch.State, ch.Resolution, ch.Fraud
	at := ch.ResolvedAt
	c.ResolvedAt = &at
	return c
}

// Hub fans changes out to waiters. The zero value is not usable; use NewHub.
type Hub struct {
	mu        sync.Mutex
	waiters   map[string]map[*Waiter]struct{}
	epoch     uint64
	connected bool
	reset     chan struct{}
	known     *lru.Cache[string, *entry]
	recent    *lru.Cache[string, Change]
}

type entry struct {
	c     challenge.Challenge
	epoch uint64
}

// Waiter receives the change of one challenge, or a reset.
type Waiter struct {
	id string
	// C receives the challenge's change.
	C chan Change
	// Reset is closed when the listener reconnected: changes may have been
	// missed, so the waiter must read the challenge again.
	Reset <-chan struct{}
}

// NewHub makes a hub that remembers up to size recently created challenges.
func NewHub(size int) *Hub {
	known, _ := lru.New[string, *entry](size) // only errs for size <= 0
	recent, _ := lru.New[string, Change](size)
	return &Hub{waiters: map[string]map[*Waiter]struct{}{}, reset: make(chan struct{}), known: known, recent: recent}
}

// Watch registers a waiter for challenge id. Call Unwatch when done.
func (h *Hub) Watch(id string) *Waiter {
	h.mu.Lock()
	defer h.mu.Unlock()
	w := &Waiter{id: id, C: make(chan Change, 1), Reset: h.reset}
	set := h.waiters[id]
	if set == nil {
		set = map[*Waiter]struct{}{}
		h.waiters[id] = set
	}
	set[w] = struct{}{}
	return w
}

// Unwatch removes a waiter.
func (h *Hub) Unwatch(w *Waiter) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if set := h.waiters[w.id]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(h.waiters, w.id)
		}
	}
}

// Publish delivers a change to the challenge's waiters and to what the hub
// knows of it.
func (h *Hub) Publish(ch Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.known.Get(ch.ID); ok {
		e.c = ch.Apply(e.c)
	} else {
		// The change may beat Remember by a hair: keep it for a while.
		h.recent.Add(ch.ID, ch)
	}
	for w := range h.waiters[ch.ID] {
		select {
		case w.C <- ch:
		default: // already holds the (only possible) terminal change
		}
	}
}

// Connected tells the hub its listener is (re)connected and listening:
// changes may have been missed before, so waiters are told to re-read and
// what the hub knew is no longer trusted.
func (h *Hub) Connected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.epoch++
	h.connected = true
	close(h.reset)
	h.reset = make(chan struct{})
}

// Disconnected tells the hub its listener lost its connection: nothing it
// knows can be trusted until it is listening again.
func (h *Hub) Disconnected() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.connected = false
}

// Epoch names the listener's current connection, for Remember: take it
// before creating a challenge. It is 0 while the listener is down.
func (h *Hub) Epoch() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.connected {
		return 0
	}
	return h.epoch
}

// Remember records a challenge this instance just created (after commit),
// given the Epoch taken before the creation began. Should the listener
// have reconnected since, a change made elsewhere in between may have been
// missed, so the challenge is not remembered and reads go to the database.
func (h *Hub) Remember(c challenge.Challenge, since uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.connected || since == 0 || since != h.epoch {
		return
	}
	if ch, ok := h.recent.Get(c.ID); ok {
		c = ch.Apply(c)
	}
	h.known.Add(c.ID, &entry{c: c, epoch: h.epoch})
}

// Lookup returns what the hub knows of a challenge, if it can be trusted:
// it was created here, and the listener has been connected ever since.
func (h *Hub) Lookup(id string) (challenge.Challenge, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.known.Get(id)
	if !ok || !h.connected || e.epoch != h.epoch {
		return challenge.Challenge{}, false
	}
	return e.c, true
}

// Forget drops what the hub knows of a challenge, so the next lookup reads
// the database.
func (h *Hub) Forget(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.known.Remove(id)
	h.recent.Remove(id)
}

// Waiting is the number of registered waiters (for metrics and tests).
func (h *Hub) Waiting() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, set := range h.waiters {
		n += len(set)
	}
	return n
}
