package postgres_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pushmfa/pushmfa/internal/account"
	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/postgres"
)

var admin = audit.Actor{Type: audit.ActorAdmin, ID: "test"}

func defaultTenant(t *testing.T, db *postgres.DB) string {
	t.Helper()
	ten, err := db.TenantBySlug(context.Background(), account.DefaultTenant)
	if err != nil {
		t.Fatal(err)
	}
	return ten.ID
}

// TestAuditSealingUnderConcurrency writes events from many goroutines while
// several sealers run at once, then checks that the chain is one unbroken
// sequence holding every event exactly once.
func TestAuditSealingUnderConcurrency(t *testing.T) {
	t.Parallel()
	db, pool := setup(t)
	ctx := context.Background()
	tenant := defaultTenant(t, db)

	const writers, perWriter = 6, 15
	var wg sync.WaitGroup
	errc := make(chan error, writers*perWriter+100)
	stop := make(chan struct{})
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWriter {
				if _, err := db.CreateUser(ctx, admin, tenant, fmt.Sprintf("w%d-u%d", w, i)); err != nil {
					errc <- err
				}
			}
		}()
	}
	var sealers sync.WaitGroup
	for range 3 {
		sealers.Add(1)
		go func() {
			defer sealers.Done()
			for {
				if _, _, err := db.SealAudit(ctx, tenant); err != nil {
					errc <- err
					return
				}
				select {
				case <-stop:
					return
				default:
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	sealers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	n, head, err := db.SealAudit(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("final seal sealed %d", n)

	v, err := db.VerifyAudit(ctx, tenant)
	if err != nil {
		t.Fatal(err)
	}
	total := int64(writers * perWriter)
	if v.Broken != nil || v.Events != total || v.Unsealed != 0 || v.HeadSeq != total {
		t.Fatalf("verification %+v, want %d events intact", v, total)
	}
	if audit.Hex(v.HeadHash) != audit.Hex(head.Hash) || head.Seq != total {
		t.Fatalf("head %d %x vs verified %d %x", head.Seq, head.Hash, v.HeadSeq, v.HeadHash)
	}
	var distinct int64
	if err := pool.QueryRow(ctx, `SELECT count(DISTINCT seq) FROM audit_events WHERE tenant_id = $1`, tenant).Scan(&distinct); err != nil || distinct != total {
		t.Fatalf("distinct seqs %d, %v", distinct, err)
	}
}

func TestAuditIsAppendOnly(t *testing.T) {
	t.Parallel()
	db, pool := setup(t)
	ctx := context.Background()
	tenant := defaultTenant(t, db)
	if _, err := db.CreateUser(ctx, admin, tenant, "alice"); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := pool.QueryRow(ctx, `SELECT id FROM audit_events WHERE tenant_id = $1`, tenant).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// Content cannot change, sealed or not; rows cannot go.
	for _, sql := range []string{
		`UPDATE audit_events SET type = 'user.deleted' WHERE id = $1`,
		`UPDATE audit_events SET data = '{"x":1}' WHERE id = $1`,
		`DELETE FROM audit_events WHERE id = $1`,
	} {
		if _, err := pool.Exec(ctx, sql, id); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v", sql, err)
		}
	}
	if _, _, err := db.SealAudit(ctx, tenant); err != nil {
		t.Fatal(err)
	}
	// A sealed event cannot be re-sealed either.
	if _, err := pool.Exec(ctx, `UPDATE audit_events SET hash = prev_hash WHERE id = $1`, id); err == nil {
		t.Error("a sealed event was re-hashed")
	}
}

// tamper changes rows as an attacker with superuser rights could, bypassing
// the append-only trigger.
func tamper(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx) //nolint:errcheck
	if _, err := tx.Exec(ctx, `SET LOCAL session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, sql, args...); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestAuditVerifyNamesFirstBrokenLink(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		sql       string
		wantSeq   int64
		wantInMsg string
	}{
		{"content edited", `UPDATE audit_events SET data = '{"user":"mallory"}' WHERE tenant_id = $1 AND seq = 3`, 3, "content"},
		{"type edited", `UPDATE audit_events SET type = 'user.unlocked' WHERE tenant_id = $1 AND seq = 2`, 2, "content"},
		{"event deleted", `DELETE FROM audit_events WHERE tenant_id = $1 AND seq = 4`, 5, "gap"},
		{"hash replaced", `UPDATE audit_events SET hash = decode(repeat('ab', 32), 'hex') WHERE tenant_id = $1 AND seq = 1`, 1, "content"},
		{"time edited", `UPDATE audit_events SET occurred_at = occurred_at - interval '1 day' WHERE tenant_id = $1 AND seq = 5`, 5, "content"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, pool := setup(t)
			ctx := context.Background()
			tenant := defaultTenant(t, db)
			for i := range 6 {
				if _, err := db.CreateUser(ctx, admin, tenant, fmt.Sprintf("u%d", i)); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := db.SealAudit(ctx, tenant); err != nil {
				t.Fatal(err)
			}
			v, err := db.VerifyAudit(ctx, tenant)
			if err != nil || v.Broken != nil || v.Events != 6 {
				t.Fatalf("before tampering: %+v %v", v, err)
			}
			tamper(t, pool, tc.sql, tenant)
			v, err = db.VerifyAudit(ctx, tenant)
			if err != nil {
				t.Fatal(err)
			}
			if v.Broken == nil || v.Broken.Seq != tc.wantSeq || !strings.Contains(v.Broken.Reason, tc.wantInMsg) {
				t.Fatalf("broken = %+v, want seq %d (%s)", v.Broken, tc.wantSeq, tc.wantInMsg)
			}
		})
	}
}

func TestAuditChainsArePerTenant(t *testing.T) {
	t.Parallel()
	db, _ := setup(t)
	ctx := context.Background()
	def := defaultTenant(t, db)
	acme, err := db.CreateTenant(ctx, admin, "acme", "Acme")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := db.CreateUser(ctx, admin, acme.ID, fmt.Sprintf("a%d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := db.CreateUser(ctx, admin, def, "d"); err != nil {
		t.Fatal(err)
	}
	for _, ten := range []string{def, acme.ID} {
		if _, _, err := db.SealAudit(ctx, ten); err != nil {
			t.Fatal(err)
		}
	}
	va, _ := db.VerifyAudit(ctx, acme.ID)
	vd, _ := db.VerifyAudit(ctx, def)
	// acme: tenant.created + 3 users; default: 1 user.
	if va.Events != 4 || vd.Events != 1 || va.Broken != nil || vd.Broken != nil {
		t.Fatalf("acme %+v default %+v", va, vd)
	}
	heads, err := db.AuditHeads(ctx)
	if err != nil || len(heads) != 2 {
		t.Fatalf("heads %+v %v", heads, err)
	}
}
