package localpg

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func isRoot() bool { return os.Geteuid() == 0 }

// postgresIDs returns the uid and gid of the OS user that owns the cluster
// when we run as root.
func postgresIDs() (uid, gid int, err error) {
	u, err := user.Lookup(superuser)
	if err != nil {
		return 0, 0, fmt.Errorf("running as root, but PostgreSQL refuses to run as root and the %q OS user to run it as was not found: %w", superuser, err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("unexpected uid %q for OS user %q: %w", u.Uid, superuser, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("unexpected gid %q for OS user %q: %w", u.Gid, superuser, err)
	}
	return uid, gid, nil
}

// commandPrefix returns the argv prefix that runs a PostgreSQL program as the
// right user: nothing when not root; runuser when the postgres user can reach
// Dir; otherwise setpriv with CAP_DAC_READ_SEARCH, which lets the postgres
// processes traverse root-only ancestors (e.g. a 0700 temp directory) without
// changing their permissions. Dir must already exist.
func (c *Cluster) commandPrefix(ctx context.Context) ([]string, error) {
	if !isRoot() {
		return nil, nil
	}
	if _, _, err := postgresIDs(); err != nil {
		return nil, err
	}
	runuser, err := exec.LookPath("runuser")
	if err != nil {
		return nil, fmt.Errorf("running as root, but runuser (util-linux) is not installed to run PostgreSQL as %q: %w", superuser, err)
	}
	probe := []string{runuser, "-u", superuser, "--", "test", "-x", c.dir, "-a", "-w", c.dir}
	out, err := runCommand(ctx, probe)
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return []string{runuser, "-u", superuser, "--"}, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() == 1:
		// test(1) said no: some ancestor is not traversable by postgres.
	default:
		return nil, fmt.Errorf("check access of OS user %q to cluster directory %s: %w: %s", superuser, c.dir, err, strings.TrimSpace(string(out)))
	}

	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return nil, fmt.Errorf("cluster directory %s is not reachable by OS user %q (a parent directory is not traversable) and setpriv (util-linux) is not installed: %w", c.dir, superuser, err)
	}
	if !c.setprivLogged {
		c.setprivLogged = true
		c.log.Info("cluster directory is not reachable by the postgres OS user through its parent directories; running PostgreSQL via setpriv with CAP_DAC_READ_SEARCH instead of changing their permissions",
			"user", superuser)
	}
	return []string{setpriv,
		"--reuid=" + superuser, "--regid=" + superuser, "--init-groups",
		"--inh-caps=+dac_read_search", "--ambient-caps=+dac_read_search", "--"}, nil
}

// run runs the PostgreSQL program tool from BinDir behind prefix and returns
// its combined output.
func (c *Cluster) run(ctx context.Context, prefix []string, tool string, args ...string) ([]byte, error) {
	argv := make([]string, 0, len(prefix)+1+len(args))
	argv = append(argv, prefix...)
	argv = append(argv, filepath.Join(c.binDir, tool))
	argv = append(argv, args...)
	c.log.Debug("running", "argv", argv)
	return runCommand(ctx, argv)
}

func runCommand(ctx context.Context, argv []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// The postgres user may not be able to access our working directory.
	cmd.Dir = "/"
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	// SIGTERM lets runuser pass the signal on to its child; SIGKILL follows
	// after WaitDelay. WaitDelay also bounds waiting for the output pipes
	// should a daemonised child ever keep them open.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	return out.Bytes(), err
}

// cleanEnv drops PG* variables (PGDATA, PGPORT, PGCTLTIMEOUT, ...) so the
// caller's environment cannot redirect the commands to another cluster.
func cleanEnv() []string {
	env := os.Environ()
	kept := env[:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, "PG") {
			kept = append(kept, kv)
		}
	}
	return kept
}

func exitCode(err error) int {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode()
	}
	return -1
}
