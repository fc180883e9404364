package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/httprate"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/credential"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/notify"
	"github.com/pushmfa/pushmfa/internal/postgres"
)

// authWindow is the window over which failed authentications are counted.
const authWindow = time.Minute

// authenticator checks bearer credentials: the bootstrap admin token, minted
// admin tokens and application secrets.
type authenticator struct {
	db *postgres.DB
	// bootstrap is the SHA-256 of the bootstrap token, nil when there is none;
	// comparing digests keeps the comparison constant-time whatever the
	// presented token's length.
	bootstrap []byte
	failures  *httprate.RateLimiter
	metrics   *metrics.Metrics
	clientIP  func(*http.Request) string
	// apps caches application principals (kept right by NOTIFY).
	apps *notify.Apps
}

func newAuthenticator(db *postgres.DB, bootstrapToken string, failureLimit int, m *metrics.Metrics,
	clientIP func(*http.Request) string, apps *notify.Apps) *authenticator {
	a := &authenticator{
		apps:     apps,
		db:       db,
		metrics:  m,
		clientIP: clientIP,
		failures: httprate.NewRateLimiter(failureLimit, authWindow, httprate.WithResponseHeaders(httprate.ResponseHeaders{})),
	}
	if bootstrapToken != "" {
		d := sha256.Sum256([]byte(bootstrapToken))
		a.bootstrap = d[:]
	}
	return a
}

// failed counts a failed authentication against its source address and
// returns the error to answer with: 401, or 429 once the address has failed
// more than the limit within the window. A valid credential is never refused,
// so a flood of bad attempts from one address (or from behind one proxy)
// cannot lock honest callers out.
func (a *authenticator) failed(r *http.Request, scheme string) error {
	limited := a.failures.OnLimit(discardHeaders{}, r, a.clientIP(r))
	if limited {
		a.metrics.AuthFailures.WithLabelValues(scheme, "rate_limited").Inc()
		return errRateLimited
	}
	a.metrics.AuthFailures.WithLabelValues(scheme, "unauthorized").Inc()
	return errs.E(errs.Unauthorized, "missing or invalid credentials")
}

var errRateLimited = &errs.Error{Code: errs.RateLimited, RetryAfter: authWindow,
	Message: "too many failed authentications from this address; try again later"}

// require admits only principals of the given kind: no or bad credentials are
// 401 unauthorized (never saying why; 429 when the address fails too often),
// a valid credential of another kind is 403 forbidden.
func (a *authenticator) require(kind account.Kind) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			p, err := a.authenticate(r.Context(), r.Header.Get("Authorization"))
			if errors.Is(err, errs.ErrUnauthorized) {
				writeError(w, r, a.failed(r, "bearer"))
				return
			}
			if err != nil {
				writeError(w, r, err)
				return
			}
			if p.Kind != kind {
				a.metrics.AuthFailures.WithLabelValues("bearer", "forbidden").Inc()
				writeError(w, r, errs.E(errs.Forbidden, "this credential cannot call this endpoint"))
				return
			}
			ctx := context.WithValue(r.Context(), keyPrincipal, p)
			ctx = context.WithValue(ctx, keyLogger, loggerFrom(ctx).With("principal", p.ID))
			next.ServeHTTP(w, r.WithContext(ctx))
		})
	}
}

// authenticate resolves an Authorization header to a principal.
func (a *authenticator) authenticate(ctx context.Context, header string) (account.Principal, error) {
	scheme, token, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return account.Principal{}, errs.ErrUnauthorized
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > 512 {
		return account.Principal{}, errs.ErrUnauthorized
	}
	if a.bootstrap != nil {
		d := sha256.Sum256([]byte(token))
		if credential.Equal(d[:], a.bootstrap) {
			return account.Principal{Kind: account.KindAdmin, ID: account.BootstrapID}, nil
		}
	}
	secret := credential.FromText(token)
	kind, wellFormed := secret.Kind()
	if !wellFormed {
		return account.Principal{}, errs.ErrUnauthorized
	}
	switch kind {
	case credential.AdminToken:
		return a.db.AuthenticateAdminToken(ctx, secret.Digest())
	case credential.AppSecret:
		digest := secret.Digest()
		if p, ok := a.apps.Get(digest, time.Now()); ok {
			return p, nil
		}
		gen := a.apps.Generation()
		p, err := a.db.AuthenticateApplication(ctx, digest)
		if err == nil {
			a.apps.Put(digest, p, gen, time.Now())
		}
		return p, err
	}
	return account.Principal{}, errs.ErrUnauthorized
}

// principal returns the request's authenticated caller.
func principal(r *http.Request) account.Principal {
	p, _ := r.Context().Value(keyPrincipal).(account.Principal)
	return p
}

// discardHeaders lets the limiter count without touching the real response.
type discardHeaders struct{}

func (discardHeaders) Header() http.Header       { return http.Header{} }
func (discardHeaders) Write([]byte) (int, error) { return 0, nil }
func (discardHeaders) WriteHeader(int)           {}
