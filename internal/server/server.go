// Package server wires the service together: the database (the embedded
// local cluster or DATABASE_URL), migrations, the River client, the HTTP API,
// and graceful shutdown. cmd/server is a thin main around Run; tests start a
// Server on 127.0.0.1:0.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/pushmfa/pushmfa/internal/api"
	"github.com/pushmfa/pushmfa/internal/challenge"
	"github.com/pushmfa/pushmfa/internal/config"
	"github.com/pushmfa/pushmfa/internal/jobs"
	"github.com/pushmfa/pushmfa/internal/localpg"
	"github.com/pushmfa/pushmfa/internal/metrics"
	"github.com/pushmfa/pushmfa/internal/notify"
	"github.com/pushmfa/pushmfa/internal/postgres"
	"github.com/pushmfa/pushmfa/internal/push"
	"github.com/pushmfa/pushmfa/internal/queue"
	"github.com/pushmfa/pushmfa/internal/seal"
	"github.com/pushmfa/pushmfa/internal/webhook"
)

// embeddedDatabase is the database the server uses in its own cluster.
const embeddedDatabase = "pushmfa"

// Server is a running service.
type Server struct {
	cfg       *config.Config
	logger    *slog.Logger
	cluster   *localpg.Cluster // nil with DATABASE_URL
	dataLock  *os.File
	pool      *pgxpool.Pool
	db        *postgres.DB
	river     *river.Client[pgx.Tx]
	metrics   *metrics.Metrics
	hub       *notify.Hub
	apps      *notify.Apps
	versions  postgres.SchemaVersions
	httpSrv   *http.Server
	metSrv    *http.Server
	addr      string
	publicURL string
	served    chan error
	draining  atomic.Bool
	cleanup   []func(context.Context) error
}

