package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/pushmfa/pushmfa/internal/errs"
)

// maxBody bounds every JSON request body; nothing the API takes comes near it.
const maxBody = 64 << 10

// readBody reads at most maxBody bytes of the request body.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return nil, errs.E(errs.RequestTooLarge, "request body exceeds %d bytes", maxBody)
	}
	if err != nil {
		return nil, errs.E(errs.InvalidJSON, "request body could not be read")
	}
	return body, nil
}

// decodeJSON reads a JSON object into dst strictly: the media type must be
// JSON, the body valid UTF-8, every field known, nothing after the object.
// When optional is set an empty body leaves dst untouched.
func decodeJSON(w http.ResponseWriter, r *http.Request, dst any, optional bool) error {
	body, err := readBody(w, r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return errs.E(errs.InvalidJSON, "request body is empty; send a JSON object")
	}
	if err := checkMediaType(r, "application/json"); err != nil {
		return err
	}
	return unmarshalStrict(body, dst)
}

// checkMediaType insists on the given media type, with utf-8 as the only
// charset allowed.
func checkMediaType(r *http.Request, want string) error {
	mt, params, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != want {
		return errs.E(errs.UnsupportedMediaType, "Content-Type must be %s", want)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return errs.E(errs.UnsupportedMediaType, "the only charset accepted is utf-8")
	}
	return nil
}

// unmarshalStrict decodes one JSON object, translating the decoder's errors
// into stable codes that name the field at fault.
func unmarshalStrict(body []byte, dst any) error {
	// encoding/json silently replaces invalid UTF-8 with U+FFFD; refuse it.
	if !utf8.Valid(body) {
		return errs.E(errs.InvalidJSON, "request body is not valid UTF-8")
	}
	// Every body the API takes is an object; json.Decode would take "null"
	// as a silent no-op.
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errs.E(errs.InvalidRequest, "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errs.E(errs.InvalidJSON, "unexpected data after the JSON object")
	}
	return nil
}

func jsonError(err error) error {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syntax):
		return errs.E(errs.InvalidJSON, "malformed JSON at byte %d", syntax.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errs.E(errs.InvalidJSON, "truncated JSON")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return errs.E(errs.InvalidRequest, "request body must be a JSON object")
		}
		return errs.Invalid(typ.Field, "%s must be %s", typ.Field, jsonType(typ.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		field, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
		return errs.Invalid(field, "unknown field %q", field)
	}
	var e *errs.Error
	if errors.As(err, &e) {
		return e
	}
	return errs.E(errs.InvalidJSON, "request body is not valid JSON")
}

func jsonType(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "int", "int64", "int32", "uint", "uint64", "float64":
		return "a number"
	case "slice":
		return "an array"
	case "map", "struct":
		return "an object"
	}
	return "of another type"
}

// pathParam returns a decoded path parameter. chi matches on the raw path
// when the request had escapes (so "a%2Fb" stays one segment); decode it then.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// queryInt reads an integer query parameter within bounds.
func queryInt(r *http.Request, name string, def, lo, hi int) (int, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, errs.Invalid(name, "%s must be an integer between %d and %d", name, lo, hi)
	}
	return n, nil
}

// queryTime reads an RFC 3339 time query parameter; zero when absent.
func queryTime(r *http.Request, name string) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errs.Invalid(name, "%s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", name)
	}
	return t, nil
}
