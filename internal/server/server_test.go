package server_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/apitest"
	"github.com/pushmfa/pushmfa/internal/config"
	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/server"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

func load(t *testing.T, env map[string]string) *config.Config {
	t.Helper()
	cfg, err := config.Load(func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func key() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestEmbeddedCluster runs the server the way `make run` does: no
// DATABASE_URL, no MASTER_KEY. The cluster and key are made under DATA_DIR,
// survive a restart, and the cluster stops with the server.
func TestEmbeddedCluster(t *testing.T) {
	t.Parallel()
	dataDir := filepath.Join(t.TempDir(), "data") // inside a 0700 directory, as a fresh clone in mktemp -d is
	token := "bootstrap-" + key()
	env := map[string]string{"DATA_DIR": dataDir, "LISTEN_ADDR": "127.0.0.1:0", "BOOTSTRAP_ADMIN_TOKEN": token}
	ctx := context.Background()
	logger := slog.New(slog.DiscardHandler)

	s, err := server.Start(ctx, load(t, env), logger)
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + s.Addr()
	if code, body := get(t, base+"/readyz", ""); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	st, err := os.Stat(filepath.Join(dataDir, "master.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("master.key: %v %v", st, err)
	}
	firstKey, _ := os.ReadFile(filepath.Join(dataDir, "master.key"))
	req, _ := http.NewRequest("POST", base+"/v1/admin/users", strings.NewReader(`{"user":"alice"}`))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("create user: %v %v", resp, err)
	}
	resp.Body.Close()

	// A second server on the same DATA_DIR is refused while the first runs.
	if _, err := server.Start(ctx, load(t, env), logger); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second server on one DATA_DIR: %v", err)
	}

	// The service connects as its own role, which is not a superuser.
	var super bool
	if err := s.DB().Pool().QueryRow(ctx, `SELECT rolsuper FROM pg_roles WHERE rolname = current_user`).Scan(&super); err != nil || super {
		t.Fatalf("service role is a superuser (%v) or unreadable: %v", super, err)
	}
	if err := s.DB().Pool().QueryRow(ctx, `SELECT pg_read_file('/etc/hostname')`).Scan(new(string)); err == nil {
		t.Fatal("the service role can read files on the host")
	}

	// Even with the shutdown budget already spent, the cluster is stopped.
	pid := postmasterPID(t, dataDir)
	spent, cancel := context.WithCancel(ctx)
	cancel()
	_ = s.Shutdown(spent)
	if _, err := os.Stat(filepath.Join(dataDir, "pg", "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("cluster still running after shutdown (pid %d)", pid)
	}

	// Restarted, it finds its data and its key again.
	s, err = server.Start(ctx, load(t, env), logger)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown(ctx) //nolint:errcheck
	code, body := get(t, "http://"+s.Addr()+"/v1/admin/users/alice", token)
	if code != 200 {
		t.Fatalf("user lost across restart: %d %s", code, body)
	}
	secondKey, _ := os.ReadFile(filepath.Join(dataDir, "master.key"))
	if string(firstKey) != string(secondKey) {
		t.Fatal("master key changed across restart")
	}
}

func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dataDir, "pg", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	fmt.Sscan(strings.SplitN(string(b), "\n", 2)[0], &pid)
	return pid
}

func TestStartFailsClearly(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"DATA_DIR under a file", map[string]string{"DATA_DIR": filepath.Join(file, "data")}, "DATA_DIR"},
		{"DATA_DIR in /proc", map[string]string{"DATA_DIR": "/proc/pushmfa-data"}, "DATA_DIR"},
		{"database nowhere", map[string]string{"DATABASE_URL": "postgres://u:secretpw@127.0.0.1:1/db", "MASTER_KEY": key(),
			"DATABASE_CONNECT_TIMEOUT": "1s"}, "connect to database"},
		{"listen address taken", nil, "LISTEN_ADDR"},
		{"pool too small", map[string]string{"DATABASE_URL": "postgres://u@127.0.0.1:1/db?pool_max_conns=1", "MASTER_KEY": key()}, "pool_max_conns"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			env := tc.env
			if env == nil {
				// A taken port, on a working database.
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				defer ln.Close()
				env = map[string]string{"DATABASE_URL": pgtest.New(t).URL, "MASTER_KEY": key(), "LISTEN_ADDR": ln.Addr().String()}
			}
			if env["LISTEN_ADDR"] == "" {
				env["LISTEN_ADDR"] = "127.0.0.1:0"
			}
			start := time.Now()
			s, err := server.Start(context.Background(), load(t, env), slog.New(slog.DiscardHandler))
			if err == nil {
				s.Shutdown(context.Background()) //nolint:errcheck
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "secretpw") {
				t.Fatal("the database password is in the error")
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("took %s to fail", time.Since(start))
			}
		})
	}
}

