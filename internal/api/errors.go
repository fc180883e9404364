package api

import (
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"

	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/errs"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// statuses maps every domain error code to its HTTP status. This table is the
// only place a code meets a status; tests check that every code is here and
// in the OpenAPI document.
var statuses = map[errs.Code]int{
	errs.InvalidJSON:          http.StatusBadRequest,
	errs.InvalidRequest:       http.StatusBadRequest,
	errs.InvalidPolicy:        http.StatusBadRequest,
	errs.Unauthorized:         http.StatusUnauthorized,
	errs.Forbidden:            http.StatusForbidden,
	errs.NotFound:             http.StatusNotFound,
	errs.MethodNotAllowed:     http.StatusMethodNotAllowed,
	errs.Conflict:             http.StatusConflict,
	errs.RequestTooLarge:      http.StatusRequestEntityTooLarge,
	errs.UnsupportedMediaType: http.StatusUnsupportedMediaType,
	errs.RateLimited:          http.StatusTooManyRequests,
	errs.Internal:             http.StatusInternalServerError,
	errs.Unavailable:          http.StatusServiceUnavailable,
	errs.EnrollmentNotFound:   http.StatusNotFound,
	errs.EnrollmentUsed:       http.StatusConflict,
	errs.EnrollmentExpired:    http.StatusGone,
	errs.DeviceLimit:          http.StatusConflict,
	errs.InvalidJWS:           http.StatusBadRequest,
	errs.DeviceRevoked:        http.StatusUnauthorized,

	challenge.NoActiveDevice:      http.StatusConflict,
	challenge.IdempotencyMismatch: http.StatusConflict,
	challenge.UserLocked:          http.StatusLocked,
	challenge.TooManyChallenges:   http.StatusTooManyRequests,
	challenge.Resolved:            http.StatusConflict,
	challenge.Expired:             http.StatusGone,
	challenge.InvalidResponse:     http.StatusBadRequest,
	challenge.TOTPDisabled:        http.StatusConflict,
}

// Codes lists every code the API can return (for tests and documentation).
func Codes() []errs.Code {
	out := make([]errs.Code, 0, len(statuses))
	for c := range statuses {
		out = append(out, c)
	}
	return out
}

// writeError answers with err's status and stable code. Anything that is not
// a domain error becomes 500 internal with a generic message, and is logged
// with the request id so an operator can find it.
func writeError(w http.ResponseWriter, r *http.Request, err error) {
	var e *errs.Error
	status, ok := 0, false
	if errors.As(err, &e) {
		status, ok = statuses[e.Code]
	}
	log := loggerFrom(r.Context())
	if !ok {
		log.Error("request failed", "error", err.Error())
		e = &errs.Error{Code: errs.Internal, Message: "internal error; the request id identifies it in the server log"}
		status = http.StatusInternalServerError
	} else if status >= 500 {
		log.Error("request failed", "code", e.Code, "error", err.Error())
	} else {
		log.Info("request refused", "code", e.Code, "message", e.Message)
	}
	if e.RetryAfter > 0 {
		// Whole seconds, rounded up so a client never retries too early.
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="pushmfa"`)
	}
	writeJSON(w, status, wire.Error{Error: wire.ErrorDetail{Code: string(e.Code), Message: e.Message, Field: e.Field}})
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only the API's own response types reach here, and they always
		// marshal; answer sanely should one not.
		status, body = http.StatusInternalServerError, []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
