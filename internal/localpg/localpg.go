// Package localpg manages a private PostgreSQL cluster on the local machine
// using the PostgreSQL binaries installed there. The server uses it when no
// DATABASE_URL is configured, and tests use it for throwaway clusters.
//
// The cluster only listens on 127.0.0.1 (on a port picked at start) and has
// unix sockets disabled, so deep data directory paths never hit the socket
// path length limit.
//
// initdb and postgres refuse to run as root. When the calling process is
// root, the data directory is owned by the "postgres" user and every
// PostgreSQL command runs as that user (via runuser, or via setpriv with
// CAP_DAC_READ_SEARCH when a parent directory is not traversable by it).
package localpg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	superuser     = "postgres" // database superuser and, as root, the OS user
	logFileName   = "postgres.log"
	pidFileName   = "postmaster.pid"
	versionFile   = "PG_VERSION"
	startTimeout  = 60 * time.Second
	startAttempts = 3
	logTailLines  = 20
)

// Options configures a Cluster.
type Options struct {
	Dir      string            // cluster data directory; created (with parents) if missing
	BinDir   string            // optional; FindBinDir() when empty
	Password string            // superuser ("postgres") password; empty => trust auth (throwaway test clusters only)
	Settings map[string]string // extra server settings passed at start as -c key=value
	Logger   *slog.Logger      // may be nil => discard
}

// Cluster is a PostgreSQL cluster in a local data directory. Its methods are
// safe for concurrent use.
type Cluster struct {
	dir      string
	binDir   string
	password string
	settings map[string]string
	log      *slog.Logger

	pickPort func() (int, error) // freePort; replaced in tests

	mu            sync.Mutex
	port          int  // 0 until Start succeeds; reset by Stop
	setprivLogged bool // the setpriv fallback is logged once per Cluster
}