// TestDataDirTrust refuses a DATA_DIR, or secret files in it, that someone
// else could have prepared or can read.
func TestDataDirTrust(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		setup func(dir string) error
		want  string
	}{
		{"world-writable", func(dir string) error { return os.Chmod(dir, 0o777) }, "writable by group or others"},
		{"readable master key", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "master.key"), []byte(key()), 0o644)
		}, "readable by others"},
		{"master key is a link", func(dir string) error {
			return os.Symlink("/etc/hostname", filepath.Join(dir, "master.key"))
		}, "master.key"},
		{"not a directory", func(dir string) error {
			if err := os.Remove(dir); err != nil {
				return err
			}
			return os.WriteFile(dir, nil, 0o600)
		}, "not a directory"},
		{"bad master key", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "master.key"), []byte("short"), 0o600)
		}, "32-byte"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.Mkdir(dir, 0o711); err != nil {
				t.Fatal(err)
			}
			if err := tc.setup(dir); err != nil {
				t.Fatal(err)
			}
			s, err := server.Start(context.Background(), load(t, map[string]string{"DATA_DIR": dir, "LISTEN_ADDR": "127.0.0.1:0"}),
				slog.New(slog.DiscardHandler))
			if err == nil {
				s.Shutdown(context.Background()) //nolint:errcheck
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

// TestShutdownDrains starts a request whose body is still arriving, shuts
// the server down, and checks that the listener closes at once while the
// request in flight still completes.
func TestShutdownDrains(t *testing.T) {
	t.Parallel()
	e := apitest.Start(t)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", e.URL+"/v1/admin/users", pr)
	req.Header.Set("Authorization", "Bearer "+e.Bootstrap)
	req.Header.Set("Content-Type", "application/json")
	// With Expect: 100-continue the client sends the body only once the
	// handler starts reading it, so the first Write below returns only when
	// the request is inside the server.
	req.Header.Set("Expect", "100-continue")
	client := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: time.Minute}}
	type result struct {
		code int
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			done <- result{0, err}
			return
		}
		resp.Body.Close()
		done <- result{resp.StatusCode, nil}
	}()
	if _, err := pw.Write([]byte(`{"user":`)); err != nil {
		t.Fatal(err)
	}
	shut := make(chan error, 1)
	go func() { shut <- e.Server.Shutdown(context.Background()) }()
	// New connections are refused while the old request drains.
	addr := strings.TrimPrefix(e.URL, "http://")
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("new connections still accepted while draining")
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-shut:
		t.Fatalf("shutdown returned (%v) with a request in flight", err)
	default:
	}
	_, _ = pw.Write([]byte(`"drained"}`))
	_ = pw.Close()
	if r := <-done; r.err != nil || r.code != 201 {
		t.Fatalf("in-flight request: %+v", r)
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
}

// TestReplicasShareOneDatabase runs two servers on one database, as two
// replicas would be: what one writes, the other serves.
func TestReplicasShareOneDatabase(t *testing.T) {
	t.Parallel()
	a, b := apitest.Replicas(t)
	r := a.JSON(t, "POST", "/v1/admin/applications", a.Bootstrap, map[string]any{"name": "VPN"})
	if r.Status != 201 {
		t.Fatalf("%d %s", r.Status, r.Body)
	}
	var app struct{ ID, Secret string }
	_ = json.Unmarshal(r.Body, &app)
	a.JSON(t, "POST", "/v1/admin/users", a.Bootstrap, map[string]any{"user": "alice"})
	if r := b.JSON(t, "GET", "/v1/users/alice/devices", app.Secret, nil); r.Status != 200 {
		t.Fatalf("replica b: %d %s", r.Status, r.Body)
	}
}

// TestRotationReachesOtherReplicas: a secret rotated on one replica stops
// working on another within moments, though that one had it cached.
func TestRotationReachesOtherReplicas(t *testing.T) {
	t.Parallel()
	a, b := apitest.Replicas(t)
	r := a.JSON(t, "POST", "/v1/admin/applications", a.Bootstrap, map[string]any{"name": "VPN"})
	var app struct{ ID, Secret string }
	_ = json.Unmarshal(r.Body, &app)
	a.JSON(t, "POST", "/v1/admin/users", a.Bootstrap, map[string]any{"user": "alice"})
	if r := b.JSON(t, "GET", "/v1/users/alice/devices", app.Secret, nil); r.Status != 200 {
		t.Fatalf("b before rotation: %d", r.Status) // now cached on b
	}
	a.JSON(t, "POST", "/v1/admin/applications/"+app.ID+"/rotate-secret", a.Bootstrap, nil)
	if r := a.JSON(t, "GET", "/v1/users/alice/devices", app.Secret, nil); r.Status != 401 {
		t.Fatalf("a accepted the rotated secret: %d", r.Status)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := b.JSON(t, "GET", "/v1/users/alice/devices", app.Secret, nil)
		if r.Status == 401 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b still accepts the rotated secret after 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
