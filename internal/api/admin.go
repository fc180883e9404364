package api

import (
	"net/http"
	"regexp"
	"strconv"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/policy"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// tenant resolves the tenant an admin call acts on. An empty slug means the
// caller's own tenant (a global admin's is "default"). A tenant admin asking
// for another tenant gets 404, exactly as for a tenant that does not exist,
// so slugs do not leak.
func (h *handlers) tenant(r *http.Request, slug string) (account.Tenant, error) {
	p := principal(r)
	if slug == "" {
		slug = account.DefaultTenant
		if !p.Global() {
			slug = p.TenantSlug
		}
	}
	if account.ValidateSlug("tenant", slug) != nil || (!p.Global() && slug != p.TenantSlug) {
		return account.Tenant{}, errs.NotFoundf("tenant %q not found", slug)
	}
	return h.db.TenantBySlug(r.Context(), slug)
}

// scope is the tenant filter for lookups by id: none for a global admin.
func scope(p account.Principal) string {
	if p.Global() {
		return ""
	}
	return p.TenantID
}

func requireGlobal(r *http.Request) error {
	if !principal(r).Global() {
		return errs.E(errs.Forbidden, "only a global admin can do this")
	}
	return nil
}

// ---- tenants ----

func (h *handlers) listTenants(w http.ResponseWriter, r *http.Request) {
	if err := requireGlobal(r); err != nil {
		writeError(w, r, err)
		return
	}
	ts, err := h.db.Tenants(r.Context())
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]wire.Tenant, len(ts))
	for i, t := range ts {
		out[i] = tenantOut(t)
	}
	writeJSON(w, http.StatusOK, map[string]any{"tenants": out})
}

func (h *handlers) createTenant(w http.ResponseWriter, r *http.Request) {
	if err := requireGlobal(r); err != nil {
		writeError(w, r, err)
		return
	}
	var in struct {
		Slug string `json:"slug"`
		Name string `json:"name"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	if in.Name == "" {
		in.Name = in.Slug
	}
	if err := firstErr(account.ValidateSlug("slug", in.Slug), account.ValidateName("name", in.Name, 200)); err != nil {
		writeError(w, r, err)
		return
	}
	t, err := h.db.CreateTenant(r.Context(), principal(r).Actor(), in.Slug, in.Name)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, tenantOut(t))
}

func (h *handlers) getTenant(w http.ResponseWriter, r *http.Request) {
	t, err := h.tenant(r, pathParam(r, "tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tenantOut(t))
}

func (h *handlers) getPolicy(w http.ResponseWriter, r *http.Request) {
	t, err := h.tenant(r, pathParam(r, "tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	p, err := h.db.Policy(r.Context(), t.ID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

func (h *handlers) patchPolicy(w http.ResponseWriter, r *http.Request) {
	t, err := h.tenant(r, pathParam(r, "tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	var patch policy.Patch
	if err := decodeJSON(w, r, &patch, false); err != nil {
		writeError(w, r, err)
		return
	}
	p, err := h.db.UpdatePolicy(r.Context(), principal(r).Actor(), t.ID, patch)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, p)
}

// ---- applications ----

func (h *handlers) listApplications(w http.ResponseWriter, r *http.Request) {
	tenantID := ""
	if slug := r.URL.Query().Get("tenant"); slug != "" || !principal(r).Global() {
		t, err := h.tenant(r, slug)
		if err != nil {
			writeError(w, r, err)
			return
		}
		tenantID = t.ID
	}
	apps, err := h.db.Applications(r.Context(), tenantID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]wire.Application, len(apps))
	for i, a := range apps {
		out[i] = applicationOut(a)
	}
	writeJSON(w, http.StatusOK, map[string]any{"applications": out})
}

func (h *handlers) createApplication(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name           string `json:"name"`
		Tenant         string `json:"tenant"`
		WebhookURL     string `json:"webhook_url"`
		Duo            bool   `json:"duo"`
		NumberMatching string `json:"number_matching"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	if err := firstErr(
		account.ValidateName("name", in.Name, 100),
		optional(in.WebhookURL, func() error {
			return account.ValidateWebhookURL("webhook_url", in.WebhookURL, h.allowHTTPWebhooks)
		}),
		optional(in.NumberMatching, func() error { return account.ValidateNumberMatching("number_matching", in.NumberMatching) }),
	); err != nil {
		writeError(w, r, err)
		return
	}
	t, err := h.tenant(r, in.Tenant)
	if err != nil {
		writeError(w, r, err)
		return
	}
	app, sec, err := h.db.CreateApplication(r.Context(), principal(r).Actor(), t.ID, account.NewApplication{
		Name: in.Name, WebhookURL: in.WebhookURL, Duo: in.Duo, NumberMatching: in.NumberMatching})
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := applicationOut(app)
	out.Secret, out.DuoSKey = sec.Secret.Reveal(), sec.DuoSKey
	if sec.WebhookSecret != nil {
		out.WebhookSecret = sec.WebhookSecret.Reveal()
	}
	writeJSON(w, http.StatusCreated, out)
}

func (h *handlers) getApplication(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "application")
	if err != nil {
		writeError(w, r, err)
		return
	}
	app, err := h.db.Application(r.Context(), scope(principal(r)), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, applicationOut(app))
}