// Settings are handed to pg_ctl -o, which the postmaster start command runs
// through /bin/sh, so only characters that are inert in a shell word are
// allowed.
var (
	settingKeyRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.]*$`)
	settingValueRE = regexp.MustCompile(`^[A-Za-z0-9_.,:/+=@%-]*$`)
)

// managedSettings are set by Start itself; overriding them would break the
// port bookkeeping or re-enable unix sockets.
var managedSettings = []string{"port", "listen_addresses", "unix_socket_directories"}

// New validates opts and returns a Cluster. It does not touch the data
// directory.
func New(opts Options) (*Cluster, error) {
	if strings.TrimSpace(opts.Dir) == "" {
		return nil, errors.New("localpg: cluster directory (Options.Dir) is empty")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("localpg: resolve cluster directory %s: %w", opts.Dir, err)
	}

	binDir := opts.BinDir
	if binDir == "" {
		if binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	} else {
		if binDir, err = filepath.Abs(binDir); err != nil {
			return nil, fmt.Errorf("localpg: resolve PostgreSQL binary directory %s: %w", opts.BinDir, err)
		}
		if missing := missingBinaries(binDir); len(missing) > 0 {
			return nil, fmt.Errorf("PostgreSQL binaries not found in %s (missing %s): install PostgreSQL 13 or newer or fix BinDir",
				binDir, strings.Join(missing, ", "))
		}
	}

	// initdb reads the password from the first line of --pwfile.
	if strings.ContainsAny(opts.Password, "\r\n\x00") {
		return nil, errors.New("localpg: password must not contain line breaks or NUL bytes")
	}

	for k, v := range opts.Settings {
		if err := validateSetting(k, v); err != nil {
			return nil, err
		}
	}

	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Cluster{
		dir:      dir,
		binDir:   binDir,
		password: opts.Password,
		settings: maps.Clone(opts.Settings),
		log:      logger.With("component", "localpg", "dir", dir),
		pickPort: freePort,
	}, nil
}

func validateSetting(key, value string) error {
	if !settingKeyRE.MatchString(key) {
		return fmt.Errorf("localpg: invalid setting name %q: only letters, digits, '_' and '.' are allowed", key)
	}
	for _, m := range managedSettings {
		if strings.EqualFold(key, m) {
			return fmt.Errorf("localpg: setting %q is managed by localpg and cannot be overridden", key)
		}
	}
	if !settingValueRE.MatchString(value) {
		return fmt.Errorf("localpg: invalid value %q for setting %q: only letters, digits and _.,:/+=@%%- are allowed (no quotes, whitespace or shell characters)", value, key)
	}
	return nil
}

// Dir returns the absolute cluster data directory.
func (c *Cluster) Dir() string { return c.dir }

// Port returns the TCP port the server listens on, or 0 when it has not been
// started (or adopted) by this Cluster.
func (c *Cluster) Port() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.port
}

// URL returns a connection URL for database as the superuser.
func (c *Cluster) URL(database string) string {
	return c.URLFor(superuser, c.password, database)
}

// URLFor returns a connection URL for database as another role. With a
// password, the URL insists on SCRAM (require_auth), so a process that took
// over the port of a dead cluster cannot ask for the password in clear.
func (c *Cluster) URLFor(user, password, database string) string {
	q := url.Values{"sslmode": {"disable"}}
	u := url.URL{
		Scheme: "postgres",
		Host:   "127.0.0.1:" + strconv.Itoa(c.Port()),
		Path:   "/" + database,
		User:   url.User(user),
	}
	if password != "" {
		u.User = url.UserPassword(user, password)
		q.Set("require_auth", "scram-sha-256")
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Init creates the cluster with initdb unless Dir already holds one
// (PG_VERSION present). created reports whether initdb ran. An existing
// cluster is left as is: its password and authentication method are whatever
// it was created with.
func (c *Cluster) Init(ctx context.Context) (created bool, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	exists, err := c.hasCluster()
	if err != nil || exists {
		return false, err
	}
	if err := c.prepareDir(); err != nil {
		return false, err
	}
	prefix, err := c.commandPrefix(ctx)
	if err != nil {
		return false, err
	}

	args := []string{"-D", c.dir, "-U", superuser, "-E", "UTF8", "--no-locale"}
	if c.password != "" {
		pwfile, cleanup, err := c.writePasswordFile()
		if err != nil {
			return false, err
		}
		defer cleanup()
		args = append(args, "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--pwfile="+pwfile)
	} else {
		args = append(args, "--auth=trust")
	}

	began := time.Now()
	out, err := c.run(ctx, prefix, "initdb", args...)
	if err != nil {
		return false, fmt.Errorf("initdb for cluster directory %s failed: %w\n%s", c.dir, err, lastLines(out, logTailLines))
	}
	c.log.Info("initialised PostgreSQL cluster", "duration", time.Since(began).Round(time.Millisecond))
	return true, nil
}

func (c *Cluster) hasCluster() (bool, error) {
	_, err := os.Stat(filepath.Join(c.dir, versionFile))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return false, nil
	default:
		return false, fmt.Errorf("cannot access cluster directory %s: %w", c.dir, err)
	}
}

// prepareDir creates Dir (parents 0755, Dir itself 0700), hands it to the
// postgres user when running as root, and checks that it is empty and
// writable so initdb failures are not the first sign of trouble.
func (c *Cluster) prepareDir() error {
	info, err := os.Stat(c.dir)
	switch {
	case err == nil:
		if !info.IsDir() {
			return fmt.Errorf("cluster directory %s exists but is not a directory", c.dir)
		}
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(filepath.Dir(c.dir), 0o755); err != nil {
			return fmt.Errorf("cannot create cluster directory %s: %w", c.dir, err)
		}
		if err := os.Mkdir(c.dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("cannot create cluster directory %s: %w", c.dir, err)
		}
	default:
		return fmt.Errorf("cannot access cluster directory %s: %w", c.dir, err)
	}

	if isRoot() {
		uid, gid, err := postgresIDs()
		if err != nil {
			return err
		}
		if err := os.Chown(c.dir, uid, gid); err != nil {
			return fmt.Errorf("cluster directory %s is not writable: %w", c.dir, err)
		}
	}
	// initdb insists on 0700 or 0750.
	if err := os.Chmod(c.dir, 0o700); err != nil {
		return fmt.Errorf("cluster directory %s is not writable: cannot set mode 0700: %w", c.dir, err)
	}

	empty, err := dirIsEmpty(c.dir)
	if err != nil {
		return fmt.Errorf("cannot read cluster directory %s: %w", c.dir, err)
	}
	if !empty {
		return fmt.Errorf("cluster directory %s is not empty but holds no PostgreSQL cluster (no %s): refusing to initialise it", c.dir, versionFile)
	}

	probe, err := os.CreateTemp(c.dir, ".localpg-probe-*")
	if err != nil {
		return fmt.Errorf("cluster directory %s is not writable: %w", c.dir, err)
	}
	probe.Close()
	if err := os.Remove(probe.Name()); err != nil {
		return fmt.Errorf("cluster directory %s is not writable: %w", c.dir, err)
	}
	return nil
}

func dirIsEmpty(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if len(names) > 0 {
		return false, nil
	}
	if err != nil && !errors.Is(err, io.EOF) {
		return false, err
	}
	return true, nil
}

// writePasswordFile writes the superuser password for initdb --pwfile. As
// root the file goes next to Dir (reachable by the postgres user whenever Dir
// is) and is owned by postgres; otherwise it goes to the temp directory.
// Either way it is mode 0600 and removed by cleanup.
func (c *Cluster) writePasswordFile() (path string, cleanup func(), err error) {
	dir := ""
	if isRoot() {
		dir = filepath.Dir(c.dir)
	}
	f, err := os.CreateTemp(dir, ".localpg-pwfile-*")
	if err != nil {
		return "", nil, fmt.Errorf("create initdb password file next to %s: %w", c.dir, err)
	}
	cleanup = func() {
		if err := os.Remove(f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
			c.log.Warn("could not remove initdb password file", "path", f.Name(), "err", err)
		}
	}
	fail := func(err error) (string, func(), error) {
		f.Close()
		cleanup()
		return "", nil, fmt.Errorf("write initdb password file %s: %w", f.Name(), err)
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(err)
	}
	if isRoot() {
		uid, gid, err := postgresIDs()
		if err != nil {
			f.Close()
			cleanup()
			return "", nil, err
		}
		if err := f.Chown(uid, gid); err != nil {
			return fail(err)
		}
	}
	if _, err := f.WriteString(c.password + "\n"); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("write initdb password file %s: %w", f.Name(), err)
	}
	return f.Name(), cleanup, nil
}
