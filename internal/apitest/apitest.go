// Package apitest starts the real server on a fresh test database and talks
// to it over HTTP, checking every response of a documented endpoint against
// the OpenAPI document. Tests of the API, the CLI and end-to-end flows build
// on it.
package apitest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/pushmfa/pushmfa/internal/api"
	"github.com/pushmfa/pushmfa/internal/config"
	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/server"
)

// Env is a running server with its own database.
type Env struct {
	URL       string
	Bootstrap string
	Server    *server.Server
	DB        *pgtest.DB
	Logs      *LogBuffer
	Client    *http.Client
}

// Option changes the environment variables the server starts with.
type Option func(env map[string]string)

// WithEnv sets one configuration variable.
func WithEnv(name, value string) Option { return func(env map[string]string) { env[name] = value } }

// Start runs a server for the test and stops it at the test's end.
func Start(t testing.TB, opts ...Option) *Env {
	t.Helper()
	db := pgtest.New(t)
	return StartOn(t, db, opts...)
}

// Replicas runs two servers on one fresh test database with one master
// key, as two replicas of the service.
func Replicas(t testing.TB, opts ...Option) (a, b *Env) {
	t.Helper()
	db := pgtest.New(t)
	opts = append([]Option{WithEnv("MASTER_KEY", randomB64(32))}, opts...)
	return StartOn(t, db, opts...), StartOn(t, db, opts...)
}

// StartOn runs a server on an existing test database (two servers on one
// database act as two replicas).
func StartOn(t testing.TB, db *pgtest.DB, opts ...Option) *Env {
	t.Helper()
	env := map[string]string{
		"DATABASE_URL":          db.URL,
		"MASTER_KEY":            randomB64(32),
		"LISTEN_ADDR":           "127.0.0.1:0",
		"BOOTSTRAP_ADMIN_TOKEN": "bootstrap-" + randomB64(32),
		"LOG_LEVEL":             "debug",
		"SHUTDOWN_TIMEOUT":      "5s",
	}
	for _, o := range opts {
		o(env)
	}
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	logs := &LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	srv, err := server.Start(ctx, cfg, logger)
	if err != nil {
		t.Fatalf("start server: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return &Env{URL: "http://" + srv.Addr(), Bootstrap: env["BOOTSTRAP_ADMIN_TOKEN"], Server: srv, DB: db, Logs: logs,
		Client: &http.Client{Timeout: 90 * time.Second}}
}

func randomB64(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// Response is a server reply, read in full.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Decode unmarshals the body.
func (r *Response) Decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r.Body, err)
	}
}

// Map decodes the body as a JSON object.
func (r *Response) Map(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.Decode(t, &m)
	return m
}

// Code returns the error code of an error reply ("" otherwise).
func (r *Response) Code() string {
	var e struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(r.Body, &e)
	return e.Error.Code
}

// Req describes a request.
type Req struct {
	Method string
	Path   string
	// Token is sent as a Bearer credential when set.
	Token string
	// Body is sent as is when a string or []byte, else marshalled to JSON.
	Body any
	// Header adds or overrides headers (Content-Type, Authorization, ...).
	Header map[string]string
}

// Do sends a request and checks the reply against the OpenAPI document.
func (e *Env) Do(t testing.TB, req Req) *Response {
	t.Helper()
	var body io.Reader
	if req.Body != nil {
		switch b := req.Body.(type) {
		case string:
			body = strings.NewReader(b)
		case []byte:
			body = bytes.NewReader(b)
		default:
			raw, err := json.Marshal(b)
			if err != nil {
				t.Fatal(err)
			}
			body = bytes.NewReader(raw)
		}
	}
	hr, err := http.NewRequest(req.Method, e.URL+req.Path, body)
	if err != nil {
		t.Fatal(err)
	}
	if req.Body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if req.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+req.Token)
	}
	for k, v := range req.Header {
		hr.Header.Set(k, v)
	}
	resp, err := e.Client.Do(hr)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw}
	if out.Status >= 500 {
		t.Errorf("%s %s: %d %s", req.Method, req.Path, out.Status, raw)
	}
	CheckResponse(t, hr, out)
	return out
}

