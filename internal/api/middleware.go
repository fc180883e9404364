package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/go-chi/chi/v5/middleware"

	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/metrics"
)

type ctxKey int

const (
	keyLogger ctxKey = iota
	keyPrincipal
)

// loggerFrom returns the request's logger (carrying its request id).
func loggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(keyLogger).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

var requestIDRE = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// requestID takes the caller's X-Request-Id when it is a plain token, or
// makes one, echoes it, and gives the request a logger that carries it.
func requestID(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			id := r.Header.Get("X-Request-Id")
			if !requestIDRE.MatchString(id) {
				b := make([]byte, 8)
				_, _ = rand.Read(b)
				id = hex.EncodeToString(b)
			}
			w.Header().Set("X-Request-Id", id)
			ctx := context.WithValue(r.Context(), keyLogger, logger.With("request_id", id))
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// observe logs every request once it is done and counts it by route. The
// log line names the route, path and status, never headers, query strings or
// bodies, so no credential or sign-in context reaches the log.
func observe(m *metrics.Metrics, clientIP func(*http.Request) string) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			ww := middleware.NewWrapResponseWriter(w, r.ProtoMajor)
			next.ServeHTTP(ww, r)
			route := "unmatched"
			if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
				route = rc.RoutePattern()
			}
			status := ww.Status()
			if status == 0 {
				status = http.StatusOK
			}
			elapsed := time.Since(start)
			method := methodLabel(r.Method)
			m.HTTPRequests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
			m.HTTPDuration.WithLabelValues(method, route).Observe(elapsed.Seconds())
			loggerFrom(r.Context()).Info("request",
				"method", method, "route", route, "path", r.URL.Path, "status", status,
				"bytes", ww.BytesWritten(), "duration_ms", float64(elapsed.Microseconds())/1000,
				"remote", clientIP(r))
		})
	}
}

// recoverer turns a panic into a logged 500 internal error. Tests prove that
// no bad input reaches it; it exists for the bug nobody has found yet.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v) // the server's own signal to abort the response
			}
			loggerFrom(r.Context()).Error("panic serving request", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			writeError(w, r, fmt.Errorf("panic: %v", v))
		}()
		next.ServeHTTP(w, r)
	})
}

// checkQuery refuses a malformed query string, which net/url would
// otherwise silently drop (turning "?cursor=%%" into no cursor at all).
func checkQuery(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			writeError(w, r, errs.E(errs.InvalidRequest, "malformed query string"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// clientAddr returns the address a request came from: the TCP peer, or,
// when the peer is a trusted proxy, the right-most X-Forwarded-For address
// that is not itself a trusted proxy. Forwarded headers from anyone else are
// ignored, since any client can send them.
func clientAddr(trusted []netip.Prefix) func(*http.Request) string {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a.Unmap()) {
				return true
			}
		}
		return false
	}
	return func(r *http.Request) string {
		peer := peerIP(r)
		addr, err := netip.ParseAddr(peer)
		if err != nil || len(trusted) == 0 || !isTrusted(addr) {
			return peer
		}
		hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
		for i := len(hops) - 1; i >= 0; i-- {
			hop, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				return peer // a malformed chain is not trusted
			}
			if !isTrusted(hop) {
				return hop.Unmap().String()
			}
		}
		return peer
	}
}

// peerIP is the TCP peer's address.
func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// methodLabel keeps metric labels bounded: any method outside the standard
// ones (Go accepts any token) counts as "other".
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

func notFound(w http.ResponseWriter, r *http.Request) {
	writeError(w, r, errs.NotFoundf("no such endpoint"))
}

// methodNotAllowed answers 405 with the Allow header chi leaves out when a
// custom handler is set.
func methodNotAllowed(mux *chi.Mux) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var allowed []string
		path := r.URL.RawPath
		if path == "" {
			path = r.URL.Path
		}
		for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete} {
			if mux.Match(chi.NewRouteContext(), m, path) {
				allowed = append(allowed, m)
			}
		}
		for i, m := range allowed {
			if i == 0 {
				w.Header().Set("Allow", m)
			} else {
				w.Header().Add("Allow", m)
			}
		}
		writeError(w, r, errs.E(errs.MethodNotAllowed, "method %s is not allowed here", r.Method))
	}
}
