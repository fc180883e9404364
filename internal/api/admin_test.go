package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/policy"
)

func TestTenants(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	r := e.JSON(t, "POST", "/v1/admin/tenants", e.Bootstrap, map[string]any{"slug": "acme", "name": "Acme Corp"})
	want(t, r, http.StatusCreated, "")
	if m := r.Map(t); m["slug"] != "acme" || m["name"] != "Acme Corp" {
		t.Fatalf("created %v", m)
	}
	want(t, e.JSON(t, "POST", "/v1/admin/tenants", e.Bootstrap, map[string]any{"slug": "acme"}), http.StatusConflict, "conflict")
	for _, slug := range []string{"", "Acme", "-x", "x-", "a_b", strings.Repeat("a", 64), "a b"} {
		r := e.JSON(t, "POST", "/v1/admin/tenants", e.Bootstrap, map[string]any{"slug": slug})
		want(t, r, http.StatusBadRequest, "invalid_request")
		if r.Map(t)["error"].(map[string]any)["field"] != "slug" {
			t.Fatalf("slug %q: error does not name the field: %s", slug, r.Body)
		}
	}

	r = e.JSON(t, "GET", "/v1/admin/tenants", e.Bootstrap, nil)
	want(t, r, http.StatusOK, "")
	var list struct{ Tenants []struct{ Slug string } }
	r.Decode(t, &list)
	if len(list.Tenants) != 2 || list.Tenants[0].Slug != "acme" || list.Tenants[1].Slug != "default" {
		t.Fatalf("tenants %+v", list)
	}
	want(t, e.JSON(t, "GET", "/v1/admin/tenants/acme", e.Bootstrap, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/v1/admin/tenants/nope", e.Bootstrap, nil), http.StatusNotFound, "not_found")

	// A tenant admin sees its own tenant only, and cannot manage tenants.
	_, acmeAdmin := createToken(t, e, "acme admin", "acme")
	want(t, e.JSON(t, "GET", "/v1/admin/tenants", acmeAdmin, nil), http.StatusForbidden, "forbidden")
	want(t, e.JSON(t, "POST", "/v1/admin/tenants", acmeAdmin, map[string]any{"slug": "evil"}), http.StatusForbidden, "forbidden")
	want(t, e.JSON(t, "GET", "/v1/admin/tenants/acme", acmeAdmin, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/v1/admin/tenants/default", acmeAdmin, nil), http.StatusNotFound, "not_found")
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	r := e.JSON(t, "GET", "/v1/admin/tenants/default/policy", e.Bootstrap, nil)
	want(t, r, http.StatusOK, "")
	var got policy.Policy
	r.Decode(t, &got)
	if got != policy.Default() {
		t.Fatalf("fresh policy %+v", got)
	}

	r = e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap,
		map[string]any{"challenge_ttl_seconds": 120, "number_matching": false, "totp_digits": 8})
	want(t, r, http.StatusOK, "")
	r.Decode(t, &got)
	wantPolicy := policy.Default()
	wantPolicy.ChallengeTTLSeconds, wantPolicy.NumberMatching, wantPolicy.TOTPDigits = 120, false, 8
	if got != wantPolicy {
		t.Fatalf("after patch %+v", got)
	}
	// It persisted.
	e.JSON(t, "GET", "/v1/admin/tenants/default/policy", e.Bootstrap, nil).Decode(t, &got)
	if got != wantPolicy {
		t.Fatalf("read back %+v", got)
	}

	bad := []struct {
		body, code, field string
	}{
		{`{"challenge_ttl_seconds": 9}`, "invalid_policy", "challenge_ttl_seconds"},
		{`{"challenge_ttl_seconds": 601}`, "invalid_policy", "challenge_ttl_seconds"},
		{`{"enrollment_ttl_seconds": 604801}`, "invalid_policy", "enrollment_ttl_seconds"},
		{`{"challenges_per_window": 0}`, "invalid_policy", "challenges_per_window"},
		{`{"challenge_window_seconds": 86401}`, "invalid_policy", "challenge_window_seconds"},
		{`{"max_pending_challenges": 1001}`, "invalid_policy", "max_pending_challenges"},
		{`{"denial_backoff_after": 0}`, "invalid_policy", "denial_backoff_after"},
		{`{"fraud_lockout_after": 101}`, "invalid_policy", "fraud_lockout_after"},
		{`{"totp_digits": 7}`, "invalid_policy", "totp_digits"},
		{`{"totp_max_attempts": 0}`, "invalid_policy", "totp_max_attempts"},
		{`{"totp_attempt_window_seconds": 29}`, "invalid_policy", "totp_attempt_window_seconds"},
		{`{"max_devices": 101}`, "invalid_policy", "max_devices"},
		{`{"max_devices": -1}`, "invalid_policy", "max_devices"},
		{`{"max_devices": 1.5}`, "invalid_policy", "max_devices"},
		{`{"max_devices": "5"}`, "invalid_policy", "max_devices"},
		{`{"max_devices": null}`, "invalid_policy", "max_devices"},
		{`{"max_devices": 99999999999999999999}`, "invalid_policy", "max_devices"},
		{`{"push_enabled": "yes"}`, "invalid_policy", "push_enabled"},
		{`{"colour": "blue"}`, "invalid_request", "colour"},
		{`[1]`, "invalid_request", ""},
		{`{"max_devices": 5`, "invalid_json", ""},
		{``, "invalid_json", ""},
	}
	for _, tc := range bad {
		r := e.Do(t, apitest.Req{Method: "PATCH", Path: "/v1/admin/tenants/default/policy", Token: e.Bootstrap, Body: tc.body,
			Header: map[string]string{"Content-Type": "application/json"}})
		want(t, r, http.StatusBadRequest, tc.code)
		var er struct {
			Error struct{ Field, Message string }
		}
		r.Decode(t, &er)
		if er.Error.Field != tc.field || (tc.field != "" && !strings.Contains(er.Error.Message, tc.field)) {
			t.Errorf("%s: error %+v does not name %q", tc.body, er.Error, tc.field)
		}
	}
	// Nothing a refused patch carried was applied.
	e.JSON(t, "GET", "/v1/admin/tenants/default/policy", e.Bootstrap, nil).Decode(t, &got)
	if got != wantPolicy {
		t.Fatalf("a refused patch changed the policy: %+v", got)
	}
	// A mixed patch with one bad field changes nothing either.
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", e.Bootstrap,
		map[string]any{"max_devices": 3, "totp_digits": 9}), http.StatusBadRequest, "invalid_policy")
	e.JSON(t, "GET", "/v1/admin/tenants/default/policy", e.Bootstrap, nil).Decode(t, &got)
	if got.MaxDevices != 5 {
		t.Fatal("half of a refused patch was applied")
	}
	want(t, e.JSON(t, "GET", "/v1/admin/tenants/nope/policy", e.Bootstrap, nil), http.StatusNotFound, "not_found")
}

func TestApplications(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("AUTH_FAILURE_LIMIT", "1000"))
	id, secret := createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN"})

	// The secret works for the relying-party API.
	createUser(t, e, e.Bootstrap, "", "alice")
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", secret, nil), http.StatusOK, "")

	// It is never shown again.
	r := e.JSON(t, "GET", "/v1/admin/applications/"+id, e.Bootstrap, nil)
	want(t, r, http.StatusOK, "")
	if strings.Contains(string(r.Body), secret) || r.Map(t)["secret"] != nil {
		t.Fatalf("secret shown again: %s", r.Body)
	}
	if m := r.Map(t); m["number_matching"] != "required" || m["duo"] != false {
		t.Fatalf("defaults: %v", m)
	}

	// Names are unique per tenant among live applications.
	want(t, e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "vpn"}), http.StatusConflict, "conflict")

	// Duo applications get ikey/skey and when_supported matching.
	r = e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "SSH", "duo": true})
	want(t, r, http.StatusCreated, "")
	duo := r.Map(t)
	if duo["number_matching"] != "when_supported" || len(duo["duo_skey"].(string)) != 40 ||
		!strings.HasPrefix(duo["duo_ikey"].(string), "DI") {
		t.Fatalf("duo app: %v", duo)
	}
	r = e.JSON(t, "GET", "/v1/admin/applications/"+duo["id"].(string), e.Bootstrap, nil)
	if strings.Contains(string(r.Body), duo["duo_skey"].(string)) {
		t.Fatal("duo skey shown again")
	}

	// Webhooks: https only; the secret is shown once.
	r = e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "Web", "webhook_url": "https://rp.example/hook"})
	want(t, r, http.StatusCreated, "")
	web := r.Map(t)
	if !strings.HasPrefix(web["webhook_secret"].(string), "pmfa_whs_") || web["webhook_url"] != "https://rp.example/hook" {
		t.Fatalf("webhook app: %v", web)
	}
	for _, u := range []string{"http://rp.example/hook", "ftp://x/y", "https://user:pw@rp.example/", "/relative",
		"https://rp.example/#frag", "http://127.0.0.1/hook", "https://" + strings.Repeat("a", 2048)} {
		r := e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, map[string]any{"name": "bad hook", "webhook_url": u})
		want(t, r, http.StatusBadRequest, "invalid_request")
	}
	for _, body := range []map[string]any{
		{"name": ""}, {"name": "   "}, {"name": strings.Repeat("x", 101)}, {"name": "a\x00b"},
		{"name": "ok", "number_matching": "sometimes"}, {"name": "ok", "tenant": "Nope!"},
	} {
		r := e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap, body)
		if r.Status != http.StatusBadRequest && r.Status != http.StatusNotFound {
			t.Fatalf("%v: %d %s", body, r.Status, r.Body)
		}
	}

	// List.
	var list struct{ Applications []struct{ ID, Name string } }
	e.JSON(t, "GET", "/v1/admin/applications", e.Bootstrap, nil).Decode(t, &list)
	if len(list.Applications) != 3 {
		t.Fatalf("list: %+v", list)
	}

	// Patch: name, matching, webhook added (secret shown once) and removed.
	r = e.JSON(t, "PATCH", "/v1/admin/applications/"+id, e.Bootstrap, map[string]any{"name": "VPN 2", "number_matching": "off",
		"webhook_url": "https://rp.example/new"})
	want(t, r, http.StatusOK, "")
	if m := r.Map(t); m["name"] != "VPN 2" || m["number_matching"] != "off" || m["webhook_secret"] == nil {
		t.Fatalf("patched: %v", m)
	}
	r = e.JSON(t, "PATCH", "/v1/admin/applications/"+id, e.Bootstrap, map[string]any{"webhook_url": ""})
	if m := r.Map(t); m["webhook_url"] != nil {
		t.Fatalf("webhook not removed: %v", m)
	}
	want(t, e.JSON(t, "PATCH", "/v1/admin/applications/"+id, e.Bootstrap, map[string]any{"name": "SSH"}), http.StatusConflict, "conflict")
	want(t, e.JSON(t, "PATCH", "/v1/admin/applications/"+id, e.Bootstrap, map[string]any{"number_matching": 1}), http.StatusBadRequest, "invalid_request")

	// Rotate: the old secret stops working at once, the new one works.
	r = e.JSON(t, "POST", "/v1/admin/applications/"+id+"/rotate-secret", e.Bootstrap, nil)
	want(t, r, http.StatusOK, "")
	newSecret := r.Map(t)["secret"].(string)
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", secret, nil), http.StatusUnauthorized, "unauthorized")
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", newSecret, nil), http.StatusOK, "")

	// Delete: the secret stops working; the application is gone; again is 404.
	want(t, e.JSON(t, "DELETE", "/v1/admin/applications/"+id, e.Bootstrap, nil), http.StatusNoContent, "")
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", newSecret, nil), http.StatusUnauthorized, "unauthorized")
	want(t, e.JSON(t, "GET", "/v1/admin/applications/"+id, e.Bootstrap, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "DELETE", "/v1/admin/applications/"+id, e.Bootstrap, nil), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "POST", "/v1/admin/applications/"+id+"/rotate-secret", e.Bootstrap, nil), http.StatusNotFound, "not_found")
	// Its name is free again.
	createApp(t, e, e.Bootstrap, map[string]any{"name": "VPN 2"})

	for _, bad := range []string{"nope", "00000000-0000-0000-0000-000000000000", "{" + id + "}", id + "x"} {
		want(t, e.JSON(t, "GET", "/v1/admin/applications/"+bad, e.Bootstrap, nil), http.StatusNotFound, "not_found")
	}
}

