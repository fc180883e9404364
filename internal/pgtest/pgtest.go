// Package pgtest gives each test its own real PostgreSQL database, cheaply.
//
// The server is, in order: DATABASE_URL when set; else 127.0.0.1:5432 when it
// answers (as user postgres, PGPASSWORD honoured); else a throwaway cluster
// started from the machine's PostgreSQL binaries by internal/localpg (the code
// the server itself uses), shared by every test process of a run and stopped
// by the last one to finish.
//
// The schema is migrated once into a template database named after a hash of
// the migrations; each test then gets a clone (CREATE DATABASE ... TEMPLATE,
// about 20 ms with STRATEGY FILE_COPY) that is dropped when it ends. Every
// package using it must call Main from TestMain.
package pgtest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/pushmfa/pushmfa/internal/localpg"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/migrations"
)

// harness is the process-wide state: one server per test process.
type harness struct {
	once      sync.Once
	err       error
	adminURL  *url.URL // a URL of the server, database part replaced per use
	admin     *pgxpool.Pool
	template  string
	fileCopy  bool
	cluster   *localpg.Cluster // our throwaway cluster, when used
	usersLock *os.File         // shared lock held while this process uses the cluster
	base      string
	seq       int64
	mu        sync.Mutex
	mainRan   bool
}

var h harness

// Main runs the package's tests, releases the shared cluster and exits.
func Main(m *testing.M) { os.Exit(Run(m)) }

// Run is Main for a TestMain with cleanup of its own to do before it
// exits: it returns the exit code.
func Run(m *testing.M) int {
	h.mainRan = true
	code := m.Run()
	h.release()
	return code
}

// DB is a test's own database.
type DB struct {
	Pool *pgxpool.Pool
	// URL connects to the database (for a server under test).
	URL  string
	Name string
}

// New returns a fresh, migrated database for the test, dropped at its end.
func New(t testing.TB) *DB { return newDB(t, true) }

// NewEmpty returns a fresh database without any schema (for migration tests).
func NewEmpty(t testing.TB) *DB { return newDB(t, false) }

func newDB(t testing.TB, migrated bool) *DB {
	t.Helper()
	if !h.mainRan {
		t.Fatal("pgtest: call pgtest.Main(m) from the package's TestMain")
	}
	h.once.Do(func() { h.err = h.setup() })
	if h.err != nil {
		t.Fatalf("pgtest: no PostgreSQL for tests: %v", h.err)
	}
	ctx := context.Background()
	h.mu.Lock()
	h.seq++
	name := fmt.Sprintf("pushmfa_test_%d_%d_%s", os.Getpid(), h.seq, randomSuffix())
	h.mu.Unlock()

	sql := `CREATE DATABASE ` + pgx.Identifier{name}.Sanitize()
	if migrated {
		sql += ` TEMPLATE ` + pgx.Identifier{h.template}.Sanitize()
		if h.fileCopy {
			sql += ` STRATEGY FILE_COPY`
		}
	}
	if _, err := h.admin.Exec(ctx, sql); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	dbURL := h.urlFor(name)
	cfg, err := pgxpool.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("pgtest: connect: %v", err)
	}
	t.Cleanup(func() {
		pool.Close()
		if _, err := h.admin.Exec(context.Background(), `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`); err != nil {
			t.Errorf("pgtest: drop database %s: %v", name, err)
		}
	})
	return &DB{Pool: pool, URL: dbURL, Name: name}
}

// AdminURL returns a URL of the test server's maintenance database, for tests
// that create databases themselves.
func AdminURL(t testing.TB) string {
	t.Helper()
	New(t) // ensures setup
	return h.urlFor(h.adminURL.Path[1:])
}

func randomSuffix() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (h *harness) urlFor(db string) string {
	u := *h.adminURL
	u.Path = "/" + db
	return u.String()
}

func (h *harness) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	raw, err := h.server(ctx)
	if err != nil {
		return err
	}
	if h.adminURL, err = url.Parse(raw); err != nil {
		return fmt.Errorf("bad database URL: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(raw)
	if err != nil {
		return err
	}
	cfg.MaxConns = 4
	if h.admin, err = pgxpool.NewWithConfig(ctx, cfg); err != nil {
		return err
	}
	var version int
	if err := h.admin.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return fmt.Errorf("connect to %s:%s: %w", h.adminURL.Hostname(), h.adminURL.Port(), err)
	}
	h.fileCopy = version >= 150000
	if h.cluster != nil {
		h.dropOrphans(ctx)
	}
	return h.ensureTemplate(ctx)
}

// server picks the PostgreSQL server and returns a URL of its maintenance
// database.
func (h *harness) server(ctx context.Context) (string, error) {
	if u := os.Getenv("DATABASE_URL"); u != "" {
		return u, nil
	}
	if conn, err := net.DialTimeout("tcp", "127.0.0.1:5432", time.Second); err == nil {
		_ = conn.Close()
		u := "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
		c, err := pgx.Connect(ctx, u)
		if err != nil {
			return "", fmt.Errorf("127.0.0.1:5432 answers but refuses user postgres (%v): set DATABASE_URL", err)
		}
		_ = c.Close(ctx)
		return u, nil
	}
	return h.startCluster(ctx)
}

