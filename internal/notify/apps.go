package notify

import (
	"sync"
	"time"

	"github.com/pushmfa/pushmfa/internal/account"
)

// Apps caches the principals of application secrets, so relying-party
// calls need no database read to authenticate. It stays correct across
// instances: a rotation, change or deletion of an application NOTIFYs every
// instance, which evicts the application's entries at once. While the
// listener is down the cache is not used; on reconnect it starts empty.
type Apps struct {
	mu        sync.Mutex
	ttl       time.Duration
	entries   map[string]appEntry // by secret digest
	byApp     map[string][]string // application id -> digests
	gen       uint64
	connected bool
}

type appEntry struct {
	p       account.Principal
	expires time.Time
}

// NewApps makes a cache whose entries live at most ttl.
func NewApps(ttl time.Duration) *Apps {
	return &Apps{ttl: ttl, entries: map[string]appEntry{}, byApp: map[string][]string{}}
}

// Get returns the principal of a secret digest, if cached and trusted.
func (a *Apps) Get(digest []byte, now time.Time) (account.Principal, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[string(digest)]
	if !ok || !a.connected || now.After(e.expires) {
		return account.Principal{}, false
	}
	return e.p, true
}

// Generation is read before looking a secret up in the database; Put then
// caches the result only if nothing was invalidated in between.
func (a *Apps) Generation() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gen
}

// Put caches a principal read from the database at generation gen.
func (a *Apps) Put(digest []byte, p account.Principal, gen uint64, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.connected || gen != a.gen {
		return
	}
	if len(a.entries) >= 100_000 {
		a.clear() // bounded; a full cache is rebuilt as calls come
	}
	a.entries[string(digest)] = appEntry{p: p, expires: now.Add(a.ttl)}
	a.byApp[p.ID] = append(a.byApp[p.ID], string(digest))
}

// Invalidate evicts an application's entries (its secret was rotated, or it
// was changed or deleted).
func (a *Apps) Invalidate(appID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gen++
	for _, d := range a.byApp[appID] {
		delete(a.entries, d)
	}
	delete(a.byApp, appID)
}

// Connected starts trusting the cache, empty (changes may have been missed).
func (a *Apps) Connected() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.clear()
	a.connected = true
}

// Disconnected stops trusting the cache.
func (a *Apps) Disconnected() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.connected = false
	a.clear()
}

func (a *Apps) clear() {
	a.gen++
	a.entries = map[string]appEntry{}
	a.byApp = map[string][]string{}
}
