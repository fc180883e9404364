// Package client is a Go client of the service's admin and relying-party
// HTTP API, as mfactl and tests use it. It speaks only HTTP: it never touches
// the database.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pushmfa/pushmfa/internal/wire"
)

// Client calls the API with one bearer credential.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// New returns a client of the server at baseURL.
func New(baseURL, token string) *Client {
	return &Client{BaseURL: strings.TrimSuffix(baseURL, "/"), Token: token, HTTP: &http.Client{Timeout: 90 * time.Second}}
}

// Error is an error reply of the API.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("HTTP %d", e.Status)
	}
	return fmt.Sprintf("%s (HTTP %d): %s", e.Code, e.Status, e.Message)
}

// IsCode reports whether err is an API error with the code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// Do sends a request with an optional JSON body and the client's bearer
// token, and decodes a JSON reply into out (when not nil).
func (c *Client) Do(ctx context.Context, method, path string, in, out any) error {
	var body []byte
	contentType := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, contentType = b, "application/json"
	}
	auth := ""
	if c.Token != "" {
		auth = "Bearer " + c.Token
	}
	return c.Send(ctx, Request{Method: method, Path: path, ContentType: contentType, Body: body, Authorization: auth}, out)
}

// Request is one call with any credential and body.
type Request struct {
	Method, Path  string
	ContentType   string
	Body          []byte
	Authorization string
}

// Send makes a request and decodes a JSON reply into out (when not nil). An
// error reply becomes an *Error.
func (c *Client) Send(ctx context.Context, r Request, out any) error {
	var body io.Reader
	if r.Body != nil {
		body = bytes.NewReader(r.Body)
	}
	req, err := http.NewRequestWithContext(ctx, r.Method, c.BaseURL+r.Path, body)
	if err != nil {
		return err
	}
	if r.ContentType != "" {
		req.Header.Set("Content-Type", r.ContentType)
	}
	if r.Authorization != "" {
		req.Header.Set("Authorization", r.Authorization)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", r.Method, r.Path, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read reply: %w", r.Method, r.Path, err)
	}
	if resp.StatusCode >= 400 {
		var e wire.Error
		_ = json.Unmarshal(raw, &e)
		return &Error{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message, Field: e.Error.Field}
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if b, ok := out.(*[]byte); ok {
		*b = raw
		return nil
	}
	if err := json.Unmarshal(raw, out); err != nil {
		return fmt.Errorf("%s %s: decode reply: %w", r.Method, r.Path, err)
	}
	return nil
}

// Ready reports whether the server answers /readyz with 200.
func (c *Client) Ready(ctx context.Context) error {
	return c.Do(ctx, http.MethodGet, "/readyz", nil, nil)
}

// ---- wire types (shared with the server) ----

// The API's JSON shapes.
type (
	Tenant            = wire.Tenant
	Application       = wire.Application
	User              = wire.User
	UsersPage         = wire.UsersPage
	Device            = wire.Device
	AdminToken        = wire.AdminToken
	AuditEvent        = wire.AuditEvent
	AuditPage         = wire.AuditPage
	AuditVerification = wire.AuditVerification
)

// NewApplication is the body of an application's creation.
type NewApplication struct {
	Name           string `json:"name"`
	Tenant         string `json:"tenant,omitempty"`
	WebhookURL     string `json:"webhook_url,omitempty"`
	Duo            bool   `json:"duo,omitempty"`
	NumberMatching string `json:"number_matching,omitempty"`
}

// ApplicationPatch changes an application; nil fields stay.
type ApplicationPatch struct {
	Name           *string `json:"name,omitempty"`
	NumberMatching *string `json:"number_matching,omitempty"`
	WebhookURL     *string `json:"webhook_url,omitempty"`
}

// ---- calls ----

func tenantQuery(tenant string) string {
	if tenant == "" {
		return ""
	}
	return "?tenant=" + url.QueryEscape(tenant)
}

// CreateTenant creates a tenant.
func (c *Client) CreateTenant(ctx context.Context, slug, name string) (Tenant, error) {
	var t Tenant
	err := c.Do(ctx, http.MethodPost, "/v1/admin/tenants", map[string]string{"slug": slug, "name": name}, &t)
	return t, err
}

// Tenants lists every tenant.
func (c *Client) Tenants(ctx context.Context) ([]Tenant, error) {
	var out struct{ Tenants []Tenant }
	err := c.Do(ctx, http.MethodGet, "/v1/admin/tenants", nil, &out)
	return out.Tenants, err
}

// Policy reads a tenant's policy as a JSON object.
func (c *Client) Policy(ctx context.Context, tenant string) (map[string]any, error) {
	var out map[string]any
	err := c.Do(ctx, http.MethodGet, "/v1/admin/tenants/"+url.PathEscape(tenant)+"/policy", nil, &out)
	return out, err
}

// PatchPolicy changes some of a tenant's policy fields.
func (c *Client) PatchPolicy(ctx context.Context, tenant string, patch map[string]json.RawMessage) (map[string]any, error) {
	var out map[string]any
	err := c.Do(ctx, http.MethodPatch, "/v1/admin/tenants/"+url.PathEscape(tenant)+"/policy", patch, &out)
	return out, err
}

// CreateApplication creates an application; the reply holds its secrets.
func (c *Client) CreateApplication(ctx context.Context, in NewApplication) (Application, error) {
	var a Application
	err := c.Do(ctx, http.MethodPost, "/v1/admin/applications", in, &a)
	return a, err
}

