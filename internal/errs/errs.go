// Package errs defines the domain errors of the service: a stable code that
// clients may rely on, a message that is safe to show them, and optionally the
// request field at fault. The codes know nothing of transport; internal/api maps
// each one to an HTTP status in a single table.
package errs

import (
	"errors"
	"fmt"
	"time"
)

// Code is a stable, snake_case error code. Codes are part of the wire contract
// and never change meaning.
type Code string

// Codes shared by every package. Domain packages may define their own codes;
// each one must also be listed in internal/api's status table and in the
// OpenAPI document (tests check both).
const (
	Internal             Code = "internal"
	InvalidJSON          Code = "invalid_json"
	InvalidRequest       Code = "invalid_request"
	RequestTooLarge      Code = "request_too_large"
	UnsupportedMediaType Code = "unsupported_media_type"
	Unauthorized         Code = "unauthorized"
	Forbidden            Code = "forbidden"
	NotFound             Code = "not_found"
	MethodNotAllowed     Code = "method_not_allowed"
	Conflict             Code = "conflict"
	RateLimited          Code = "rate_limited"
	Unavailable          Code = "unavailable"
	InvalidPolicy        Code = "invalid_policy"

	EnrollmentNotFound Code = "enrollment_not_found"
	EnrollmentUsed     Code = "enrollment_used"
	EnrollmentExpired  Code = "enrollment_expired"
	DeviceLimit        Code = "device_limit_reached"
	InvalidJWS         Code = "invalid_jws"
	DeviceRevoked      Code = "device_revoked"
)

// Error is a domain error. Message is shown to the client as is, so it must
// never carry a secret, a token or sign-in context.
type Error struct {
	Code    Code
	Message string
	// Field names the request field at fault, when there is one.
	Field string
	// RetryAfter, when set, tells the client when to try again.
	RetryAfter time.Duration
	// Err is the underlying cause, kept for logs; never shown to clients.
	Err error
}

func (e *Error) Error() string {
	msg := string(e.Code) + ": " + e.Message
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, &Error{Code: X}) true for any error of code X, so
// callers can test for a category without caring about the message.
func (e *Error) Is(target error) bool {
	var t *Error
	if !errors.As(target, &t) {
		return false
	}
	return t.Code == e.Code && t.Message == "" && t.Field == ""
}

// E builds an error with a code and a formatted, client-safe message.
func E(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Field builds an error about one request field.
func Field(code Code, field, format string, args ...any) *Error {
	return &Error{Code: code, Field: field, Message: fmt.Sprintf(format, args...)}
}

// Kind returns a bare error of the code, for errors.Is comparisons.
func Kind(code Code) error { return &Error{Code: code} }

// CodeOf returns the code of err, or Internal when err is not a domain error.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return Internal
}

// Common sentinel categories.
var (
	ErrNotFound     = Kind(NotFound)
	ErrConflict     = Kind(Conflict)
	ErrUnauthorized = Kind(Unauthorized)
	ErrForbidden    = Kind(Forbidden)
)

// NotFoundf reports a missing resource. The message never says whether the
// resource exists in another tenant.
func NotFoundf(format string, args ...any) *Error { return E(NotFound, format, args...) }

// Invalid reports a bad request field.
func Invalid(field, format string, args ...any) *Error {
	return Field(InvalidRequest, field, format, args...)
}
