// Package api serves the service's HTTP API: the relying-party, device and
// admin calls of DESIGN.md's wire contract, health checks, metrics and the
// OpenAPI document. Handlers decode and validate requests, call the store,
// and map every error to a status and stable code in one place (errors.go).
package api

import (
	"context"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/notify"
	"github.com/pushmfa/pushmfa/internal/postgres"
)

// Config is what the API needs from the server.
type Config struct {
	DB      *postgres.DB
	Logger  *slog.Logger
	Metrics *metrics.Metrics
	// BootstrapAdminToken is the operator's global admin token ("" = none).
	BootstrapAdminToken string
	// AuthFailureLimit is how many failed authentications a source address
	// may make per minute.
	AuthFailureLimit int
	// Ready reports whether the service can take traffic (database reachable,
	// schema current, not shutting down).
	Ready func(context.Context) error
	// ServeMetrics puts /metrics on this handler (false when METRICS_ADDR
	// moves it to its own listener).
	ServeMetrics bool
	// AllowHTTPLoopbackWebhooks accepts http:// webhook URLs on loopback
	// hosts, for local development.
	AllowHTTPLoopbackWebhooks bool
	// TrustedProxies are the proxies whose X-Forwarded-For names the client.
	TrustedProxies []netip.Prefix
	// PublicURL is the server's external base URL, carried by enrollment
	// URIs and QR codes.
	PublicURL string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
	// Hub wakes long-polls (fed by the process's LISTEN connection).
	Hub *notify.Hub
	// Apps caches application principals (kept right by the same LISTEN).
	Apps *notify.Apps
}

type handlers struct {
	db                *postgres.DB
	ready             func(context.Context) error
	allowHTTPWebhooks bool
	publicURL         string
	now               func() time.Time
	auth              *authenticator
	dev               *deviceAuth
	hub               *notify.Hub
	metrics           *metrics.Metrics
}

// New builds the HTTP handler.
func New(cfg Config) (http.Handler, error) {
	openAPI, err := openAPIHandler()
	if err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	clientIP := clientAddr(cfg.TrustedProxies)
	apps := cfg.Apps
	if apps == nil {
		apps = notify.NewApps(time.Minute) // never connected: never used
	}
	auth := newAuthenticator(cfg.DB, cfg.BootstrapAdminToken, cfg.AuthFailureLimit, cfg.Metrics, clientIP, apps)
	dev := newDeviceAuth(cfg.DB, auth, now)
	hub := cfg.Hub
	if hub == nil {
		hub = notify.NewHub(1) // nothing connected: every lookup reads the database
	}
	h := &handlers{db: cfg.DB, ready: cfg.Ready, allowHTTPWebhooks: cfg.AllowHTTPLoopbackWebhooks,
		publicURL: cfg.PublicURL, now: now, auth: auth, dev: dev, hub: hub, metrics: cfg.Metrics}

	r := chi.NewRouter()
	r.Use(requestID(cfg.Logger), observe(cfg.Metrics, clientIP), recoverer, checkQuery)
	r.NotFound(notFound)
	r.MethodNotAllowed(methodNotAllowed(r))

	r.Get("/healthz", h.healthz)
	r.Get("/readyz", h.readyz)
	r.Get("/openapi.json", openAPI)
	if cfg.ServeMetrics {
		r.Method(http.MethodGet, "/metrics", MetricsHandler(cfg.Metrics))
	}

	// Auth is applied in groups (after routing) rather than on sub-routers,
	// so that metrics and logs of refused calls carry their full route.
	r.Route("/v1/admin", func(r chi.Router) {
		r = r.With(auth.require(account.KindAdmin))
		r.Get("/tenants", h.listTenants)
		r.Post("/tenants", h.createTenant)
		r.Get("/tenants/{tenant}", h.getTenant)
		r.Get("/tenants/{tenant}/policy", h.getPolicy)
		r.Patch("/tenants/{tenant}/policy", h.patchPolicy)

		r.Get("/applications", h.listApplications)
		r.Post("/applications", h.createApplication)
		r.Get("/applications/{id}", h.getApplication)
		r.Patch("/applications/{id}", h.patchApplication)
		r.Delete("/applications/{id}", h.deleteApplication)
		r.Post("/applications/{id}/rotate-secret", h.rotateApplicationSecret)

		r.Get("/users", h.listUsers)
		r.Post("/users", h.createUser)
		r.Get("/users/{user}", h.getUser)
		r.Post("/users/{user}/lock", h.lockUser)
		r.Post("/users/{user}/unlock", h.unlockUser)
		r.Get("/users/{user}/devices", h.adminUserDevices)
		r.Post("/users/{user}/enrollments", h.adminCreateEnrollment)
		r.Get("/enrollments/{id}", h.getEnrollment)
		r.Get("/enrollments/{id}/qr.png", h.qr("png"))
		r.Get("/enrollments/{id}/qr.svg", h.qr("svg"))
		r.Post("/devices/{device_id}/revoke", h.adminRevokeDevice)
		r.Get("/challenges/{id}", h.adminChallenge)
		r.Get("/challenges/{id}/webhooks", h.adminChallengeWebhooks)
		r.Get("/challenges/{id}/timeline", h.adminChallengeTimeline)

		r.Get("/tokens", h.listTokens)
		r.Post("/tokens", h.createToken)
		r.Delete("/tokens/{id}", h.revokeToken)

		r.Get("/audit", h.listAudit)
		r.Get("/audit/verify", h.verifyAudit)
	})

	r.Route("/v1", func(r chi.Router) {
		r.Group(func(r chi.Router) {
			r.Use(auth.require(account.KindApplication))
			r.Get("/users/{user}/devices", h.rpUserDevices)
			r.Delete("/users/{user}/devices/{device_id}", h.rpRemoveDevice)
			r.Post("/enrollments", h.rpCreateEnrollment)
			r.Get("/enrollments/{id}", h.getEnrollment)
			r.Get("/enrollments/{id}/qr.png", h.qr("png"))
			r.Get("/enrollments/{id}/qr.svg", h.qr("svg"))
			r.Post("/challenges", h.createChallenge)
			r.Get("/challenges/{id}", h.getChallenge)
			r.Post("/challenges/{id}/cancel", h.cancelChallenge)
			r.Post("/users/{user}/verify-code", h.verifyCode)
		})
		r.Post("/device/enroll", h.enroll)
		r.Get("/device", dev.device(h.deviceSelf))
		r.Put("/device/push-token", dev.device(h.setPushToken))
		r.Delete("/device", dev.device(h.removeSelf))
		r.Get("/device/challenges", dev.direct(h.deviceChallenges))
		r.Get("/device/challenges/{id}", dev.direct(h.deviceChallenge))
		r.Post("/device/challenges/{id}/response", dev.direct(h.respond))
	})
	return r, nil
}

// MetricsHandler serves the registry in Prometheus's format.
func MetricsHandler(m *metrics.Metrics) http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}

func (h *handlers) healthz(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (h *handlers) readyz(w http.ResponseWriter, r *http.Request) {
	if err := h.ready(r.Context()); err != nil {
		loggerFrom(r.Context()).Warn("not ready", "error", err.Error())
		writeError(w, r, errs.E(errs.Unavailable, "not ready"))
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