func (h *handlers) patchApplication(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "application")
	if err != nil {
		writeError(w, r, err)
		return
	}
	var in struct {
		Name           *string `json:"name"`
		NumberMatching *string `json:"number_matching"`
		WebhookURL     *string `json:"webhook_url"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	var checks []error
	if in.Name != nil {
		checks = append(checks, account.ValidateName("name", *in.Name, 100))
	}
	if in.NumberMatching != nil {
		checks = append(checks, account.ValidateNumberMatching("number_matching", *in.NumberMatching))
	}
	if in.WebhookURL != nil && *in.WebhookURL != "" {
		checks = append(checks, account.ValidateWebhookURL("webhook_url", *in.WebhookURL, h.allowHTTPWebhooks))
	}
	if err := firstErr(checks...); err != nil {
		writeError(w, r, err)
		return
	}
	app, secret, err := h.db.UpdateApplication(r.Context(), principal(r).Actor(), scope(principal(r)), id,
		account.ApplicationPatch{Name: in.Name, NumberMatching: in.NumberMatching, WebhookURL: in.WebhookURL})
	h.auth.apps.Invalidate(id) // other instances hear it by NOTIFY
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := applicationOut(app)
	if secret != nil {
		out.WebhookSecret = secret.Reveal()
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handlers) deleteApplication(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "application")
	if err != nil {
		writeError(w, r, err)
		return
	}
	err = h.db.DeleteApplication(r.Context(), principal(r).Actor(), scope(principal(r)), id)
	h.auth.apps.Invalidate(id) // other instances hear it by NOTIFY
	if err != nil {
		writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *handlers) rotateApplicationSecret(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "application")
	if err != nil {
		writeError(w, r, err)
		return
	}
	if err := decodeJSON(w, r, &struct{}{}, true); err != nil {
		writeError(w, r, err)
		return
	}
	app, secret, err := h.db.RotateApplicationSecret(r.Context(), principal(r).Actor(), scope(principal(r)), id)
	h.auth.apps.Invalidate(id) // other instances hear it by NOTIFY
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := applicationOut(app)
	out.Secret = secret.Reveal()
	writeJSON(w, http.StatusOK, out)
}

// ---- users ----

func (h *handlers) listUsers(w http.ResponseWriter, r *http.Request) {
	t, err := h.tenant(r, r.URL.Query().Get("tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	limit, err := queryInt(r, "limit", 100, 1, 1000)
	if err != nil {
		writeError(w, r, err)
		return
	}
	after, err := decodeCursor("u", r.URL.Query().Get("cursor"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	users, more, err := h.db.Users(r.Context(), t.ID, after, limit)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := wire.UsersPage{Users: make([]wire.User, len(users))}
	for i, u := range users {
		out.Users[i] = userOut(u, t.Slug)
	}
	if more {
		out.NextCursor = encodeCursor("u", users[len(users)-1].Name)
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handlers) createUser(w http.ResponseWriter, r *http.Request) {
	var in struct {
		User   string `json:"user"`
		Tenant string `json:"tenant"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	if err := account.ValidateUserName("user", in.User); err != nil {
		writeError(w, r, err)
		return
	}
	t, err := h.tenant(r, in.Tenant)
	if err != nil {
		writeError(w, r, err)
		return
	}
	u, err := h.db.CreateUser(r.Context(), principal(r).Actor(), t.ID, in.User)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, userOut(u, t.Slug))
}

// pathUser resolves the {user} of a path within the ?tenant= of the query.
func (h *handlers) pathUser(r *http.Request) (account.Tenant, account.User, error) {
	t, err := h.tenant(r, r.URL.Query().Get("tenant"))
	if err != nil {
		return t, account.User{}, err
	}
	name := pathParam(r, "user")
	if account.ValidateUserName("user", name) != nil {
		return t, account.User{}, errs.NotFoundf("user not found")
	}
	u, err := h.db.UserByName(r.Context(), t.ID, name)
	return t, u, err
}

func (h *handlers) getUser(w http.ResponseWriter, r *http.Request) {
	t, u, err := h.pathUser(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(u, t.Slug))
}

func (h *handlers) lockUser(w http.ResponseWriter, r *http.Request)   { h.setLock(w, r, true) }
func (h *handlers) unlockUser(w http.ResponseWriter, r *http.Request) { h.setLock(w, r, false) }

func (h *handlers) setLock(w http.ResponseWriter, r *http.Request, lock bool) {
	if err := decodeJSON(w, r, &struct{}{}, true); err != nil {
		writeError(w, r, err)
		return
	}
	t, u, err := h.pathUser(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	u, err = h.db.SetUserLock(r.Context(), principal(r).Actor(), t.ID, u.Name, lock)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, userOut(u, t.Slug))
}

