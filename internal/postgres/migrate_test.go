package postgres_test

import (
	"context"
	"crypto/rand"
	"log/slog"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/policy"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/seal"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

var discard = slog.New(slog.DiscardHandler)

// setup gives a test a store on its own migrated database.
func setup(t *testing.T) (*postgres.DB, *pgxpool.Pool) {
	t.Helper()
	db := pgtest.New(t)
	key := make([]byte, seal.KeySize)
	_, _ = rand.Read(key)
	keys, err := seal.NewKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	return postgres.New(db.Pool, keys, discard), db.Pool
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	empty := pgtest.NewEmpty(t)
	ctx := context.Background()
	const migrators = 3
	var wg sync.WaitGroup
	errs := make([]error, migrators)
	for i := range migrators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each migrator has its own pool, as separate replicas would.
			pool, err := pgxpool.New(ctx, empty.URL)
			if err != nil {
				errs[i] = err
				return
			}
			defer pool.Close()
			errs[i] = postgres.Migrate(ctx, pool, discard)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("migrator %d: %v", i, err)
		}
	}
	want, err := postgres.ExpectedVersions()
	if err != nil {
		t.Fatal(err)
	}
	db := postgres.New(empty.Pool, nil, discard)
	if err := db.CheckVersions(ctx, want); err != nil {
		t.Fatal(err)
	}
	var tenants int
	if err := empty.Pool.QueryRow(ctx, `SELECT count(*) FROM tenants WHERE slug = 'default'`).Scan(&tenants); err != nil || tenants != 1 {
		t.Fatalf("default tenants = %d, %v (the seed ran more than once?)", tenants, err)
	}
	// Running again is a no-op.
	if err := postgres.Migrate(ctx, empty.Pool, discard); err != nil {
		t.Fatal(err)
	}
}

func TestCheckVersionsDetectsDrift(t *testing.T) {
	t.Parallel()
	db, pool := setup(t)
	ctx := context.Background()
	want, _ := postgres.ExpectedVersions()
	if err := db.CheckVersions(ctx, want); err != nil {
		t.Fatal(err)
	}
	ahead := want
	ahead.Goose++
	if err := db.CheckVersions(ctx, ahead); err == nil {
		t.Fatal("a binary expecting a newer schema was told the schema is current")
	}
	// An older binary on a newer schema (a rolling upgrade) stays ready.
	behind := want
	behind.Goose--
	behind.River--
	if err := db.CheckVersions(ctx, behind); err != nil {
		t.Fatalf("older binary on a newer schema: %v", err)
	}
	if _, err := pool.Exec(ctx, `DROP TABLE goose_db_version`); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckVersions(ctx, want); err == nil {
		t.Fatal("no error without the version table")
	}
}

func TestPolicyDefaultsAgreeWithGo(t *testing.T) {
	t.Parallel()
	db, pool := setup(t)
	ctx := context.Background()
	var id string
	if err := pool.QueryRow(ctx, `INSERT INTO tenants (id, slug, name) VALUES (gen_random_uuid(), 'x', 'x') RETURNING id`).Scan(&id); err != nil {
		t.Fatal(err)
	}
	// Column defaults, not Go's: the two must agree.
	if _, err := pool.Exec(ctx, `INSERT INTO policies (tenant_id) VALUES ($1)`, id); err != nil {
		t.Fatal(err)
	}
	got, err := db.Policy(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got != policy.Default() {
		t.Fatalf("database defaults %+v\ndiffer from policy.Default() %+v", got, policy.Default())
	}
	// And every bound of the Go policy is a CHECK in the database.
	for _, b := range policy.AllBounds() {
		if b.Bool {
			continue
		}
		for _, v := range []int{b.Lo - 1, b.Hi + 1} {
			if _, err := pool.Exec(ctx, `UPDATE policies SET `+b.Name+` = $2 WHERE tenant_id = $1`, id, v); err == nil {
				t.Errorf("database accepted %s = %d", b.Name, v)
			}
		}
	}
}