// Run starts the server and serves until ctx is cancelled (SIGINT/SIGTERM),
// then shuts down gracefully.
func Run(ctx context.Context, cfg *config.Config, logger *slog.Logger) error {
	s, err := Start(ctx, cfg, logger)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		logger.Info("shutting down", "timeout", cfg.ShutdownTimeout.String())
	case err = <-s.served:
		logger.Error("server stopped serving", "error", err)
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
	defer cancel()
	if serr := s.Shutdown(sctx); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// Start brings the service up and returns once it is listening. On error,
// everything already started is stopped again (the local cluster included).
func Start(ctx context.Context, cfg *config.Config, logger *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, logger: logger, served: make(chan error, 2)}
	defer func() {
		if err != nil {
			s.unwind(context.WithoutCancel(ctx))
		}
	}()

	// The push credentials first: a bad key file stops the server before
	// it starts a database.
	router, err := pushRouter(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	dbURL, masterKey := cfg.DatabaseURL, cfg.MasterKey
	if cfg.Embedded() {
		if dbURL, masterKey, err = s.startEmbedded(ctx); err != nil {
			return nil, err
		}
	}
	keys, err := seal.NewKeyring(masterKey, cfg.PreviousMasterKeys...)
	if err != nil {
		return nil, err
	}
	if s.versions, err = postgres.ExpectedVersions(); err != nil {
		return nil, err
	}
	if s.pool, err = postgres.Connect(ctx, dbURL, cfg.DatabaseConnectTimeout, logger); err != nil {
		return nil, err
	}
	s.defer_(func(context.Context) error { s.pool.Close(); return nil })
	if err := postgres.Migrate(ctx, s.pool, logger); err != nil {
		return nil, err
	}
	s.db = postgres.New(s.pool, keys, logger)
	s.metrics = metrics.New()
	if err := s.metrics.RegisterPool(s.pool); err != nil {
		return nil, err
	}

	if err := s.metrics.RegisterPushQueue(func(ctx context.Context) (map[string]int64, error) {
		return s.db.QueueDepth(ctx, queue.QueuePush)
	}); err != nil {
		return nil, err
	}
	hooks := &webhook.Client{Allow: cfg.WebhookAllow}
	if cfg.WebhookAllowHTTPLoopback {
		hooks.Allow = append(hooks.Allow, netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128"))
	}
	if s.river, err = jobs.NewClient(jobs.Config{DB: s.db, Metrics: s.metrics, Logger: logger, Push: router, Webhook: hooks}); err != nil {
		return nil, err
	}
	s.db.UseQueue(s.river)
	s.background(ctx, s.db.RunWaker)
	// River runs until Stop; its start context must outlive this call.
	if err := s.river.Start(context.WithoutCancel(ctx)); err != nil {
		return nil, fmt.Errorf("start job queue: %w", err)
	}
	s.defer_(s.stopRiver)

	// One LISTEN connection per process wakes every long-poll.
	s.hub = notify.NewHub(100_000)
	if err := s.metrics.RegisterWaiters(s.hub.Waiting); err != nil {
		return nil, err
	}
	s.apps = notify.NewApps(time.Minute)
	s.background(ctx, s.db.NewListener(s.hub, s.apps).Run)

	// Challenges' pushes leave from this process the instant they commit;
	// River's jobs stand by for those it cannot send or record.
	dispatcher := jobs.NewDispatcher(jobs.Config{DB: s.db, Metrics: s.metrics, Logger: logger, Push: router,
		Settled: func(id string, now time.Time) bool {
			c, ok := s.hub.Lookup(id)
			return ok && c.EffectiveState(now) != challenge.StatePending
		}})
	s.db.UseDispatcher(dispatcher, jobs.DispatchGrace)
	s.background(ctx, dispatcher.Run)

	if err := s.serve(); err != nil {
		return nil, err
	}
	logger.Info("serving", "addr", s.addr, "public_url", s.publicURL, "embedded_database", cfg.Embedded(),
		"tls", cfg.TLSCertFile != "")
	return s, nil
}

func (s *Server) serve() error {
	ln, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR %s: %w", s.cfg.ListenAddr, err)
	}
	s.addr = ln.Addr().String()
	publicURL := s.cfg.PublicURL.String()
	if s.cfg.PublicURLDerived {
		// With port 0 (or a wildcard host) only the bound address is right.
		u := *s.cfg.PublicURL
		_, port, _ := net.SplitHostPort(s.addr)
		u.Host = net.JoinHostPort(u.Hostname(), port)
		publicURL = u.String()
	}
	s.publicURL = publicURL
	handler, err := api.New(api.Config{
		DB: s.db, Logger: s.logger, Metrics: s.metrics,
		BootstrapAdminToken:       s.cfg.BootstrapAdminToken,
		AuthFailureLimit:          s.cfg.AuthFailureLimit,
		Ready:                     s.ready,
		ServeMetrics:              s.cfg.MetricsAddr == "",
		AllowHTTPLoopbackWebhooks: s.cfg.WebhookAllowHTTPLoopback,
		TrustedProxies:            s.cfg.TrustedProxies,
		PublicURL:                 publicURL,
		Hub:                       s.hub,
		Apps:                      s.apps,
	})
	if err != nil {
		_ = ln.Close()
		return err
	}
	s.httpSrv = &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		// Long-polls hold a response for up to 60 s.
		WriteTimeout:   90 * time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	if s.cfg.TLSCertFile != "" {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLSCertFile, s.cfg.TLSKeyFile)
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("TLS_CERT_FILE: %w", err)
		}
		s.httpSrv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, s.httpSrv.TLSConfig)
	}
	go func() { s.served <- s.httpSrv.Serve(ln) }()
	s.defer_(drain(s.httpSrv))

	if s.cfg.PprofAddr != "" {
		pln, err := net.Listen("tcp", s.cfg.PprofAddr)
		if err != nil {
			return fmt.Errorf("PPROF_ADDR %s: %w", s.cfg.PprofAddr, err)
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { s.served <- psrv.Serve(pln) }()
		s.defer_(drain(psrv))
	}
	if s.cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", s.cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("METRICS_ADDR %s: %w", s.cfg.MetricsAddr, err)
		}
		s.metSrv = &http.Server{Handler: api.MetricsHandler(s.metrics), ReadHeaderTimeout: 10 * time.Second}
		go func() { s.served <- s.metSrv.Serve(mln) }()
		s.defer_(drain(s.metSrv))
	}
	return nil
}

// ready is /readyz: not while draining, and only with the database up and
// its schema exactly what this binary expects.
func (s *Server) ready(ctx context.Context) error {
	if s.draining.Load() {
		return errors.New("shutting down")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return s.db.CheckVersions(ctx, s.versions)
}

// Addr is the address the API listens on.
func (s *Server) Addr() string { return s.addr }

// DB exposes the store (for tests and tools built on the server).
func (s *Server) DB() *postgres.DB { return s.db }

// Hub returns what wakes this instance's long-polls (tests rewrite
// challenges behind its back and make it forget them).
func (s *Server) Hub() *notify.Hub { return s.hub }

// Shutdown stops accepting requests, drains those in flight, stops the job
// queue, closes the pool and stops the local cluster if this process
// started it.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	return s.unwind(ctx)
}

