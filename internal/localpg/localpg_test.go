//go:build linux

package localpg

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

var testSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "500",
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newCluster(t *testing.T, opts Options) *Cluster {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	// Registered after t.TempDir, so it runs before the directory is removed.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("cleanup Stop: %v", err)
		}
	})
	return c
}

func queryOne(ctx context.Context, connURL, sql string) (string, error) {
	conn, err := pgx.Connect(ctx, connURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	var s string
	err = conn.QueryRow(ctx, sql).Scan(&s)
	return s, err
}

func mustQuery(t *testing.T, ctx context.Context, connURL, sql string) string {
	t.Helper()
	s, err := queryOne(ctx, connURL, sql)
	if err != nil {
		t.Fatalf("%s on %s: %v", sql, connURL, err)
	}
	return s
}

func withPassword(t *testing.T, connURL, password string) string {
	t.Helper()
	u, err := url.Parse(connURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(superuser, password)
	return u.String()
}

func TestFindBinDir(t *testing.T) {
	t.Parallel()
	dir, err := FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range requiredBinaries {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("FindBinDir() = %s, but: %v", dir, err)
		}
	}
}

func TestSortByVersionDesc(t *testing.T) {
	t.Parallel()
	dirs := []string{"/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/x/bin", "/usr/lib/postgresql/13/bin"}
	sortByVersionDesc(dirs)
	want := []string{"/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/13/bin", "/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/x/bin"}
	if strings.Join(dirs, " ") != strings.Join(want, " ") {
		t.Errorf("got %v, want %v", dirs, want)
	}
}

func TestNewValidation(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "pg")
	cases := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"empty dir", Options{}, "Options.Dir) is empty"},
		{"bad bindir", Options{Dir: dir, BinDir: t.TempDir()}, "PostgreSQL binaries not found in"},
		{"quote in value", Options{Dir: dir, Settings: map[string]string{"work_mem": "4MB'; rm -rf /"}}, `invalid value "4MB'; rm -rf /"`},
		{"double quote in value", Options{Dir: dir, Settings: map[string]string{"application_name": `a"b`}}, "invalid value"},
		{"whitespace in value", Options{Dir: dir, Settings: map[string]string{"work_mem": "4 MB"}}, "invalid value"},
		{"shell char in value", Options{Dir: dir, Settings: map[string]string{"work_mem": "$(id)"}}, "invalid value"},
		{"quote in key", Options{Dir: dir, Settings: map[string]string{"a'b": "1"}}, "invalid setting name"},
		{"managed key", Options{Dir: dir, Settings: map[string]string{"port": "5432"}}, "managed by localpg"},
		{"newline in password", Options{Dir: dir, Password: "a\nb"}, "line breaks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}

	c, err := New(Options{Dir: "relative/pg", Settings: testSettings})
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(c.Dir()) {
		t.Errorf("Dir() = %q, want absolute", c.Dir())
	}
	if _, err := os.Stat("relative"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("New touched the disk: stat relative: %v", err)
	}
}

func TestUnusableDir(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{
		"/proc/localpg-test/pg",       // read-only pseudo file system
		filepath.Join(file, "pg"),     // parent is a file
		filepath.Join(file, "a", "b"), // ancestor is a file
		file,                          // Dir itself is a file
	} {
		t.Run(dir, func(t *testing.T) {
			ctx := testCtx(t)
			c := newCluster(t, Options{Dir: dir})
			created, err := c.Init(ctx)
			if err == nil || created {
				t.Fatalf("Init = %v, %v; want error", created, err)
			}
			if !strings.Contains(err.Error(), dir) {
				t.Errorf("error does not name the directory: %v", err)
			}
			t.Logf("Init error: %v", err)
			if err := c.Start(ctx); err == nil || !strings.Contains(err.Error(), dir) {
				t.Errorf("Start error = %v, want one naming %s", err, dir)
			}
			if err := c.Stop(ctx); err != nil {
				t.Errorf("Stop on unusable dir = %v, want nil", err)
			}
		})
	}
}

func TestInitRefusesNonEmptyDir(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, Options{Dir: dir})
	created, err := c.Init(testCtx(t))
	if err == nil || created || !strings.Contains(err.Error(), "is not empty") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Init = %v, %v; want a 'not empty' error naming %s", created, err, dir)
	}
}

