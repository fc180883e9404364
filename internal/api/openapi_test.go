package api_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/pushmfa/pushmfa/internal/api"
	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/metrics"
)

func TestOpenAPICoversEveryRoute(t *testing.T) {
	t.Parallel()
	doc, _ := apitest.Spec(t)
	h, err := api.New(api.Config{Logger: slog.New(slog.DiscardHandler), Metrics: metrics.New(), ServeMetrics: true})
	if err != nil {
		t.Fatal(err)
	}
	var routes []string
	err = chi.Walk(h.(chi.Routes), func(method, route string, _ http.Handler, _ ...func(http.Handler) http.Handler) error {
		routes = append(routes, method+" "+strings.TrimSuffix(route, "/"))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var documented []string
	for path, item := range doc.Paths.Map() {
		for method := range item.Operations() {
			documented = append(documented, method+" "+path)
		}
	}
	sort.Strings(routes)
	sort.Strings(documented)
	if strings.Join(routes, "\n") != strings.Join(documented, "\n") {
		t.Fatalf("routes and OpenAPI paths differ\nroutes:\n%s\n\ndocumented:\n%s",
			strings.Join(routes, "\n"), strings.Join(documented, "\n"))
	}
}

func TestOpenAPIListsEveryErrorCode(t *testing.T) {
	t.Parallel()
	doc, _ := apitest.Spec(t)
	var enum []string
	for _, v := range doc.Components.Schemas["ErrorCode"].Value.Enum {
		enum = append(enum, v.(string))
	}
	var codes []string
	for _, c := range api.Codes() {
		codes = append(codes, string(c))
	}
	sort.Strings(enum)
	sort.Strings(codes)
	if !slices.Equal(enum, codes) {
		t.Fatalf("ErrorCode enum %v\n!= status table %v", enum, codes)
	}
	desc := doc.Components.Schemas["ErrorCode"].Value.Description
	for _, c := range codes {
		if !strings.Contains(desc, "`"+c+"`") {
			t.Errorf("code %s is not described", c)
		}
	}
}

func TestOpenAPIServed(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	r := e.JSON(t, "GET", "/openapi.json", "", nil)
	want(t, r, http.StatusOK, "")
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	r.Decode(t, &doc)
	if doc.OpenAPI != "3.1.0" || doc.Paths["/v1/admin/tenants/{tenant}/policy"]["patch"] == nil {
		t.Fatalf("served document: openapi=%q, %d paths", doc.OpenAPI, len(doc.Paths))
	}
}

// recorder is a testing.TB that records failures instead of failing, to
// check that the response checker really catches a mismatch.
type recorder struct {
	testing.TB
	failures []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.failures = append(r.failures, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

func TestResponseCheckerCatchesMismatches(t *testing.T) {
	t.Parallel()
	req := httptest.NewRequest("GET", "http://x/v1/admin/tenants/default", nil)
	good := `{"id":"0b6c1d2e-8a64-4bd2-9c5e-1f0a2b3c4d5e","slug":"default","name":"Default","created_at":"2026-11-24T10:00:00Z"}`
	cases := []struct {
		name   string
		status int
		body   string
		fails  bool
	}{
		{"valid", 200, good, false},
		{"extra field", 200, strings.TrimSuffix(good, "}") + `,"secret":"x"}`, true},
		{"missing field", 200, `{"id":"0b6c1d2e-8a64-4bd2-9c5e-1f0a2b3c4d5e","slug":"default"}`, true},
		{"wrong type", 200, strings.Replace(good, `"name":"Default"`, `"name":5`, 1), true},
		{"bad slug", 200, strings.Replace(good, `"slug":"default"`, `"slug":"NOT OK"`, 1), true},
		{"valid error", 404, `{"error":{"code":"not_found","message":"x"}}`, false},
		{"unknown error code", 404, `{"error":{"code":"nope","message":"x"}}`, true},
		{"error without message", 404, `{"error":{"code":"not_found"}}`, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := &recorder{TB: t}
			apitest.CheckResponse(rec, req, &apitest.Response{Status: tc.status,
				Header: http.Header{"Content-Type": {"application/json"}}, Body: []byte(tc.body)})
			if got := len(rec.failures) > 0; got != tc.fails {
				t.Fatalf("failed = %v, want %v: %v", got, tc.fails, rec.failures)
			}
		})
	}
}

func TestErrorCodesAreSnakeCase(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(`^[a-z]+(_[a-z]+)*$`)
	for _, c := range api.Codes() {
		if !re.MatchString(string(c)) {
			t.Errorf("code %q is not snake_case", c)
		}
	}
	b, _ := json.Marshal(api.Codes())
	if len(b) == 0 {
		t.Fatal("no codes")
	}
}
