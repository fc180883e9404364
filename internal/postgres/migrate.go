package postgres

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/pushmfa/pushmfa/migrations"
)

// migrationLock is the advisory lock key held while migrating ("pushmfa1"),
// so that replicas starting together apply each migration exactly once.
const migrationLock int64 = 0x707573686d666131

// Migrate applies the embedded schema migrations (goose) and River's own
// migrations, holding a session advisory lock across both.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("migrate: acquire connection: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
		return fmt.Errorf("migrate: take the migration lock: %w", err)
	}
	defer func() {
		// Unlock even if ctx was cancelled, or the lock would outlive us on a
		// pooled connection.
		if _, err := conn.Exec(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", migrationLock); err != nil {
			conn.Conn().Close(context.WithoutCancel(ctx)) //nolint:errcheck // closing drops the lock
		}
	}()

	db := stdlib.OpenDBFromPool(pool)
	defer db.Close()
	provider, err := goose.NewProvider(goose.DialectPostgres, db, migrations.FS, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	results, err := provider.Up(ctx)
	if err != nil {
		return fmt.Errorf("migrate: apply schema migrations: %w", err)
	}
	for _, r := range results {
		logger.Info("applied migration", "source", path.Base(r.Source.Path), "duration", r.Duration.String())
	}

	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{Logger: quiet(logger)})
	if err != nil {
		return fmt.Errorf("migrate: river: %w", err)
	}
	res, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil)
	if err != nil {
		return fmt.Errorf("migrate: apply river migrations: %w", err)
	}
	if len(res.Versions) > 0 {
		logger.Info("applied river migrations", "count", len(res.Versions))
	}
	return nil
}

// quiet passes River's migration log on at warning level and above only.
func quiet(logger *slog.Logger) *slog.Logger {
	return slog.New(levelFilter{logger.Handler(), slog.LevelWarn})
}

type levelFilter struct {
	slog.Handler
	min slog.Level
}

func (h levelFilter) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

// SchemaVersions are the migration versions this binary expects.
type SchemaVersions struct {
	Goose int64
	River int
}

// ExpectedVersions reads the newest embedded migration and River's newest.
func ExpectedVersions() (SchemaVersions, error) {
	var v SchemaVersions
	entries, err := fs.ReadDir(migrations.FS, ".")
	if err != nil {
		return v, err
	}
	for _, e := range entries {
		num, _, ok := strings.Cut(e.Name(), "_")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil {
			return v, fmt.Errorf("migration %s: bad version", e.Name())
		}
		v.Goose = max(v.Goose, n)
	}
	m, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return v, err
	}
	all := m.AllVersions()
	if len(all) == 0 {
		return v, errors.New("river has no migrations")
	}
	v.River = all[len(all)-1].Version
	return v, nil
}

// CheckVersions reports an error unless the database's schema is at least
// at the expected versions (for readiness). A newer schema is fine: during a
// rolling upgrade the first new replica migrates while old ones still serve,
// which is why migrations must stay backward compatible for one release.
func (db *DB) CheckVersions(ctx context.Context, want SchemaVersions) error {
	var got SchemaVersions
	err := db.pool.QueryRow(ctx, `
		SELECT (SELECT coalesce(max(version_id), 0) FROM goose_db_version WHERE is_applied),
		       (SELECT coalesce(max(version), 0) FROM river_migration WHERE line = 'main')`).Scan(&got.Goose, &got.River)
	if err != nil {
		return fmt.Errorf("read schema versions: %w", err)
	}
	if got.Goose < want.Goose || got.River < want.River {
		return fmt.Errorf("schema at %+v, older than this binary's %+v", got, want)
	}
	return nil
}