func (h *handlers) adminUserDevices(w http.ResponseWriter, r *http.Request) {
	t, u, err := h.pathUser(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	h.writeDevices(w, r, t.ID, u.ID)
}

func (h *handlers) writeDevices(w http.ResponseWriter, r *http.Request, tenantID, userID string) {
	ds, err := h.db.DevicesOfUser(r.Context(), tenantID, userID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]wire.Device, len(ds))
	for i, d := range ds {
		out[i] = deviceOut(d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// ---- admin tokens ----

func (h *handlers) listTokens(w http.ResponseWriter, r *http.Request) {
	ks, err := h.db.AdminTokens(r.Context(), scope(principal(r)))
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := make([]wire.AdminToken, len(ks))
	for i, k := range ks {
		out[i] = tokenOut(k)
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": out})
}

func (h *handlers) createToken(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name   string `json:"name"`
		Tenant string `json:"tenant"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	if err := account.ValidateName("name", in.Name, 100); err != nil {
		writeError(w, r, err)
		return
	}
	p := principal(r)
	// A global admin mints a global token unless it names a tenant; a tenant
	// admin mints tokens of its own tenant only.
	tenantID := ""
	if in.Tenant != "" || !p.Global() {
		t, err := h.tenant(r, in.Tenant)
		if err != nil {
			writeError(w, r, err)
			return
		}
		tenantID = t.ID
	}
	k, secret, err := h.db.CreateAdminToken(r.Context(), p.Actor(), in.Name, tenantID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := tokenOut(k)
	out.Token = secret.Reveal()
	writeJSON(w, http.StatusCreated, out)
}

func (h *handlers) revokeToken(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "id"), "admin token")
	if err != nil {
		writeError(w, r, err)
		return
	}
	k, err := h.db.RevokeAdminToken(r.Context(), principal(r).Actor(), scope(principal(r)), id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, tokenOut(k))
}

// ---- audit ----

func (h *handlers) listAudit(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	t, err := h.tenant(r, q.Get("tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	f := postgres.AuditFilter{TenantID: t.ID, Type: q.Get("type")}
	if f.Type != "" && (len(f.Type) > 64 || !auditTypeRE.MatchString(f.Type)) {
		writeError(w, r, errs.Invalid("type", "type must be an event type such as user.locked"))
		return
	}
	if f.Limit, err = queryInt(r, "limit", 100, 1, 1000); err != nil {
		writeError(w, r, err)
		return
	}
	if f.Since, err = queryTime(r, "since"); err != nil {
		writeError(w, r, err)
		return
	}
	if f.Until, err = queryTime(r, "until"); err != nil {
		writeError(w, r, err)
		return
	}
	if f.Before, err = decodeIDCursor("a", q.Get("cursor")); err != nil {
		writeError(w, r, err)
		return
	}
	if name := q.Get("user"); name != "" {
		if account.ValidateUserName("user", name) != nil {
			writeError(w, r, errs.NotFoundf("user not found"))
			return
		}
		u, err := h.db.UserByName(r.Context(), t.ID, name)
		if err != nil {
			writeError(w, r, err)
			return
		}
		f.UserID = u.ID
	}
	events, more, err := h.db.AuditEvents(r.Context(), f)
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := wire.AuditPage{Events: make([]wire.AuditEvent, len(events))}
	for i, e := range events {
		out.Events[i] = auditOut(e)
	}
	if more {
		out.NextCursor = encodeCursor("a", strconv.FormatInt(events[len(events)-1].ID, 10))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *handlers) verifyAudit(w http.ResponseWriter, r *http.Request) {
	t, err := h.tenant(r, r.URL.Query().Get("tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	v, err := h.db.VerifyAudit(r.Context(), t.ID)
	if err != nil {
		writeError(w, r, err)
		return
	}
	loggerFrom(r.Context()).Info("audit chain verified", "tenant", t.Slug, "valid", v.Broken == nil,
		"head_seq", v.HeadSeq, "head_hash", audit.Hex(v.HeadHash))
	out := wire.AuditVerification{Tenant: t.Slug, Valid: v.Broken == nil, Events: v.Events,
		Unsealed: v.Unsealed, HeadSeq: v.HeadSeq, HeadHash: audit.Hex(v.HeadHash)}
	if b := v.Broken; b != nil {
		out.FirstBroken = &wire.AuditBreak{Seq: b.Seq, EventID: b.EventID, Reason: b.Reason}
	}
	writeJSON(w, http.StatusOK, out)
}

// auditTypeRE is the shape of event types (the schema's CHECK).
var auditTypeRE = regexp.MustCompile(`^[a-z_]+\.[a-z_]+$`)

// ---- relying party ----

func (h *handlers) rpUserDevices(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	name := pathParam(r, "user")
	if account.ValidateUserName("user", name) != nil {
		writeError(w, r, errs.NotFoundf("user not found"))
		return
	}
	u, err := h.db.UserByName(r.Context(), p.TenantID, name)
	if err != nil {
		writeError(w, r, err)
		return
	}
	h.writeDevices(w, r, p.TenantID, u.ID)
}

// ---- helpers ----

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func optional(v string, check func() error) error {
	if v == "" {
		return nil
	}
	return check()
}