// JSON is a shorthand for a request with a JSON body (or none).
func (e *Env) JSON(t testing.TB, method, path, token string, body any) *Response {
	t.Helper()
	return e.Do(t, Req{Method: method, Path: path, Token: token, Body: body})
}

// HTTPClient returns a client that checks every reply against the OpenAPI
// document, for code that makes its own calls (the reference authenticator,
// mfactl).
func (e *Env) HTTPClient(t testing.TB) *http.Client {
	return &http.Client{Timeout: 90 * time.Second, Transport: checking{t: t, next: http.DefaultTransport}}
}

type checking struct {
	t    testing.TB
	next http.RoundTripper
}

func (c checking) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	if resp.StatusCode >= 500 {
		c.t.Errorf("%s %s: %d %s", req.Method, req.URL.Path, resp.StatusCode, raw)
	}
	CheckResponse(c.t, req, &Response{Status: resp.StatusCode, Header: resp.Header, Body: raw})
	return resp, nil
}

// spec is the OpenAPI document, loaded once per test process.
var spec struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

// Spec loads and validates the OpenAPI document.
func Spec(t testing.TB) (*openapi3.T, routers.Router) {
	t.Helper()
	spec.once.Do(func() {
		// Image replies are checked for status and media type only.
		for _, mt := range []string{"image/png", "image/svg+xml"} {
			openapi3filter.RegisterBodyDecoder(mt, openapi3filter.FileBodyDecoder)
		}
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(api.OpenAPIYAML)
		if err != nil {
			spec.err = fmt.Errorf("load openapi.yaml: %w", err)
			return
		}
		if err := doc.Validate(context.Background()); err != nil {
			spec.err = fmt.Errorf("openapi.yaml is not a valid OpenAPI document: %w", err)
			return
		}
		// Requests are matched under a fixed host (see CheckResponse), as the
		// test servers' ports vary.
		doc.Servers = openapi3.Servers{{URL: "http://pushmfa.test"}}
		spec.doc = doc
		spec.router, spec.err = gorillamux.NewRouter(doc)
	})
	if spec.err != nil {
		t.Fatal(spec.err)
	}
	return spec.doc, spec.router
}

// CheckResponse validates a reply against the operation the request matches
// in the OpenAPI document. A request to an undocumented path must be
// answered 404 or 405 (there are no undocumented endpoints).
func CheckResponse(t testing.TB, req *http.Request, resp *Response) {
	t.Helper()
	_, router := Spec(t)
	req = req.Clone(context.Background())
	req.URL.Scheme, req.URL.Host, req.Host = "http", "pushmfa.test", "pushmfa.test"
	route, params, err := router.FindRoute(req)
	if err != nil {
		if resp.Status != http.StatusNotFound && resp.Status != http.StatusMethodNotAllowed {
			t.Errorf("%s %s is not in the OpenAPI document but answered %d", req.Method, req.URL.Path, resp.Status)
		}
		return
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}},
		Status:  resp.Status,
		Header:  resp.Header,
		Options: &openapi3filter.Options{IncludeResponseStatus: true, MultiError: true},
	}
	in.SetBodyBytes(resp.Body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		t.Errorf("%s %s -> %d does not match the OpenAPI document: %v\nbody: %s", req.Method, req.URL.Path, resp.Status, err, resp.Body)
	}
}

// LogBuffer collects the server's log lines.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Lines returns the log lines decoded.
func (l *LogBuffer) Lines(t testing.TB) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		out = append(out, m)
	}
	return out
}

// Await waits (up to 10 s) for a log line containing every part and
// returns it.
func (l *LogBuffer) Await(t testing.TB, parts ...string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
	lines:
		for _, line := range strings.Split(l.String(), "\n") {
			for _, p := range parts {
				if !strings.Contains(line, p) {
					continue lines
				}
			}
			return line
		}
	}
	t.Fatalf("no log line with %q in 10 s", parts)
	return ""
}
