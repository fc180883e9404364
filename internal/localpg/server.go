package localpg

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Start starts the server on 127.0.0.1 and a free port, or adopts a server
// already running for Dir (e.g. left behind by a crashed process).
func (c *Cluster) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	exists, err := c.hasCluster()
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("cluster directory %s holds no PostgreSQL cluster (no %s): call Init first", c.dir, versionFile)
	}
	prefix, err := c.commandPrefix(ctx)
	if err != nil {
		return err
	}

	if port, ok, err := c.adoptRunning(ctx, prefix); err != nil {
		return err
	} else if ok {
		c.port = port
		return nil
	}

	c.rotateLog()
	logPath := filepath.Join(c.dir, logFileName)
	for attempt := 1; ; attempt++ {
		port, err := c.pickPort()
		if err != nil {
			return fmt.Errorf("start PostgreSQL in %s: pick a free port on 127.0.0.1: %w", c.dir, err)
		}
		logOffset := fileSize(logPath)
		began := time.Now()
		out, err := c.run(ctx, prefix, "pg_ctl",
			"-D", c.dir, "-l", logPath, "-w", "-t", strconv.Itoa(int(startTimeout.Seconds())),
			"-o", c.serverOptions(port), "start")
		if err == nil {
			c.port = port
			c.log.Info("started PostgreSQL", "port", port, "duration", time.Since(began).Round(time.Millisecond))
			return nil
		}

		newLog := readLogSince(logPath, logOffset)
		if ctx.Err() == nil && attempt < startAttempts {
			if delay, ok := retryableStartFailure(newLog); ok {
				c.log.Warn("PostgreSQL failed to start, retrying", "port", port, "attempt", attempt, "reason", firstLineWith(newLog, "FATAL"))
				if err := sleepCtx(ctx, delay); err != nil {
					return fmt.Errorf("start PostgreSQL in %s: %w", c.dir, err)
				}
				continue
			}
		}

		// Another process may have started the server for Dir at the same
		// moment ("already exists" or, in a narrow window, "is empty").
		if ctx.Err() == nil && strings.Contains(string(newLog), `lock file "postmaster.pid"`) {
			port, ok, adoptErr := c.adoptRunning(ctx, prefix)
			if adoptErr != nil {
				return fmt.Errorf("start PostgreSQL in %s: %w", c.dir, adoptErr)
			}
			if ok {
				c.port = port
				return nil
			}
			if attempt < startAttempts {
				continue
			}
		}

		logLines := lastLines(newLog, logTailLines)
		if logLines == "" {
			logLines = "(no new output; earlier lines follow)\n" + lastLines(readLogSince(logPath, 0), logTailLines)
		}
		return fmt.Errorf("start PostgreSQL in %s on port %d: pg_ctl: %w: %s\nlast lines of %s:\n%s",
			c.dir, port, err, strings.TrimSpace(string(out)), logPath, logLines)
	}
}

// serverOptions builds the pg_ctl -o string. pg_ctl runs it through /bin/sh;
// New has restricted setting names and values to shell-inert characters.
func (c *Cluster) serverOptions(port int) string {
	opts := []string{
		"-p", strconv.Itoa(port),
		"-c", "listen_addresses=127.0.0.1",
		// Empty: no unix socket, so long Dir paths never hit the 107-byte limit.
		"-c", "unix_socket_directories=",
	}
	for _, k := range slices.Sorted(maps.Keys(c.settings)) {
		opts = append(opts, "-c", k+"="+c.settings[k])
	}
	return strings.Join(opts, " ")
}

// retryableStartFailure reports whether a start failure is transient: the
// port was taken between picking and binding it, or children of a killed
// postmaster still hold the old shared memory for a moment.
func retryableStartFailure(log []byte) (time.Duration, bool) {
	s := string(log)
	switch {
	case strings.Contains(s, "could not bind"), strings.Contains(s, "Address already in use"),
		strings.Contains(s, "could not create any TCP/IP sockets"):
		return 0, true
	case strings.Contains(s, "pre-existing shared memory block"):
		return time.Second, true
	}
	return 0, false
}