// TestPasswordCluster runs the full life cycle on one cluster under
// t.TempDir(), which as root is a 0700 root-owned directory: the setpriv case.
func TestPasswordCluster(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	const password = "s3cret p@ss:/%?#'\"word"
	opts := Options{Dir: filepath.Join(t.TempDir(), "deep", "data", "pg"), Password: password, Settings: testSettings}
	c := newCluster(t, opts)

	if err := c.Start(ctx); err == nil || !strings.Contains(err.Error(), "call Init first") {
		t.Fatalf("Start before Init = %v, want 'call Init first'", err)
	}

	created, err := c.Init(ctx)
	if err != nil || !created {
		t.Fatalf("Init = %v, %v; want true, nil", created, err)
	}
	if created, err := c.Init(ctx); err != nil || created {
		t.Fatalf("second Init = %v, %v; want false, nil", created, err)
	}
	checkOwnership(t, c.Dir())
	if os.Geteuid() == 0 {
		prefix, err := c.commandPrefix(ctx)
		if err != nil || len(prefix) == 0 || filepath.Base(prefix[0]) != "setpriv" {
			t.Errorf("commandPrefix under a 0700 root-owned temp dir = %v, %v; want setpriv", prefix, err)
		}
	}
	if leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(c.Dir()), ".localpg-pwfile-*")); len(leftovers) > 0 {
		t.Errorf("password file left behind: %v", leftovers)
	}

	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if c.Port() == 0 {
		t.Fatal("Port() = 0 after Start")
	}
	if u, err := url.Parse(c.URL("postgres")); err != nil {
		t.Errorf("URL %s does not parse: %v", c.URL("postgres"), err)
	} else if got, _ := u.User.Password(); got != password {
		t.Errorf("URL password = %q, want %q", got, password)
	}
	if got := mustQuery(t, ctx, c.URL("postgres"), "SELECT 1::text"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
	for setting, want := range map[string]string{
		"fsync": "off", "max_connections": "500", "listen_addresses": "127.0.0.1", "unix_socket_directories": "",
	} {
		if got := mustQuery(t, ctx, c.URL("postgres"), "SHOW "+setting); got != want {
			t.Errorf("SHOW %s = %q, want %q", setting, got, want)
		}
	}

	t.Run("wrong password is rejected", func(t *testing.T) {
		_, err := queryOne(ctx, withPassword(t, c.URL("postgres"), "wrong"), "SELECT 1::text")
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Fatalf("connect with wrong password: %v; want SQLSTATE 28P01", err)
		}
	})

	t.Run("second Start is idempotent", func(t *testing.T) {
		port := c.Port()
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if c.Port() != port {
			t.Errorf("port changed from %d to %d", port, c.Port())
		}
	})

	t.Run("adopt running cluster", func(t *testing.T) {
		c2, err := New(Options{Dir: opts.Dir, Password: password, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c2.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if c2.Port() != c.Port() {
			t.Errorf("adopted port %d, want %d", c2.Port(), c.Port())
		}
		mustQuery(t, ctx, c2.URL("postgres"), "SELECT 1::text")
	})

	t.Run("stop then start again", func(t *testing.T) {
		if err := c.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		if c.Port() != 0 {
			t.Errorf("Port() = %d after Stop", c.Port())
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatalf("second Stop: %v", err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatalf("Start after Stop: %v", err)
		}
		mustQuery(t, ctx, c.URL("postgres"), "SELECT 1::text")
	})

	t.Run("start with stale pid file of a dead process", func(t *testing.T) {
		pidPath := filepath.Join(c.Dir(), pidFileName)
		content, err := os.ReadFile(pidPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		// A PID that is certainly gone: a child we started and reaped.
		cmd := exec.Command("true")
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(content), "\n", 2)
		stale := strconv.Itoa(cmd.Process.Pid) + "\n" + lines[1]
		if err := os.WriteFile(pidPath, []byte(stale), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatalf("Start with stale pid file: %v", err)
		}
		mustQuery(t, ctx, c.URL("postgres"), "SELECT 1::text")
	})

	t.Run("concurrent start from two Cluster values", func(t *testing.T) {
		if err := c.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		other, err := New(Options{Dir: opts.Dir, Password: password, Settings: testSettings, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		errc := make(chan error, 1)
		go func() { errc <- other.Start(ctx) }()
		if err := c.Start(ctx); err != nil {
			t.Errorf("Start: %v", err)
		}
		if err := <-errc; err != nil {
			t.Errorf("concurrent Start: %v", err)
		}
		if c.Port() != other.Port() {
			t.Errorf("ports differ: %d and %d", c.Port(), other.Port())
		}
		mustQuery(t, ctx, c.URL("postgres"), "SELECT 1::text")
	})

	t.Run("start after kill -9", func(t *testing.T) {
		pf, err := readPidFile(filepath.Join(c.Dir(), pidFileName))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pf.pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for processState(pf.pid, c.Dir()) == procAlive {
			if time.Now().After(deadline) {
				t.Fatalf("postmaster %d still alive after SIGKILL", pf.pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if _, err := os.Stat(filepath.Join(c.Dir(), pidFileName)); err != nil {
			t.Fatalf("expected a stale pid file: %v", err)
		}
		c3, err := New(Options{Dir: opts.Dir, Password: password, Settings: testSettings, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := c3.Start(ctx); err != nil {
			t.Fatalf("Start after kill -9: %v", err)
		}
		mustQuery(t, ctx, c3.URL("postgres"), "SELECT 1::text")
		// c (cleanup) stops the same server.
	})
}

// TestTrustClusterPlainParent covers a cluster whose parents are traversable
// by the postgres user (plain runuser as root), trust auth, and a failed
// start reporting postgres.log.
func TestTrustClusterPlainParent(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	parent, err := os.MkdirTemp("", "localpg-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(parent, "data", "pg")
	c := newCluster(t, Options{Dir: dir, Settings: testSettings})

	if created, err := c.Init(ctx); err != nil || !created {
		t.Fatalf("Init = %v, %v", created, err)
	}
	checkOwnership(t, dir)
	if os.Geteuid() == 0 {
		prefix, err := c.commandPrefix(ctx)
		if err != nil || len(prefix) == 0 || filepath.Base(prefix[0]) != "runuser" {
			t.Errorf("commandPrefix under a 0755 parent = %v, %v; want runuser", prefix, err)
		}
	}

	t.Run("failed start shows postgres.log", func(t *testing.T) {
		bad := newCluster(t, Options{Dir: dir, Settings: map[string]string{"shared_buffers": "lots"}})
		err := bad.Start(ctx)
		if err == nil {
			t.Fatal("Start with shared_buffers=lots succeeded")
		}
		if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) || !strings.Contains(err.Error(), logFileName) {
			t.Errorf("Start error lacks the log lines: %v", err)
		}
	})

	t.Run("retry when the port was taken", func(t *testing.T) {
		busy, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer busy.Close()
		busyPort := busy.Addr().(*net.TCPAddr).Port
		calls := 0
		c.pickPort = func() (int, error) {
			calls++
			if calls == 1 {
				return busyPort, nil
			}
			return freePort()
		}
		defer func() { c.pickPort = freePort }()
		if err := c.Start(ctx); err != nil {
			t.Fatal(err)
		}
		if calls != 2 || c.Port() == busyPort {
			t.Errorf("port picked %d times, Port() = %d (busy %d); want a retry on a new port", calls, c.Port(), busyPort)
		}
	})

	if err := c.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustQuery(t, ctx, c.URL("postgres"), "SELECT 1::text"); got != "1" {
		t.Errorf("SELECT 1 = %q", got)
	}
	if u := c.URL("app"); u != "postgres://postgres@127.0.0.1:"+strconv.Itoa(c.Port())+"/app?sslmode=disable" {
		t.Errorf("URL = %s", u)
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := queryOne(ctx, c.URL("postgres"), "SELECT 1::text"); err == nil {
		t.Error("query succeeded after Stop")
	}

	// An empty postmaster.pid is what a crash right at startup leaves;
	// PostgreSQL refuses to start over it, so Start removes it after a grace
	// period for a concurrently starting server.
	t.Run("empty pid file remnant", func(t *testing.T) {
		if err := os.WriteFile(filepath.Join(dir, pidFileName), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := c.Start(ctx); err != nil {
			t.Fatalf("Start over an empty pid file: %v", err)
		}
		mustQuery(t, ctx, c.URL("postgres"), "SELECT 1::text")
	})
}

func TestRetryableStartFailure(t *testing.T) {
	t.Parallel()
	for log, want := range map[string]bool{
		`LOG:  could not bind IPv4 address "127.0.0.1": Address already in use`:  true,
		`FATAL:  could not create any TCP/IP sockets`:                            true,
		`FATAL:  pre-existing shared memory block (key 1, ID 2) is still in use`: true,
		`FATAL:  invalid value for parameter "shared_buffers": "lots"`:           false,
		`FATAL:  data directory "/x" has invalid permissions`:                    false,
	} {
		if _, got := retryableStartFailure([]byte(log)); got != want {
			t.Errorf("retryableStartFailure(%q) = %v, want %v", log, got, want)
		}
	}
}

func checkOwnership(t *testing.T, dir string) {
	t.Helper()
	info, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o700 {
		t.Errorf("%s has mode %o, want 0700", dir, perm)
	}
	if os.Geteuid() != 0 {
		return
	}
	uid, _, err := postgresIDs()
	if err != nil {
		t.Fatal(err)
	}
	if st, ok := info.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid {
		t.Errorf("%s owned by uid %d, want postgres (%d)", dir, st.Uid, uid)
	}
}
