package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pushmfa/pushmfa/internal/authenticator"
	"github.com/pushmfa/pushmfa/internal/client"
	"github.com/pushmfa/pushmfa/internal/localpg"
	"github.com/pushmfa/pushmfa/internal/wire"
)

// stack is one measurement's private PostgreSQL cluster, the server on it
// as a child process (so its CPU time is its own), and a tenant set up for
// load: no guard limits in the way.
type stack struct {
	dir      string
	password string
	cluster  *localpg.Cluster
	admin    *pgx.Conn // superuser, database postgres
	stmts    *pgx.Conn // with -statements: database pushmfa, else nil
	srv      *exec.Cmd
	base     string
	httpc    *http.Client
	adm, rp  *client.Client // the bootstrap admin; the application
	cleanups []func()
}

// start sets up a stack; env is added to the server's environment.
func start(ctx context.Context, o options, env ...string) (st *stack, err error) {
	st = &stack{}
	defer func() {
		if err != nil {
			st.close()
		}
	}()
	// A private cluster with the server's own durable settings.
	if st.dir, err = os.MkdirTemp("", "mfabench"); err != nil {
		return st, err
	}
	st.defer_(func() { os.RemoveAll(st.dir) })
	_ = os.Chmod(st.dir, 0o755)
	st.password = randomB64(24)
	settings := map[string]string{"max_connections": "200"}
	if o.push {
		// The push bench times pushes from each challenge's commit.
		settings["track_commit_timestamp"] = "on"
	}
	if o.statements {
		settings["shared_preload_libraries"] = "pg_stat_statements"
	}
	maps.Copy(settings, o.pgSettings)
	st.cluster, err = localpg.New(localpg.Options{Dir: filepath.Join(st.dir, "pg"), Password: st.password,
		Settings: settings, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return st, err
	}
	if _, err := st.cluster.Init(ctx); err != nil {
		return st, err
	}
	if err := st.cluster.Start(ctx); err != nil {
		return st, err
	}
	st.defer_(func() { _ = st.cluster.Stop(context.Background()) })
	if st.admin, err = pgx.Connect(ctx, st.cluster.URL("postgres")); err != nil {
		return st, err
	}
	st.defer_(func() { st.admin.Close(context.Background()) })
	if _, err := st.admin.Exec(ctx, `CREATE DATABASE pushmfa`); err != nil {
		return st, err
	}
	if o.statements {
		if st.stmts, err = pgx.Connect(ctx, st.cluster.URL("pushmfa")); err != nil {
			return st, err
		}
		st.defer_(func() { st.stmts.Close(context.Background()) })
		if _, err := st.stmts.Exec(ctx, `CREATE EXTENSION IF NOT EXISTS pg_stat_statements`); err != nil {
			return st, err
		}
	}

	// The server, as a child process, so its CPU time is its own.
	bootstrap := "bootstrap-" + randomB64(32)
	st.srv = exec.Command(o.server)
	dbURL := st.cluster.URL("pushmfa")
	if o.dbParams != "" {
		dbURL += "&" + o.dbParams
	}
	st.srv.Env = append(os.Environ(), "DATABASE_URL="+dbURL, "MASTER_KEY="+randomB64(32),
		"LISTEN_ADDR=127.0.0.1:0", "BOOTSTRAP_ADMIN_TOKEN="+bootstrap, "LOG_LEVEL=info")
	if o.profile != "" {
		st.srv.Env = append(st.srv.Env, "PPROF_ADDR=127.0.0.1:6061")
	}
	st.srv.Env = append(append(st.srv.Env, env...), o.serverEnv...)
	stderr, err := st.srv.StderrPipe()
	if err != nil {
		return st, err
	}
	if err := st.srv.Start(); err != nil {
		return st, err
	}
	st.defer_(func() { _ = st.srv.Process.Kill(); _ = st.srv.Wait() })
	addr, err := serving(stderr, o.serverLog)
	if err != nil {
		return st, err
	}
	st.base = "http://" + addr
	transport := &http.Transport{MaxIdleConnsPerHost: 4 * o.concurrency, MaxIdleConns: 8 * o.concurrency}
	st.httpc = &http.Client{Transport: transport, Timeout: 90 * time.Second}

	// A tenant set up for load: no guard limits in the way.
	st.adm = client.New(st.base, bootstrap)
	st.adm.HTTP = st.httpc
	app, err := st.adm.CreateApplication(ctx, client.NewApplication{Name: "bench"})
	if err != nil {
		return st, err
	}
	patch := map[string]json.RawMessage{"challenges_per_window": raw(1000000), "challenge_window_seconds": raw(1),
		"max_pending_challenges": raw(1000), "challenge_ttl_seconds": raw(120)}
	if _, err := st.adm.PatchPolicy(ctx, "default", patch); err != nil {
		return st, err
	}
	st.rp = client.New(st.base, app.Secret)
	st.rp.HTTP = st.httpc
	return st, nil
}

// defer_ registers a cleanup; close runs them in reverse.
func (st *stack) defer_(f func()) { st.cleanups = append(st.cleanups, f) }

func (st *stack) close() {
	for i := len(st.cleanups) - 1; i >= 0; i-- {
		st.cleanups[i]()
	}
	st.cleanups = nil
}

// enroll enrolls a device for user (created if new) with the reference
// authenticator; o's Name, Platform and HTTP default to the bench's.
func (st *stack) enroll(ctx context.Context, user string, o authenticator.EnrollOptions) (*authenticator.Device, error) {
	var en wire.Enrollment
	if err := st.adm.Do(ctx, "POST", "/v1/admin/users/"+user+"/enrollments", nil, &en); err != nil {
		return nil, err
	}
	if o.Name == "" {
		o.Name = "bench"
	}
	if o.Platform == "" {
		o.Platform = "bench"
	}
	if o.HTTP == nil {
		o.HTTP = st.httpc
	}
	return authenticator.Enroll(ctx, en.URI, o)
}
