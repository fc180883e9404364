package localpg

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
)

var requiredBinaries = []string{"initdb", "pg_ctl", "postgres"}

// binDirGlobs are the usual per-version install locations (Debian/Ubuntu,
// then RHEL/PGDG). Within a pattern the newest major version wins.
var binDirGlobs = []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"}

// FindBinDir returns the directory holding initdb, pg_ctl and postgres.
//
// pg_config --bindir is preferred when it holds all three; on Debian it often
// points at the client-only /usr/bin, hence the fallbacks.
func FindBinDir() (string, error) {
	var looked []string
	try := func(dir string) bool {
		looked = append(looked, dir)
		return len(missingBinaries(dir)) == 0
	}

	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" && try(dir) {
			return dir, nil
		}
	}
	for _, pattern := range binDirGlobs {
		dirs, _ := filepath.Glob(pattern) // only fails on a malformed pattern
		sortByVersionDesc(dirs)
		if len(dirs) == 0 {
			looked = append(looked, pattern)
		}
		for _, dir := range dirs {
			if try(dir) {
				return dir, nil
			}
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		if dir := filepath.Dir(p); try(dir) {
			return dir, nil
		}
	} else {
		looked = append(looked, "$PATH")
	}
	return "", fmt.Errorf("PostgreSQL binaries not found (looked in %s): install PostgreSQL 13 or newer",
		strings.Join(looked, ", "))
}

// sortByVersionDesc orders .../<major>/bin (or /usr/pgsql-<major>/bin) paths
// newest first, numerically so that 9.6 < 13 < 15.
func sortByVersionDesc(dirs []string) {
	version := func(dir string) float64 {
		v := filepath.Base(filepath.Dir(dir))
		v = strings.TrimPrefix(v, "pgsql-")
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return -1
		}
		return f
	}
	sort.SliceStable(dirs, func(i, j int) bool { return version(dirs[i]) > version(dirs[j]) })
}

// missingBinaries lists the required programs not present as executable
// files in dir.
func missingBinaries(dir string) []string {
	var missing []string
	for _, name := range requiredBinaries {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	return missing
}
