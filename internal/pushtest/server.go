package pushtest

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// Reply scripts one answer of a fake.
//
// For APNs, Reason alone is enough: the status is Apple's for that reason
// (Unregistered is 410, TooManyRequests 429, ...; 400 for a reason Apple does
// not list). Status alone answers Apple's generic reason for it (403
// Forbidden, 410 Unregistered, 429 TooManyRequests, 500 InternalServerError,
// 503 ServiceUnavailable, ...).
//
// For FCM, Reason is the FcmError errorCode; the status and google.rpc status
// are FCM's for it (UNREGISTERED is 404 NOT_FOUND, QUOTA_EXCEEDED 429
// RESOURCE_EXHAUSTED, ...) unless Status overrides the HTTP status. Status
// with no Reason answers that status with its canonical google.rpc status and
// no FcmError detail (403 PERMISSION_DENIED: a provider-wide fault).
type Reply struct {
	// Status is the HTTP status; 0 means success (200) unless Reason is set.
	Status int
	// Reason is, for APNs, the reason string (BadDeviceToken, Unregistered,
	// TooManyRequests, InternalServerError, ServiceUnavailable,
	// TopicDisallowed, InvalidProviderToken, ...); for FCM, the FcmError
	// errorCode (UNREGISTERED, INVALID_ARGUMENT, QUOTA_EXCEEDED, UNAVAILABLE,
	// INTERNAL, SENDER_ID_MISMATCH, THIRD_PARTY_AUTH_ERROR), or "" for an
	// error body without FCM details.
	Reason string
	// Message, for FCM, replaces the error message FCM gives for Reason:
	// INVALID_ARGUMENT says "The registration token is not a valid FCM
	// registration token" when the token is at fault, and names the field
	// when the message is ("Invalid value at 'message.android.ttl' ...").
	Message string
	// RetryAfter is the Retry-After header value, when set.
	RetryAfter string
	// Delay is how long to wait before answering. The wait ends early, with
	// no answer, when the client goes away or the fake closes.
	Delay time.Duration
}

// server is the HTTPS listener under each fake.
type server struct {
	ln   net.Listener
	tls  *tls.Config
	http *http.Server // nil until serve
	url  string
	// done is closed by close, so that delayed answers stop waiting and
	// Close returns at once.
	done chan struct{}

	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup // handlers in flight
	once    sync.Once
}

// listen opens a fake's listener on 127.0.0.1:0 with TLS (h2 and http/1.1)
// from ca; serve then starts answering on it. In between, the fake knows its
// URL but gets no requests.
func listen(ca *CA) (*server, error) {
	if ca == nil {
		return nil, errors.New("pushtest: the config needs a CA")
	}
	tlsConfig, err := ca.ServerConfig()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("pushtest: listen: %w", err)
	}
	return &server{ln: ln, tls: tlsConfig, url: "https://" + ln.Addr().String(), done: make(chan struct{})}, nil
}

func (s *server) serve(h http.Handler) {
	s.http = &http.Server{
		Handler:           s.track(h),
		TLSConfig:         s.tls,
		ReadHeaderTimeout: 10 * time.Second,
		// Clients that do not trust the CA (a test of exactly that, or a
		// child process without SSL_CERT_FILE) make net/http log handshake
		// errors; the client sees the failure, the test log need not.
		ErrorLog: slog.NewLogLogger(slog.DiscardHandler, slog.LevelError),
	}
	// ServeTLS returns only when the server closes (ErrServerClosed).
	go func() { _ = s.http.ServeTLS(s.ln, "", "") }()
}

// track counts handlers in flight so close can wait for them: after Close,
// what the fake recorded no longer changes.
func (s *server) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		s.running.Add(1)
		s.mu.Unlock()
		defer s.running.Done()
		h.ServeHTTP(w, r)
	})
}

func (s *server) close() {
	s.once.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.done)
		if s.http == nil {
			s.ln.Close()
			return
		}
		s.http.Close()
		s.running.Wait()
	})
}

// delay waits d before an answer is written. If the client goes away or the
// fake closes first, it aborts the handler with http.ErrAbortHandler (net/http's
// way to reset the stream without a response): a handler that merely returned
// would make net/http answer an implicit 200.
func (s *server) delay(ctx context.Context, d time.Duration) {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.done:
			panic(http.ErrAbortHandler)
		}
	}
	if ctx.Err() != nil {
		panic(http.ErrAbortHandler)
	}
}

// answered reports whether an answer reached the connection: it flushes
// what the handler wrote and checks the client is still there.
func answered(w http.ResponseWriter, r *http.Request) bool {
	if err := http.NewResponseController(w).Flush(); err != nil {
		return false
	}
	return r.Context().Err() == nil
}

// scripts holds the answers scripted per device token.
type scripts struct {
	mu      sync.Mutex
	next    map[string][]Reply
	initial Reply
}

func (s *scripts) add(token string, replies []Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.next == nil {
		s.next = make(map[string][]Reply)
	}
	s.next[token] = append(s.next[token], replies...)
}

func (s *scripts) setDefault(r Reply) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.initial = r
}

// take consumes the next scripted reply for token, or returns the default.
func (s *scripts) take(token string) Reply {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.next[token]
	if len(q) == 0 {
		return s.initial
	}
	if len(q) == 1 {
		delete(s.next, token)
	} else {
		s.next[token] = q[1:]
	}
	return q[0]
}

func (s *scripts) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.next = nil
	s.initial = Reply{}
}

// journal records requests in arrival order. Records are added when a
// request arrives and updated when its answer is written, under the lock.
type journal[T any] struct {
	mu   sync.Mutex
	recs []*T
}

func (j *journal[T]) add(rec *T) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recs = append(j.recs, rec)
}

// update runs fn, which changes a record, under the lock. A record dropped
// by reset may still be updated; nobody sees it.
func (j *journal[T]) update(fn func()) {
	j.mu.Lock()
	defer j.mu.Unlock()
	fn()
}

// all returns deep copies, so callers can neither race with updates nor
// change what the fake recorded.
func (j *journal[T]) all(clone func(T) T) []T {
	return j.matching(func(*T) bool { return true }, clone)
}

// matching is all, for the records keep selects (read under the lock).
func (j *journal[T]) matching(keep func(*T) bool, clone func(T) T) []T {
	j.mu.Lock()
	defer j.mu.Unlock()
	var out []T
	for _, r := range j.recs {
		if keep(r) {
			out = append(out, clone(*r))
		}
	}
	return out
}

func (j *journal[T]) reset() {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.recs = nil
}
