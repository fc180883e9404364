package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/errs"
)

func TestRecovererAnswers500AndLogs(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, nil))
	h := requestID(logger)(recoverer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		panic("boom")
	})))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/x", nil))
	if rec.Code != 500 {
		t.Fatalf("status %d", rec.Code)
	}
	var body struct {
		Error struct{ Code, Message string }
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || body.Error.Code != "internal" {
		t.Fatalf("body %s", rec.Body)
	}
	if strings.Contains(body.Error.Message, "boom") {
		t.Fatal("panic value leaked to the client")
	}
	id := rec.Header().Get("X-Request-Id")
	if !strings.Contains(logs.String(), `"panic":"boom"`) || !strings.Contains(logs.String(), id) {
		t.Fatalf("panic not logged with request id %s: %s", id, logs.String())
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	var seen string
	h := requestID(slog.New(slog.DiscardHandler))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = w.Header().Get("X-Request-Id")
	}))
	for _, tc := range []struct{ in, want string }{
		{"abc-123", "abc-123"},
		{"", ""},
		{"has space", ""},
		{strings.Repeat("a", 65), ""},
		{"<script>", ""},
	} {
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Request-Id", tc.in)
		h.ServeHTTP(httptest.NewRecorder(), req)
		if tc.want != "" && seen != tc.want {
			t.Errorf("%q: id %q", tc.in, seen)
		}
		if tc.want == "" && (seen == tc.in || len(seen) != 16) {
			t.Errorf("%q: kept or bad generated id %q", tc.in, seen)
		}
	}
}

func TestWriteErrorMapsUnknownTo500(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{errors.New("database exploded: password=hunter2"), 500, "internal"},
		{errs.NotFoundf("x"), 404, "not_found"},
		{&errs.Error{Code: "made_up", Message: "x"}, 500, "internal"},
		{&errs.Error{Code: errs.RateLimited, Message: "slow down", RetryAfter: 1500e6}, 429, "rate_limited"},
	} {
		rec := httptest.NewRecorder()
		writeError(rec, httptest.NewRequest("GET", "/", nil), tc.err)
		var body struct {
			Error struct{ Code, Message string }
		}
		_ = json.Unmarshal(rec.Body.Bytes(), &body)
		if rec.Code != tc.status || body.Error.Code != tc.code {
			t.Errorf("%v: %d %s", tc.err, rec.Code, rec.Body)
		}
		if strings.Contains(rec.Body.String(), "hunter2") {
			t.Error("internal error text reached the client")
		}
		if tc.status == 429 && rec.Header().Get("Retry-After") != "2" {
			t.Errorf("Retry-After %q, want 2 (rounded up)", rec.Header().Get("Retry-After"))
		}
	}
}
