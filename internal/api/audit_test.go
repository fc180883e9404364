package api_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/apitest"
)

type auditPage struct {
	Events []struct {
		ID     int64
		Seq    *int64
		Type   string
		UserID string `json:"user_id"`
		Actor  struct{ Type, ID string }
		Data   map[string]any
		Sealed bool
		Hash   string
	}
	NextCursor string `json:"next_cursor"`
}

func TestAuditLog(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	tokenID, token := createToken(t, e, "ops", "")
	alice := createUser(t, e, token, "", "alice")
	createUser(t, e, token, "", "bob")
	want(t, e.JSON(t, "POST", "/v1/admin/users/alice/lock", token, nil), http.StatusOK, "")
	want(t, e.JSON(t, "PATCH", "/v1/admin/tenants/default/policy", token, map[string]any{"max_devices": 2}), http.StatusOK, "")
	createApp(t, e, token, map[string]any{"name": "VPN"})

	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit", e.Bootstrap, nil).Decode(t, &page)
	var types []string
	for _, ev := range page.Events {
		types = append(types, ev.Type)
	}
	wantTypes := "application.created,policy.updated,user.locked,user.created,user.created,admin_token.created"
	if strings.Join(types, ",") != wantTypes {
		t.Fatalf("events %v, want %s", types, wantTypes)
	}
	// Who did it is recorded, and what changed.
	if a := page.Events[2].Actor; a.Type != "admin" || a.ID != tokenID {
		t.Fatalf("actor %+v", a)
	}
	if page.Events[5].Actor.ID != "bootstrap" {
		t.Fatalf("token creation actor %+v", page.Events[5].Actor)
	}
	changes := page.Events[1].Data["changes"].(map[string]any)["max_devices"].(map[string]any)
	if changes["from"] != float64(5) || changes["to"] != float64(2) {
		t.Fatalf("policy change %v", changes)
	}
	if strings.Contains(fmt.Sprint(page.Events), "pmfa_") {
		t.Fatal("a secret is in the audit log")
	}

	// Filters.
	e.JSON(t, "GET", "/v1/admin/audit?user=alice", e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 2 || page.Events[0].UserID != alice["id"] {
		t.Fatalf("user filter: %+v", page.Events)
	}
	e.JSON(t, "GET", "/v1/admin/audit?type=user.created", e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 2 {
		t.Fatalf("type filter: %d", len(page.Events))
	}
	future := url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	e.JSON(t, "GET", "/v1/admin/audit?since="+future, e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 0 {
		t.Fatalf("since filter: %d", len(page.Events))
	}
	e.JSON(t, "GET", "/v1/admin/audit?until="+future, e.Bootstrap, nil).Decode(t, &page)
	if len(page.Events) != 6 {
		t.Fatalf("until filter: %d", len(page.Events))
	}

	// Paging visits every event once, newest first.
	var ids []int64
	cursor := ""
	for {
		page = auditPage{} // a reused value would keep the previous next_cursor
		e.JSON(t, "GET", "/v1/admin/audit?limit=4&cursor="+cursor, e.Bootstrap, nil).Decode(t, &page)
		for _, ev := range page.Events {
			ids = append(ids, ev.ID)
		}
		if page.NextCursor == "" {
			break
		}
		cursor = page.NextCursor
	}
	if len(ids) != 6 {
		t.Fatalf("paged %d events", len(ids))
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] >= ids[i-1] {
			t.Fatalf("not newest first: %v", ids)
		}
	}
}

// TestAuditSealedBySealer checks the running server's sealer chains events
// within seconds, that verification passes, and that the head is exported as
// a log line and a metric.
func TestAuditSealedBySealer(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	for i := range 5 {
		createUser(t, e, e.Bootstrap, "", fmt.Sprintf("u%d", i))
	}
	var v struct {
		Valid    bool
		Events   int64
		Unsealed int64
		HeadSeq  int64  `json:"head_seq"`
		HeadHash string `json:"head_hash"`
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := e.JSON(t, "GET", "/v1/admin/audit/verify", e.Bootstrap, nil)
		want(t, r, http.StatusOK, "")
		r.Decode(t, &v)
		if v.Unsealed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events still unsealed after 20 s: %+v", v)
		}
		time.Sleep(100 * time.Millisecond) // waiting on the real sealer, not a timing assertion
	}
	if !v.Valid || v.Events != 5 || v.HeadSeq != 5 || len(v.HeadHash) != 64 {
		t.Fatalf("verify %+v", v)
	}
	var page auditPage
	e.JSON(t, "GET", "/v1/admin/audit", e.Bootstrap, nil).Decode(t, &page)
	if !page.Events[0].Sealed || *page.Events[0].Seq != 5 || page.Events[0].Hash != v.HeadHash {
		t.Fatalf("newest event %+v, head %s", page.Events[0], v.HeadHash)
	}
	// The head is exported outside the database: metric and log line.
	tenantID := e.JSON(t, "GET", "/v1/admin/tenants/default", e.Bootstrap, nil).Map(t)["id"].(string)
	deadline = time.Now().Add(10 * time.Second)
	for {
		m := string(e.JSON(t, "GET", "/metrics", "", nil).Body)
		if strings.Contains(m, `pushmfa_audit_chain_head_info{hash="`+v.HeadHash+`",tenant_id="`+tenantID+`"} 1`) &&
			strings.Contains(m, `pushmfa_audit_chain_head_seq{tenant_id="`+tenantID+`"} 5`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("head not in metrics")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(e.Logs.String(), `"head_hash":"`+v.HeadHash+`"`) {
		t.Fatal("head not logged")
	}
}
