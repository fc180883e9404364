package localpg

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

var (
	errNotDir           = syscall.ENOTDIR
	errMalformedPidFile = errors.New("malformed postmaster.pid")
)

// pidFile is the part of postmaster.pid we use. Its layout (PostgreSQL 10+):
// PID, data dir, start time, port, socket dir, listen address, shmem key,
// status.
type pidFile struct {
	pid    int
	port   int
	status string // "starting", "stopping", "ready", "standby"; "" if absent
}

func readPidFile(path string) (pidFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return pidFile{}, err
	}
	lines := strings.Split(string(data), "\n")
	line := func(n int) string {
		if n <= len(lines) {
			return strings.TrimSpace(lines[n-1])
		}
		return ""
	}
	var pf pidFile
	pid, err := strconv.Atoi(line(1))
	if err != nil || pid == 0 {
		return pidFile{}, fmt.Errorf("%w %s: bad PID line %q", errMalformedPidFile, path, line(1))
	}
	// A negative PID marks a single-user backend.
	pf.pid = max(pid, -pid)
	if p := line(4); p != "" {
		if pf.port, err = strconv.Atoi(p); err != nil {
			return pidFile{}, fmt.Errorf("%w %s: bad port line %q", errMalformedPidFile, path, p)
		}
	}
	pf.status = line(8)
	return pf, nil
}

type procState int

const (
	procUnknown   procState = iota // cannot tell (no /proc, no permission); trust pg_ctl
	procAlive                      // a live process whose working directory is Dir
	procGone                       // no such process
	procZombie                     // exited but not reaped (e.g. under a PID 1 that never reaps)
	procUnrelated                  // PID reused by a process not running in Dir
)

// processState tells whether pid is a live PostgreSQL process for dir, using
// Linux /proc: postgres processes chdir to their data directory. pg_ctl's
// kill(pid, 0) check alone is fooled by zombies and reused PIDs.
func processState(pid int, dir string) procState {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			if _, selfErr := os.Stat("/proc/self/stat"); selfErr == nil {
				return procGone
			}
		}
		return procUnknown
	}
	// Format: "pid (comm) state ..."; comm may contain spaces and parentheses.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 {
		if fields := strings.Fields(string(stat[i+1:])); len(fields) > 0 {
			if fields[0] == "Z" || fields[0] == "X" {
				return procZombie
			}
		}
	}
	cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
	if err != nil {
		return procUnknown
	}
	if cwd != realPath(dir) {
		return procUnrelated
	}
	return procAlive
}

// processesInDir lists live processes (other than ours) whose working
// directory is dir: backends that survived a killed postmaster.
func processesInDir(dir string) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	want := realPath(dir)
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if cwd, err := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || cwd != want {
			continue
		}
		if processState(pid, dir) == procAlive {
			pids = append(pids, pid)
		}
	}
	slices.Sort(pids)
	return pids
}

func realPath(p string) string {
	if r, err := filepath.EvalSymlinks(p); err == nil {
		return r
	}
	return p
}

// maxLogSize bounds postgres.log across restarts; it is rotated at start
// because the server itself appends to it without limit.
const maxLogSize = 64 << 20

func (c *Cluster) rotateLog() {
	path := filepath.Join(c.dir, logFileName)
	if fileSize(path) <= maxLogSize {
		return
	}
	if err := os.Rename(path, path+".1"); err != nil {
		c.log.Warn("could not rotate PostgreSQL log", "path", path, "err", err)
		return
	}
	c.log.Info("rotated PostgreSQL log", "path", path, "old", path+".1")
}

func fileSize(path string) int64 {
	info, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return info.Size()
}

// readLogSince returns what was appended to path after offset, at most the
// last 64 KiB of it. Errors yield nil: the log only decorates other errors.
func readLogSince(path string, offset int64) []byte {
	const maxRead = 64 << 10
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return nil
	}
	size := info.Size()
	if offset > size { // rotated or truncated meanwhile
		offset = 0
	}
	offset = max(offset, size-maxRead)
	buf := make([]byte, size-offset)
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil
	}
	return buf[:n]
}

// lastLines returns the last n lines of b, ignoring trailing blank space.
func lastLines(b []byte, n int) string {
	s := strings.TrimRight(string(b), " \t\r\n")
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// firstLineWith returns the first line of b containing substr, or its last
// line when none does.
func firstLineWith(b []byte, substr string) string {
	for line := range strings.Lines(string(b)) {
		if strings.Contains(line, substr) {
			return strings.TrimSpace(line)
		}
	}
	return lastLines(b, 1)
}