func TestWebhookHTTPLoopbackFlag(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t, apitest.WithEnv("WEBHOOK_ALLOW_HTTP_LOOPBACK", "true"))
	want(t, e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap,
		map[string]any{"name": "local", "webhook_url": "http://127.0.0.1:9000/hook"}), http.StatusCreated, "")
	want(t, e.JSON(t, "POST", "/v1/admin/applications", e.Bootstrap,
		map[string]any{"name": "remote", "webhook_url": "http://rp.example/hook"}), http.StatusBadRequest, "invalid_request")
}

func TestUsers(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	u := createUser(t, e, e.Bootstrap, "", "alice@example.com")
	if u["user"] != "alice@example.com" || u["locked"] != false || u["tenant"] != "default" {
		t.Fatalf("user %v", u)
	}
	want(t, e.JSON(t, "POST", "/v1/admin/users", e.Bootstrap, map[string]any{"user": "alice@example.com"}), http.StatusConflict, "conflict")
	for _, name := range []string{"", " alice", "alice ", "a\tb", "a\nb", strings.Repeat("x", 257), "a\u0085b"} {
		r := e.JSON(t, "POST", "/v1/admin/users", e.Bootstrap, map[string]any{"user": name})
		want(t, r, http.StatusBadRequest, "invalid_request")
	}
	want(t, e.JSON(t, "POST", "/v1/admin/users", e.Bootstrap, map[string]any{"user": 42}), http.StatusBadRequest, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/admin/users", e.Bootstrap, map[string]any{"user": "x", "tenant": "nope"}), http.StatusNotFound, "not_found")

	// Names that need escaping in a path.
	for _, name := range []string{"dom\\user", "a/b", "ü ñ 100%", "x?y#z"} {
		createUser(t, e, e.Bootstrap, "", name)
		r := e.JSON(t, "GET", "/v1/admin/users/"+url.PathEscape(name), e.Bootstrap, nil)
		want(t, r, http.StatusOK, "")
		if r.Map(t)["user"] != name {
			t.Fatalf("%q read back as %s", name, r.Body)
		}
	}
	want(t, e.JSON(t, "GET", "/v1/admin/users/bob", e.Bootstrap, nil), http.StatusNotFound, "not_found")

	// Lock and unlock, each idempotent.
	path := "/v1/admin/users/" + url.PathEscape("alice@example.com")
	for range 2 {
		r := e.JSON(t, "POST", path+"/lock", e.Bootstrap, nil)
		want(t, r, http.StatusOK, "")
		if m := r.Map(t); m["locked"] != true || m["lock_reason"] != "admin" || m["locked_at"] == nil {
			t.Fatalf("locked: %v", m)
		}
	}
	for range 2 {
		r := e.JSON(t, "POST", path+"/unlock", e.Bootstrap, map[string]any{})
		want(t, r, http.StatusOK, "")
		if m := r.Map(t); m["locked"] != false {
			t.Fatalf("unlocked: %v", m)
		}
	}
	want(t, e.JSON(t, "POST", path+"/lock", e.Bootstrap, map[string]any{"reason": "x"}), http.StatusBadRequest, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/admin/users/nobody/lock", e.Bootstrap, nil), http.StatusNotFound, "not_found")
	r := e.JSON(t, "GET", "/v1/admin/audit?type=user.locked", e.Bootstrap, nil)
	if n := len(r.Map(t)["events"].([]any)); n != 1 {
		t.Fatalf("%d user.locked events for an idempotent lock, want 1", n)
	}

	want(t, e.JSON(t, "GET", path+"/devices", e.Bootstrap, nil), http.StatusOK, "")
}

func TestUserPaging(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	var names []string
	for i := range 7 {
		n := fmt.Sprintf("user%02d", i)
		names = append(names, n)
		createUser(t, e, e.Bootstrap, "", n)
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		r := e.JSON(t, "GET", "/v1/admin/users?limit=3&cursor="+url.QueryEscape(cursor), e.Bootstrap, nil)
		want(t, r, http.StatusOK, "")
		var page struct {
			Users      []struct{ User string }
			NextCursor string `json:"next_cursor"`
		}
		r.Decode(t, &page)
		for _, u := range page.Users {
			got = append(got, u.User)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Fatalf("paged %v, want %v", got, names)
	}
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "cursor=%%%", "cursor=bm9wZQ"} {
		want(t, e.JSON(t, "GET", "/v1/admin/users?"+q, e.Bootstrap, nil), http.StatusBadRequest, "invalid_request")
	}
}

func TestAdminTokens(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	createTenant(t, e, "acme")
	globalID, global := createToken(t, e, "ops", "")
	_, acme := createToken(t, e, "acme help desk", "acme")

	// A minted global token works like the bootstrap token.
	want(t, e.JSON(t, "GET", "/v1/admin/tenants", global, nil), http.StatusOK, "")
	// A tenant token acts within its tenant by default.
	r := e.JSON(t, "POST", "/v1/admin/users", acme, map[string]any{"user": "carol"})
	want(t, r, http.StatusCreated, "")
	if r.Map(t)["tenant"] != "acme" {
		t.Fatalf("tenant admin created a user in %s", r.Body)
	}
	// It mints tokens of its own tenant only.
	r = e.JSON(t, "POST", "/v1/admin/tokens", acme, map[string]any{"name": "second"})
	want(t, r, http.StatusCreated, "")
	if m := r.Map(t); m["global"] != false || m["tenant"] != "acme" {
		t.Fatalf("tenant admin minted %v", m)
	}
	want(t, e.JSON(t, "POST", "/v1/admin/tokens", acme, map[string]any{"name": "x", "tenant": "default"}), http.StatusNotFound, "not_found")
	// It lists its tenant's tokens only, and cannot revoke a global one.
	var list struct{ Tokens []struct{ ID, Name string } }
	e.JSON(t, "GET", "/v1/admin/tokens", acme, nil).Decode(t, &list)
	if len(list.Tokens) != 2 {
		t.Fatalf("tenant admin sees %+v", list)
	}
	want(t, e.JSON(t, "DELETE", "/v1/admin/tokens/"+globalID, acme, nil), http.StatusNotFound, "not_found")
	// Secrets are never listed.
	r = e.JSON(t, "GET", "/v1/admin/tokens", e.Bootstrap, nil)
	if strings.Contains(string(r.Body), global) || strings.Contains(string(r.Body), acme) {
		t.Fatal("token secret listed")
	}
	// Revocation takes effect at once and is idempotent.
	r = e.JSON(t, "DELETE", "/v1/admin/tokens/"+globalID, e.Bootstrap, nil)
	want(t, r, http.StatusOK, "")
	if r.Map(t)["revoked_at"] == nil {
		t.Fatal("not revoked")
	}
	want(t, e.JSON(t, "DELETE", "/v1/admin/tokens/"+globalID, e.Bootstrap, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/v1/admin/tenants", global, nil), http.StatusUnauthorized, "unauthorized")
	want(t, e.JSON(t, "POST", "/v1/admin/tokens", e.Bootstrap, map[string]any{"name": ""}), http.StatusBadRequest, "invalid_request")
	want(t, e.JSON(t, "POST", "/v1/admin/tokens", e.Bootstrap, map[string]any{"name": "x", "tenant": "nope"}), http.StatusNotFound, "not_found")
	want(t, e.JSON(t, "DELETE", "/v1/admin/tokens/not-a-uuid", e.Bootstrap, nil), http.StatusNotFound, "not_found")
}

// TestTenantIsolation checks that no call of one tenant's credentials reads
// or changes another tenant's rows, and that the answer is 404, exactly as
// for rows that do not exist.
func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	createTenant(t, e, "acme")
	createTenant(t, e, "globex")
	_, acmeAdmin := createToken(t, e, "acme", "acme")
	globexTokenID, globexAdmin := createToken(t, e, "globex", "globex")
	acmeApp, acmeSecret := createApp(t, e, acmeAdmin, map[string]any{"name": "Acme VPN"})
	globexApp, _ := createApp(t, e, globexAdmin, map[string]any{"name": "Globex VPN"})
	createUser(t, e, globexAdmin, "", "gina")
	createUser(t, e, acmeAdmin, "", "alice")

	cases := []struct {
		name, method, path, token string
		body                      any
	}{
		{"app of another tenant", "GET", "/v1/admin/applications/" + globexApp, acmeAdmin, nil},
		{"patch app of another tenant", "PATCH", "/v1/admin/applications/" + globexApp, acmeAdmin, map[string]any{"name": "pwned"}},
		{"rotate app of another tenant", "POST", "/v1/admin/applications/" + globexApp + "/rotate-secret", acmeAdmin, nil},
		{"delete app of another tenant", "DELETE", "/v1/admin/applications/" + globexApp, acmeAdmin, nil},
		{"list apps of another tenant", "GET", "/v1/admin/applications?tenant=globex", acmeAdmin, nil},
		{"create app in another tenant", "POST", "/v1/admin/applications", acmeAdmin, map[string]any{"name": "x", "tenant": "globex"}},
		{"user of another tenant", "GET", "/v1/admin/users/gina?tenant=globex", acmeAdmin, nil},
		{"user of another tenant in own", "GET", "/v1/admin/users/gina", acmeAdmin, nil},
		{"lock user of another tenant", "POST", "/v1/admin/users/gina/lock?tenant=globex", acmeAdmin, nil},
		{"devices of another tenant's user", "GET", "/v1/admin/users/gina/devices?tenant=globex", acmeAdmin, nil},
		{"list users of another tenant", "GET", "/v1/admin/users?tenant=globex", acmeAdmin, nil},
		{"create user in another tenant", "POST", "/v1/admin/users", acmeAdmin, map[string]any{"user": "x", "tenant": "globex"}},
		{"policy of another tenant", "GET", "/v1/admin/tenants/globex/policy", acmeAdmin, nil},
		{"patch policy of another tenant", "PATCH", "/v1/admin/tenants/globex/policy", acmeAdmin, map[string]any{"max_devices": 1}},
		{"audit of another tenant", "GET", "/v1/admin/audit?tenant=globex", acmeAdmin, nil},
		{"verify audit of another tenant", "GET", "/v1/admin/audit/verify?tenant=globex", acmeAdmin, nil},
		{"revoke token of another tenant", "DELETE", "/v1/admin/tokens/" + globexTokenID, acmeAdmin, nil},
		{"rp: user of another tenant", "GET", "/v1/users/gina/devices", acmeSecret, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.JSON(t, tc.method, tc.path, tc.token, tc.body)
			want(t, r, http.StatusNotFound, "not_found")
		})
	}
	// Nothing changed on the other side.
	r := e.JSON(t, "GET", "/v1/admin/applications/"+globexApp, globexAdmin, nil)
	if r.Map(t)["name"] != "Globex VPN" {
		t.Fatalf("globex app changed: %s", r.Body)
	}
	var p policy.Policy
	e.JSON(t, "GET", "/v1/admin/tenants/globex/policy", globexAdmin, nil).Decode(t, &p)
	if p.MaxDevices != 5 {
		t.Fatal("globex policy changed")
	}
	want(t, e.JSON(t, "GET", "/v1/admin/applications/"+acmeApp, acmeAdmin, nil), http.StatusOK, "")
	want(t, e.JSON(t, "GET", "/v1/users/alice/devices", acmeSecret, nil), http.StatusOK, "")
	// The global admin sees both.
	var apps struct{ Applications []json.RawMessage }
	e.JSON(t, "GET", "/v1/admin/applications", e.Bootstrap, nil).Decode(t, &apps)
	if len(apps.Applications) != 2 {
		t.Fatalf("global admin sees %d apps", len(apps.Applications))
	}
}