// Applications lists live applications ("" = every tenant a global admin sees).
func (c *Client) Applications(ctx context.Context, tenant string) ([]Application, error) {
	var out struct{ Applications []Application }
	err := c.Do(ctx, http.MethodGet, "/v1/admin/applications"+tenantQuery(tenant), nil, &out)
	return out.Applications, err
}

// Application reads one application.
func (c *Client) Application(ctx context.Context, id string) (Application, error) {
	var a Application
	err := c.Do(ctx, http.MethodGet, "/v1/admin/applications/"+url.PathEscape(id), nil, &a)
	return a, err
}

// UpdateApplication changes an application.
func (c *Client) UpdateApplication(ctx context.Context, id string, p ApplicationPatch) (Application, error) {
	var a Application
	err := c.Do(ctx, http.MethodPatch, "/v1/admin/applications/"+url.PathEscape(id), p, &a)
	return a, err
}

// RotateSecret replaces an application's secret.
func (c *Client) RotateSecret(ctx context.Context, id string) (Application, error) {
	var a Application
	err := c.Do(ctx, http.MethodPost, "/v1/admin/applications/"+url.PathEscape(id)+"/rotate-secret", nil, &a)
	return a, err
}

// DeleteApplication deletes an application.
func (c *Client) DeleteApplication(ctx context.Context, id string) error {
	return c.Do(ctx, http.MethodDelete, "/v1/admin/applications/"+url.PathEscape(id), nil, nil)
}

// CreateUser creates a user.
func (c *Client) CreateUser(ctx context.Context, tenant, name string) (User, error) {
	var u User
	err := c.Do(ctx, http.MethodPost, "/v1/admin/users", map[string]string{"user": name, "tenant": tenant}, &u)
	return u, err
}

// Users lists one page of a tenant's users.
func (c *Client) Users(ctx context.Context, tenant string, limit int, cursor string) (UsersPage, error) {
	q := url.Values{}
	if tenant != "" {
		q.Set("tenant", tenant)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cursor != "" {
		q.Set("cursor", cursor)
	}
	var page UsersPage
	err := c.Do(ctx, http.MethodGet, "/v1/admin/users?"+q.Encode(), nil, &page)
	return page, err
}

func userPath(name, suffix, tenant string) string {
	return "/v1/admin/users/" + url.PathEscape(name) + suffix + tenantQuery(tenant)
}

// User reads a user.
func (c *Client) User(ctx context.Context, tenant, name string) (User, error) {
	var u User
	err := c.Do(ctx, http.MethodGet, userPath(name, "", tenant), nil, &u)
	return u, err
}

// SetLocked locks or unlocks a user.
func (c *Client) SetLocked(ctx context.Context, tenant, name string, locked bool) (User, error) {
	action := "/unlock"
	if locked {
		action = "/lock"
	}
	var u User
	err := c.Do(ctx, http.MethodPost, userPath(name, action, tenant), nil, &u)
	return u, err
}

// UserDevices lists a user's devices (admin view).
func (c *Client) UserDevices(ctx context.Context, tenant, name string) ([]Device, error) {
	var out struct{ Devices []Device }
	err := c.Do(ctx, http.MethodGet, userPath(name, "/devices", tenant), nil, &out)
	return out.Devices, err
}

// RPUserDevices lists a user's devices with an application secret.
func (c *Client) RPUserDevices(ctx context.Context, name string) ([]Device, error) {
	var out struct{ Devices []Device }
	err := c.Do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(name)+"/devices", nil, &out)
	return out.Devices, err
}

// CreateToken mints an admin token (global when tenant is "" and the caller
// is a global admin).
func (c *Client) CreateToken(ctx context.Context, name, tenant string) (AdminToken, error) {
	var k AdminToken
	err := c.Do(ctx, http.MethodPost, "/v1/admin/tokens", map[string]string{"name": name, "tenant": tenant}, &k)
	return k, err
}

// Tokens lists admin tokens.
func (c *Client) Tokens(ctx context.Context) ([]AdminToken, error) {
	var out struct{ Tokens []AdminToken }
	err := c.Do(ctx, http.MethodGet, "/v1/admin/tokens", nil, &out)
	return out.Tokens, err
}

// RevokeToken revokes an admin token.
func (c *Client) RevokeToken(ctx context.Context, id string) (AdminToken, error) {
	var k AdminToken
	err := c.Do(ctx, http.MethodDelete, "/v1/admin/tokens/"+url.PathEscape(id), nil, &k)
	return k, err
}

// AuditQuery selects audit events.
type AuditQuery struct {
	Tenant, User, Type string
	Since, Until       time.Time
	Limit              int
	Cursor             string
}

// Audit lists audit events, newest first.
func (c *Client) Audit(ctx context.Context, aq AuditQuery) (AuditPage, error) {
	q := url.Values{}
	for k, v := range map[string]string{"tenant": aq.Tenant, "user": aq.User, "type": aq.Type, "cursor": aq.Cursor} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !aq.Since.IsZero() {
		q.Set("since", aq.Since.UTC().Format(time.RFC3339Nano))
	}
	if !aq.Until.IsZero() {
		q.Set("until", aq.Until.UTC().Format(time.RFC3339Nano))
	}
	if aq.Limit > 0 {
		q.Set("limit", strconv.Itoa(aq.Limit))
	}
	var page AuditPage
	err := c.Do(ctx, http.MethodGet, "/v1/admin/audit?"+q.Encode(), nil, &page)
	return page, err
}

// VerifyAudit checks a tenant's audit chain.
func (c *Client) VerifyAudit(ctx context.Context, tenant string) (AuditVerification, error) {
	var v AuditVerification
	err := c.Do(ctx, http.MethodGet, "/v1/admin/audit/verify"+tenantQuery(tenant), nil, &v)
	return v, err
}