func (s *Server) defer_(f func(context.Context) error) { s.cleanup = append(s.cleanup, f) }

// background runs run until shutdown, which cancels its context and waits
// for it to return. Its context outlives ctx, which ends with Start.
func (s *Server) background(ctx context.Context, run func(context.Context)) {
	bctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); run(bctx) }()
	s.defer_(func(context.Context) error { stop(); <-done; return nil })
}

// drain stops an HTTP server gracefully within the shutdown budget, and
// closes what is still open when the budget runs out.
func drain(srv *http.Server) func(context.Context) error {
	return func(ctx context.Context) error {
		err := srv.Shutdown(ctx)
		if err != nil {
			_ = srv.Close()
		}
		return err
	}
}

// stopRiver lets running jobs finish, within a budget of its own, and
// cancels them when they do not (they are retried later: nothing is lost).
func (s *Server) stopRiver(ctx context.Context) error {
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.river.Stop(sctx); err == nil {
		return nil
	}
	cctx, cancel2 := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel2()
	return s.river.StopAndCancel(cctx)
}

// unwind runs the cleanups in reverse order of their setup.
func (s *Server) unwind(ctx context.Context) error {
	var errs []error
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		if err := s.cleanup[i](ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, err)
		}
	}
	s.cleanup = nil
	return errors.Join(errs...)
}

// serviceRole is the role the server uses in its own cluster: the owner of
// its database, not a superuser, so SQL injected anywhere could not read
// files or run programs on the host.
const serviceRole = "pushmfa"

// startEmbedded prepares DATA_DIR, its master key and the private cluster,
// and returns the cluster's URL and the master key.
func (s *Server) startEmbedded(ctx context.Context) (string, []byte, error) {
	dir := s.cfg.DataDir
	// 0711: the postgres OS user (when we run as root) can pass through to
	// its cluster directory without being able to list DATA_DIR; every
	// secret file in it is 0600.
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return "", nil, fmt.Errorf("DATA_DIR %s cannot be created: %w", dir, errors.Unwrap(err))
	}
	if err := checkOwnDir(dir); err != nil {
		return "", nil, err
	}
	if err := checkWritable(dir); err != nil {
		return "", nil, err
	}
	lock, err := lockDir(dir)
	if err != nil {
		return "", nil, err
	}
	s.dataLock = lock
	s.defer_(func(context.Context) error { return lock.Close() })

	key := s.cfg.MasterKey
	if key == nil {
		if key, err = loadOrCreateKey(filepath.Join(dir, "master.key")); err != nil {
			return "", nil, err
		}
	}
	superPassword, err := loadOrCreateSecretFile(filepath.Join(dir, "pg-password"))
	if err != nil {
		return "", nil, err
	}
	servicePassword, err := loadOrCreateSecretFile(filepath.Join(dir, "db-password"))
	if err != nil {
		return "", nil, err
	}
	cluster, err := localpg.New(localpg.Options{Dir: filepath.Join(dir, "pg"), BinDir: s.cfg.PGBinDir,
		Password: superPassword, Logger: s.logger})
	if err != nil {
		return "", nil, err
	}
	created, err := cluster.Init(ctx)
	if err != nil {
		return "", nil, err
	}
	if created {
		s.logger.Info("initialised the local database cluster", "dir", cluster.Dir())
	}
	if err := cluster.Start(ctx); err != nil {
		return "", nil, err
	}
	s.cluster = cluster
	s.defer_(func(ctx context.Context) error {
		// The cluster is stopped whatever happened to the shutdown budget
		// before: a fresh deadline, not the spent one.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		return cluster.Stop(ctx)
	})
	if err := ensureDatabase(ctx, cluster.URL("postgres"), embeddedDatabase, serviceRole, servicePassword); err != nil {
		return "", nil, err
	}
	return cluster.URLFor(serviceRole, servicePassword, embeddedDatabase), key, nil
}

// checkOwnDir refuses a DATA_DIR that someone else could have prepared: it
// must belong to us and be writable by nobody else, or its secrets (the
// master key, the database passwords) could be planted or read.
func checkOwnDir(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("DATA_DIR %s: %w", dir, errors.Unwrap(err))
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case !fi.IsDir():
		return fmt.Errorf("DATA_DIR %s is not a directory", dir)
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("DATA_DIR %s belongs to uid %d, not to this user (uid %d)", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o022 != 0:
		return fmt.Errorf("DATA_DIR %s is writable by group or others (mode %04o): chmod go-w it", dir, fi.Mode().Perm())
	}
	return nil
}