// startCluster starts (or joins) the shared throwaway cluster. startLock
// serialises starting and stopping; every process using the cluster holds
// usersLock shared, so the last to leave can tell it is last.
func (h *harness) startCluster(ctx context.Context) (string, error) {
	h.base = filepath.Join(os.TempDir(), "pushmfa-pgtest-"+strconv.Itoa(os.Getuid()))
	if err := ownDir(h.base); err != nil {
		return "", err
	}
	start, err := flock(filepath.Join(h.base, "start.lock"), syscall.LOCK_EX)
	if err != nil {
		return "", err
	}
	defer start.Close()
	// Even a throwaway cluster gets a password: it listens on 127.0.0.1,
	// where any local user could otherwise connect as its superuser.
	password, err := secretFile(filepath.Join(h.base, "password"))
	if err != nil {
		return "", err
	}
	cluster, err := localpg.New(localpg.Options{
		Dir:      filepath.Join(h.base, "cluster"),
		Password: password,
		// Durability is worthless for a throwaway cluster; speed is not.
		Settings: map[string]string{"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
			"max_connections": "500", "shared_buffers": "128MB"},
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		return "", err
	}
	if _, err := cluster.Init(ctx); err != nil {
		return "", err
	}
	if err := cluster.Start(ctx); err != nil {
		return "", err
	}
	if h.usersLock, err = flock(filepath.Join(h.base, "users.lock"), syscall.LOCK_SH); err != nil {
		return "", err
	}
	h.cluster = cluster
	return cluster.URL("postgres"), nil
}

// release stops the throwaway cluster when this process is its last user.
func (h *harness) release() {
	if h.admin != nil {
		h.admin.Close()
	}
	if h.cluster == nil {
		return
	}
	_ = h.usersLock.Close()
	start, err := flock(filepath.Join(h.base, "start.lock"), syscall.LOCK_EX)
	if err != nil {
		return
	}
	defer start.Close()
	users, err := os.OpenFile(filepath.Join(h.base, "users.lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return
	}
	defer users.Close()
	if syscall.Flock(int(users.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = h.cluster.Stop(ctx)
	}
}

// ownDir makes the harness's directory in the shared temp dir and makes sure
// nobody else prepared it: ours, and writable by nobody else. 0711 lets the
// postgres OS user (when we are root) reach the cluster inside.
func ownDir(dir string) error {
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return err
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s is not a directory of this user: remove it", dir)
	}
	return os.Chmod(dir, 0o711)
}

// secretFile reads the cluster password, or makes it (0600) on first use.
func secretFile(path string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	pw := randomSuffix() + randomSuffix() + randomSuffix() + randomSuffix()
	if _, err := f.WriteString(pw); err != nil {
		return "", err
	}
	return pw, nil
}

func flock(path string, how int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}

// dropOrphans removes test databases left by test processes that died
// before their cleanup ran (only in our own throwaway cluster).
func (h *harness) dropOrphans(ctx context.Context) {
	rows, err := h.admin.Query(ctx, `SELECT datname FROM pg_database WHERE datname LIKE 'pushmfa\_test\_%'`)
	if err != nil {
		return
	}
	names, _ := pgx.CollectRows(rows, pgx.RowTo[string])
	for _, name := range names {
		parts := strings.Split(name, "_")
		pid, err := strconv.Atoi(parts[2])
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		_, _ = h.admin.Exec(ctx, `DROP DATABASE IF EXISTS `+pgx.Identifier{name}.Sanitize()+` WITH (FORCE)`)
	}
}

// ensureTemplate creates the migrated template database once per schema
// version, under an advisory lock so concurrent test processes agree.
func (h *harness) ensureTemplate(ctx context.Context) error {
	sum, err := schemaHash()
	if err != nil {
		return err
	}
	h.template = "pushmfa_tmpl_" + sum
	conn, err := h.admin.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	const lockKey = 0x70676d74706c31 // "pgmtpl1"
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_lock($1)`, lockKey); err != nil {
		return err
	}
	defer conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, lockKey) //nolint:errcheck

	var ready bool
	err = conn.QueryRow(ctx, `SELECT datistemplate FROM pg_database WHERE datname = $1`, h.template).Scan(&ready)
	if err == nil && ready {
		return nil
	}
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return err
	}
	ident := pgx.Identifier{h.template}.Sanitize()
	// A template that exists but was never marked ready is a half-built one.
	if _, err := conn.Exec(ctx, `DROP DATABASE IF EXISTS `+ident+` WITH (FORCE)`); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `CREATE DATABASE `+ident); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, h.urlFor(h.template))
	if err != nil {
		return err
	}
	err = postgres.Migrate(ctx, pool, slog.New(slog.DiscardHandler))
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrate template: %w", err)
	}
	// Marking it a template that accepts no connections makes it ready and
	// keeps stray sessions from blocking clones.
	_, err = conn.Exec(ctx, `ALTER DATABASE `+ident+` WITH IS_TEMPLATE true ALLOW_CONNECTIONS false`)
	return err
}

// schemaHash names the template after everything that shapes the schema:
// our migrations and River's.
func schemaHash() (string, error) {
	hash := sha256.New()
	err := fs.WalkDir(migrations.FS, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(migrations.FS, path)
		if err != nil {
			return err
		}
		fmt.Fprintf(hash, "%s\x00%d\x00", path, len(b))
		hash.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	m, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return "", err
	}
	for _, v := range m.AllVersions() {
		fmt.Fprintf(hash, "river\x00%d\x00%s\x00", v.Version, v.SQLUp)
	}
	return hex.EncodeToString(hash.Sum(nil))[:16], nil
}
