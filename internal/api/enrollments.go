package api

import (
	"net/http"

	"github.com/jackc/pgx/v5"

	"time"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/devices"
	"github.com/pushmfa/pushmfa/internal/enroll"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// Enrollment lifetimes a caller may ask for: the policy field's bounds.
const (
	minEnrollmentTTL = 60
	maxEnrollmentTTL = 604800
)

func enrollmentOut(e enroll.Enrollment, now time.Time) wire.Enrollment {
	return wire.Enrollment{ID: e.ID, State: e.EffectiveState(now), User: e.UserName, ExpiresAt: utc(e.ExpiresAt), DeviceID: e.DeviceID}
}

// createEnrollment makes an activation for user in tenant and answers with
// its code, URI and the paths of its QR images (under qrBase).
func (h *handlers) createEnrollment(w http.ResponseWriter, r *http.Request, tenantID, user string, ttlSeconds *int, qrBase string) {
	if err := account.ValidateUserName("user", user); err != nil {
		writeError(w, r, err)
		return
	}
	var ttl time.Duration
	if ttlSeconds != nil {
		if *ttlSeconds < minEnrollmentTTL || *ttlSeconds > maxEnrollmentTTL {
			writeError(w, r, errs.Invalid("ttl_seconds", "ttl_seconds must be between %d and %d", minEnrollmentTTL, maxEnrollmentTTL))
			return
		}
		ttl = time.Duration(*ttlSeconds) * time.Second
	}
	e, code, err := h.db.CreateEnrollment(r.Context(), postgres.NewEnrollment{TenantID: tenantID, UserName: user, TTL: ttl,
		By: principal(r).Actor()})
	if err != nil {
		writeError(w, r, err)
		return
	}
	out := enrollmentOut(e, h.now())
	out.Code, out.URI = code, enroll.URI(h.publicURL, code)
	out.QRPNG, out.QRSVG = qrBase+e.ID+"/qr.png", qrBase+e.ID+"/qr.svg"
	writeJSON(w, http.StatusCreated, out)
}

// rpCreateEnrollment is POST /v1/enrollments.
func (h *handlers) rpCreateEnrollment(w http.ResponseWriter, r *http.Request) {
	var in struct {
		User       string `json:"user"`
		TTLSeconds *int   `json:"ttl_seconds"`
	}
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	h.createEnrollment(w, r, principal(r).TenantID, in.User, in.TTLSeconds, "/v1/enrollments/")
}

// adminCreateEnrollment is POST /v1/admin/users/{user}/enrollments.
func (h *handlers) adminCreateEnrollment(w http.ResponseWriter, r *http.Request) {
	var in struct {
		TTLSeconds *int `json:"ttl_seconds"`
	}
	if err := decodeJSON(w, r, &in, true); err != nil {
		writeError(w, r, err)
		return
	}
	t, err := h.tenant(r, r.URL.Query().Get("tenant"))
	if err != nil {
		writeError(w, r, err)
		return
	}
	h.createEnrollment(w, r, t.ID, pathParam(r, "user"), in.TTLSeconds, "/v1/admin/enrollments/")
}

// pathEnrollment resolves the {id} of an enrollment path and the tenant the
// lookup is confined to: the application's own, or the admin's scope (any
// tenant for a global admin), so the QR paths a creation returns work with
// the same credentials as they stand.
func (h *handlers) pathEnrollment(r *http.Request) (tenantID, id string, err error) {
	p := principal(r)
	tenantID = scope(p)
	if p.Kind == account.KindApplication {
		tenantID = p.TenantID
	}
	id, err = parseID(pathParam(r, "id"), "enrollment")
	return tenantID, id, err
}

func (h *handlers) getEnrollment(w http.ResponseWriter, r *http.Request) {
	tenantID, id, err := h.pathEnrollment(r)
	if err != nil {
		writeError(w, r, err)
		return
	}
	e, err := h.db.Enrollment(r.Context(), tenantID, id)
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, enrollmentOut(e, h.now()))
}

// qr serves an enrollment's QR code while the code is pending. The image
// carries a secret: it is never cached.
func (h *handlers) qr(format string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tenantID, id, err := h.pathEnrollment(r)
		if err != nil {
			writeError(w, r, err)
			return
		}
		_, code, err := h.db.EnrollmentCode(r.Context(), tenantID, id)
		if err != nil {
			writeError(w, r, err)
			return
		}
		q, err := enroll.NewQR(enroll.URI(h.publicURL, code))
		if err != nil {
			writeError(w, r, err)
			return
		}
		var body []byte
		if format == "png" {
			if body, err = q.PNG(8); err != nil {
				writeError(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "image/png")
		} else {
			body = q.SVG()
			w.Header().Set("Content-Type", "image/svg+xml")
		}
		w.Header().Set("Cache-Control", "no-store")
		_, _ = w.Write(body)
	}
}

// rpRemoveDevice is DELETE /v1/users/{user}/devices/{device_id}: the
// relying party removes a device on its user's behalf.
func (h *handlers) rpRemoveDevice(w http.ResponseWriter, r *http.Request) {
	p := principal(r)
	name := pathParam(r, "user")
	if account.ValidateUserName("user", name) != nil {
		writeError(w, r, errs.NotFoundf("user not found"))
		return
	}
	id, err := parseID(pathParam(r, "device_id"), "device")
	if err != nil {
		writeError(w, r, err)
		return
	}
	u, err := h.db.UserByName(r.Context(), p.TenantID, name)
	if err != nil {
		writeError(w, r, err)
		return
	}
	d, err := h.db.RevokeDevice(r.Context(), postgres.Revocation{TenantID: p.TenantID, UserID: u.ID, DeviceID: id,
		Reason: devices.ReasonRemovedByUser, By: p.Actor()})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceOut(d))
}

// adminRevokeDevice is POST /v1/admin/devices/{device_id}/revoke {reason}.
func (h *handlers) adminRevokeDevice(w http.ResponseWriter, r *http.Request) {
	id, err := parseID(pathParam(r, "device_id"), "device")
	if err != nil {
		writeError(w, r, err)
		return
	}
	var in wire.Revoke
	if err := decodeJSON(w, r, &in, false); err != nil {
		writeError(w, r, err)
		return
	}
	switch in.Reason {
	case devices.ReasonLost, devices.ReasonReplaced, devices.ReasonRemovedByAdmin:
	default:
		writeError(w, r, errs.Invalid("reason", "reason must be lost, replaced or removed_by_admin"))
		return
	}
	d, err := h.db.RevokeDevice(r.Context(), postgres.Revocation{TenantID: scope(principal(r)), DeviceID: id,
		Reason: in.Reason, By: principal(r).Actor()})
	if err != nil {
		writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, deviceOut(d))
}

// deviceSelf is GET /v1/device: the device's own record, including whether
// it must register a new push token.
func (h *handlers) deviceSelf(_ http.ResponseWriter, _ *http.Request, _ pgx.Tx, d devices.Device) (int, any, error) {
	return http.StatusOK, deviceOut(d), nil
}