func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".write-test-*")
	if err != nil {
		return fmt.Errorf("DATA_DIR %s is not writable: %w", dir, errors.Unwrap(err))
	}
	name := f.Name()
	_ = f.Close()
	return os.Remove(name)
}

// lockDir takes an exclusive lock on DATA_DIR so two servers never share one
// local cluster (each would stop it under the other).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_CREATE|os.O_RDWR|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("DATA_DIR %s: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("DATA_DIR %s is in use by another server process", dir)
	}
	return f, nil
}

// loadOrCreateKey reads the generated master key, making it on first start.
func loadOrCreateKey(path string) ([]byte, error) {
	text, err := loadOrCreateSecretFile(path)
	if err != nil {
		return nil, err
	}
	key, err := base64.StdEncoding.DecodeString(text)
	if err != nil || len(key) != seal.KeySize {
		return nil, fmt.Errorf("%s does not hold a 32-byte base64 master key", path)
	}
	return key, nil
}

// loadOrCreateSecretFile reads a secret kept in DATA_DIR, or writes a fresh
// random one (32 bytes, base64) with mode 0600. An existing file must be a
// regular file (not a link), ours, and readable by nobody else.
func loadOrCreateSecretFile(path string) (string, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err == nil {
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return "", fmt.Errorf("%s: %w", path, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.Mode().IsRegular():
			return "", fmt.Errorf("%s is not a regular file", path)
		case ok && int(st.Uid) != os.Geteuid():
			return "", fmt.Errorf("%s belongs to uid %d, not to this user", path, st.Uid)
		case fi.Mode().Perm()&0o077 != 0:
			return "", fmt.Errorf("%s is readable by others (mode %04o): chmod 600 it", path, fi.Mode().Perm())
		}
		b, err := io.ReadAll(io.LimitReader(f, 4096))
		if err != nil {
			return "", fmt.Errorf("read %s: %w", path, err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("open %s: %w", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	text := base64.StdEncoding.EncodeToString(raw)
	f, err = os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("create %s: %w", path, err)
	}
	if _, err := f.WriteString(text + "\n"); err != nil {
		_ = f.Close()
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return text, f.Close()
}

// ensureDatabase makes the service's role (with the password from
// DATA_DIR) and its database, owned by that role, in the local cluster.
func ensureDatabase(ctx context.Context, adminURL, database, role, password string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return fmt.Errorf("connect to the local cluster: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var roleExists, dbExists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1),
		EXISTS (SELECT 1 FROM pg_database WHERE datname = $2)`, role, database).Scan(&roleExists, &dbExists); err != nil {
		return fmt.Errorf("inspect the local cluster: %w", err)
	}
	verb := "ALTER"
	if !roleExists {
		verb = "CREATE"
	}
	// Utility statements take no parameters: format() quotes both safely.
	var stmt string
	if err := conn.QueryRow(ctx, `SELECT format('`+verb+` ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', $1::text, $2::text)`,
		role, password).Scan(&stmt); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("set up role %s: %w", role, err)
	}
	if !dbExists {
		if _, err := conn.Exec(ctx, `CREATE DATABASE `+pgx.Identifier{database}.Sanitize()+` OWNER `+pgx.Identifier{role}.Sanitize()); err != nil {
			return fmt.Errorf("create database %s: %w", database, err)
		}
	}
	return nil
}

// pushRouter builds a provider for each push service with credentials; the
// others go to the logging provider (and their apps poll).
func pushRouter(ctx context.Context, cfg *config.Config, logger *slog.Logger) (push.Router, error) {
	r := push.Router{Log: push.LogProvider{Logger: logger}}
	if cfg.APNs.Enabled() {
		a, err := push.NewAPNs(push.APNsConfig{KeyFile: cfg.APNs.KeyFile, KeyID: cfg.APNs.KeyID, TeamID: cfg.APNs.TeamID,
			Topic: cfg.APNs.Topic, Endpoint: cfg.APNs.Endpoint})
		if err != nil {
			return r, err
		}
		r.APNs = a
	}
	if cfg.FCM.Enabled() {
		f, err := push.NewFCM(ctx, push.FCMConfig{CredentialsFile: cfg.FCM.CredentialsFile, ProjectID: cfg.FCM.ProjectID,
			Endpoint: cfg.FCM.Endpoint})
		if err != nil {
			return r, err
		}
		r.FCM = f
	}
	logger.Info("push providers", "apns", cfg.APNs.Enabled(), "fcm", cfg.FCM.Enabled())
	return r, nil
}