// adoptRunning checks for a postmaster already serving Dir. It returns its
// port and true when one is running and ready, waiting while it is starting
// or stopping. A stale postmaster.pid is left for pg_ctl start to handle,
// except when its PID is a zombie or an unrelated process (which PostgreSQL
// itself would mistake for a live server) or it stays empty (the remnant of a
// crash during startup, which PostgreSQL refuses to judge).
func (c *Cluster) adoptRunning(ctx context.Context, prefix []string) (int, bool, error) {
	pidPath := filepath.Join(c.dir, pidFileName)
	readyDeadline := time.Now().Add(startTimeout)
	var malformedSince time.Time
	for {
		if _, err := os.Stat(pidPath); errors.Is(err, fs.ErrNotExist) {
			return 0, false, nil
		}
		out, statusErr := c.run(ctx, prefix, "pg_ctl", "status", "-D", c.dir)
		if exitCode(statusErr) == 3 { // not running; the pid file is stale
			return 0, false, nil
		}
		pf, err := readPidFile(pidPath)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return 0, false, nil // it stopped meanwhile
		case errors.Is(err, errMalformedPidFile):
			// A starting server creates the file and fills it a moment later.
			if malformedSince.IsZero() {
				malformedSince = time.Now()
			} else if time.Since(malformedSince) > 5*time.Second {
				if err := c.removeStalePidFile(ctx, pidPath, 0); err != nil {
					return 0, false, err
				}
				return 0, false, nil
			}
		case err != nil:
			return 0, false, fmt.Errorf("read %s: %w", pidPath, err)
		case statusErr != nil:
			return 0, false, fmt.Errorf("check whether PostgreSQL is running in %s: pg_ctl status: %w: %s",
				c.dir, statusErr, strings.TrimSpace(string(out)))
		default:
			malformedSince = time.Time{}
			switch processState(pf.pid, c.dir) {
			case procGone, procZombie, procUnrelated:
				if err := c.removeStalePidFile(ctx, pidPath, pf.pid); err != nil {
					return 0, false, err
				}
				return 0, false, nil
			}
			if pf.status == "" || pf.status == "ready" || pf.status == "standby" {
				if pf.port <= 0 {
					return 0, false, fmt.Errorf("PostgreSQL is running in %s (PID %d) but %s has no port", c.dir, pf.pid, pidPath)
				}
				c.log.Info("adopted running PostgreSQL", "pid", pf.pid, "port", pf.port)
				return pf.port, true, nil
			}
			// "starting" or "stopping": wait until it is ready or gone.
			if time.Now().After(readyDeadline) {
				return 0, false, fmt.Errorf("PostgreSQL is running in %s (PID %d) but still %q after %s", c.dir, pf.pid, pf.status, startTimeout)
			}
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return 0, false, fmt.Errorf("wait for running PostgreSQL in %s: %w", c.dir, err)
		}
	}
}

// removeStalePidFile removes a postmaster.pid whose PID (0: unreadable) is
// no longer a postmaster for Dir, after making sure no orphaned backend still
// runs in Dir: the pid file is what lets PostgreSQL detect those itself.
func (c *Cluster) removeStalePidFile(ctx context.Context, pidPath string, pid int) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := processesInDir(c.dir)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("PostgreSQL processes %v from a crashed server are still running in %s: stop them before starting", left, c.dir)
		}
		if err := sleepCtx(ctx, 100*time.Millisecond); err != nil {
			return fmt.Errorf("wait for crashed PostgreSQL processes in %s to exit: %w", c.dir, err)
		}
	}
	if err := os.Remove(pidPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale %s (no running postmaster behind it): %w", pidPath, err)
	}
	if pid > 0 {
		c.log.Warn("removed stale postmaster.pid", "pid", pid)
	} else {
		c.log.Warn("removed empty postmaster.pid left by a crashed startup")
	}
	return nil
}

// Stop shuts the server down (fast mode) and waits for it. It is a no-op when
// the server is not running.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()

	pidPath := filepath.Join(c.dir, pidFileName)
	pf, err := readPidFile(pidPath)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, errNotDir) {
		c.port = 0
		return nil
	}
	// An unreadable pid file is left to pg_ctl to judge.
	if err == nil {
		switch processState(pf.pid, c.dir) {
		case procGone, procZombie, procUnrelated:
			// Nothing to stop; pg_ctl would wait in vain on a zombie.
			c.port = 0
			return nil
		}
	}

	prefix, err := c.commandPrefix(ctx)
	if err != nil {
		return err
	}
	out, err := c.run(ctx, prefix, "pg_ctl", "stop", "-D", c.dir, "-m", "fast", "-w",
		"-t", strconv.Itoa(int(startTimeout.Seconds())))
	if err != nil {
		// Lost a race with another stop, or the server died on its own.
		if _, statErr := os.Stat(pidPath); errors.Is(statErr, fs.ErrNotExist) {
			c.port = 0
			return nil
		}
		return fmt.Errorf("stop PostgreSQL in %s: pg_ctl: %w: %s", c.dir, err, strings.TrimSpace(string(out)))
	}
	c.port = 0
	c.log.Info("stopped PostgreSQL")
	return nil
}

// freePort asks the kernel for an unused port on 127.0.0.1. Another process
// may grab it before postgres binds it; Start retries in that case.
func freePort() (int, error) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
