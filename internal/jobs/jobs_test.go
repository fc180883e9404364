package jobs_test

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/audit"
	"github.com/pushmfa/pushmfa/internal/jobs"
	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var jobsActor = audit.Actor{Type: audit.ActorSystem, ID: "test"}

// TestPeriodicJobsRun starts the real River client on a test database and
// checks that its periodic jobs do their work: expired JWT ids are pruned
// (live ones kept) and audit events get sealed.
func TestPeriodicJobsRun(t *testing.T) {
	t.Parallel()
	tdb, db := newStore(t)
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)

	_, err := tdb.Pool.Exec(ctx, `INSERT INTO used_jtis (issuer, jti, expires_at) VALUES
		('d1', 'old', now() - interval '10 minutes'), ('d1', 'live', now() + interval '1 hour')`)
	if err != nil {
		t.Fatal(err)
	}
	ten, err := db.TenantBySlug(ctx, "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateUser(ctx, jobsActor, ten.ID, "alice"); err != nil {
		t.Fatal(err)
	}

	startClient(t, db, logger)

	deadline := time.Now().Add(20 * time.Second)
	for {
		var jtis []string
		rows, err := tdb.Pool.Query(ctx, `SELECT jti FROM used_jtis ORDER BY jti`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var s string
			_ = rows.Scan(&s)
			jtis = append(jtis, s)
		}
		rows.Close()
		v, err := db.VerifyAudit(ctx, ten.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(jtis) == 1 && jtis[0] == "live" && v.Unsealed == 0 && v.Events == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: jtis %v, audit %+v", jtis, v)
		}
		time.Sleep(50 * time.Millisecond) // waiting on River, not asserting a duration
	}
}

// TestFailedJobIsLogged checks that a job's failed attempt leaves a line in
// the log (River reports it below the level its logger passes on): here a
// push whose delivery row cannot be read.
func TestFailedJobIsLogged(t *testing.T) {
	t.Parallel()
	_, db := newStore(t)
	ctx := context.Background()
	logs := &apitest.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	client := startClient(t, db, logger)
	missing := "0b6f0d5e-9d3c-4c55-8c1e-3d1c2a4b5f60"
	job, err := client.Insert(ctx, queue.DeliverArgs{DeliveryID: missing}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) != nil || rec["msg"] != "job attempt failed" {
				continue
			}
			if rec["level"] != "WARN" || rec["job_kind"] != "deliver" || rec["job_id"] != float64(job.Job.ID) ||
				!strings.Contains(fmt.Sprint(rec["error"]), "read delivery "+missing) {
				t.Fatalf("log line %s", line)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line for the failed job after 20 s:\n%s", logs.String())
		}
	}
}

// startClient starts the service's River client for the test's length.
func startClient(t *testing.T, db *postgres.DB, logger *slog.Logger) *river.Client[pgx.Tx] {
	t.Helper()
	client, err := jobs.NewClient(jobs.Config{DB: db, Metrics: metrics.New(), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Stop(context.Background()) })
	return client
}

// newStore gives a test a store on its own migrated database.
func newStore(t *testing.T) (*pgtest.DB, *postgres.DB) {
	t.Helper()
	tdb := pgtest.New(t)
	key := make([]byte, seal.KeySize)
	_, _ = rand.Read(key)
	keys, err := seal.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	return tdb, postgres.New(tdb.Pool, keys, slog.New(slog.DiscardHandler))
}
