package main_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/pushtest"
)

var (
	binary string
	ca     *pushtest.CA
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pushmfa-server-bin")
	if err != nil {
		panic(err)
	}
	// World-readable, so the binary can also run as an unprivileged user.
	if err := os.Chmod(dir, 0o755); err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "server")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build server: %v\n%s", err, out)
		os.Exit(1)
	}
	// The fake push providers' CA, in the system roots of this process and
	// (through SSL_CERT_FILE, passed on explicitly) of the servers it runs.
	if ca, err = pushtest.InstallCA(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

func key() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

// run starts the binary with only the given environment (plus PATH) and
// waits for it to exit.
func run(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		return exit.ExitCode(), out.String(), errb.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String(), errb.String()
}

func TestBadConfigurationExits(t *testing.T) {
	t.Parallel()
	badFile := filepath.Join(t.TempDir(), "junk")
	if err := os.WriteFile(badFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		code int
		want []string
	}{
		{"bad listen addr", map[string]string{"LISTEN_ADDR": "nonsense"}, 2, []string{"LISTEN_ADDR"}},
		{"short master key", map[string]string{"MASTER_KEY": "c2hvcnQ="}, 2, []string{"MASTER_KEY", "32 bytes"}},
		{"master key not base64", map[string]string{"MASTER_KEY": "!!!"}, 2, []string{"MASTER_KEY", "base64"}},
		{"database without master key", map[string]string{"DATABASE_URL": "postgres://x@127.0.0.1:1/x"}, 2, []string{"MASTER_KEY", "required"}},
		{"not a postgres url", map[string]string{"DATABASE_URL": "mysql://root:pw@x/y", "MASTER_KEY": key()}, 2, []string{"DATABASE_URL"}},
		{"weak bootstrap token", map[string]string{"BOOTSTRAP_ADMIN_TOKEN": "short"}, 2, []string{"BOOTSTRAP_ADMIN_TOKEN", "32"}},
		{"bad log level", map[string]string{"LOG_LEVEL": "loud"}, 2, []string{"LOG_LEVEL"}},
		{"tls half configured", map[string]string{"TLS_CERT_FILE": "/x.pem"}, 2, []string{"TLS_CERT_FILE", "TLS_KEY_FILE"}},
		{"tls files missing", map[string]string{"TLS_CERT_FILE": "/nope.pem", "TLS_KEY_FILE": "/nope.key"}, 2, []string{"TLS_CERT_FILE"}},
		{"apns half configured", map[string]string{"APNS_KEY_FILE": "/x.p8"}, 2, []string{"APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC"}},
		{"fcm endpoint plain http", map[string]string{"FCM_ENDPOINT": "http://fcm.example"}, 2, []string{"FCM_ENDPOINT"}},
		{"public url with query", map[string]string{"PUBLIC_URL": "https://x.example/?a=b"}, 2, []string{"PUBLIC_URL"}},
		{"bad timeout", map[string]string{"DATABASE_CONNECT_TIMEOUT": "soon"}, 2, []string{"DATABASE_CONNECT_TIMEOUT"}},
		{"two problems at once", map[string]string{"LISTEN_ADDR": "x", "LOG_LEVEL": "y"}, 2, []string{"LISTEN_ADDR", "LOG_LEVEL"}},
		{"database nowhere", map[string]string{"DATABASE_URL": "postgres://u:hunter2@127.0.0.1:1/x", "MASTER_KEY": key(),
			"DATABASE_CONNECT_TIMEOUT": "1s", "LISTEN_ADDR": "127.0.0.1:0"}, 1, []string{"connect to database", "127.0.0.1"}},
		{"stray argument", map[string]string{}, 2, []string{"unexpected argument"}},
		{"apns key not a .p8", map[string]string{"APNS_KEY_FILE": badFile, "APNS_KEY_ID": "K", "APNS_TEAM_ID": "T",
			"APNS_TOPIC": "com.example", "DATABASE_URL": "postgres://u@127.0.0.1:1/x", "MASTER_KEY": key()}, 1, []string{"APNS_KEY_FILE", ".p8"}},
		{"fcm credentials not a service account", map[string]string{"FCM_CREDENTIALS_FILE": badFile, "FCM_PROJECT_ID": "p",
			"DATABASE_URL": "postgres://u@127.0.0.1:1/x", "MASTER_KEY": key()}, 1, []string{"FCM_CREDENTIALS_FILE"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var args []string
			if tc.name == "stray argument" {
				args = []string{"--port=1"}
			}
			code, _, stderr := run(t, tc.env, args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q: %s", w, stderr)
				}
			}
			if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("panicked: %s", stderr)
			}
			for _, secret := range []string{"hunter2", tc.env["MASTER_KEY"]} {
				if secret != "" && strings.Contains(stderr, secret) {
					t.Errorf("a secret is in the error output: %s", stderr)
				}
			}
		})
	}
}

func TestHelpListsEveryVariable(t *testing.T) {
	t.Parallel()
	code, out, _ := run(t, nil, "-help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, v := range []string{"DATABASE_URL", "LISTEN_ADDR", "PUBLIC_URL", "DATA_DIR", "MASTER_KEY", "BOOTSTRAP_ADMIN_TOKEN",
		"APNS_KEY_FILE", "APNS_KEY_ID", "APNS_TEAM_ID", "APNS_TOPIC", "APNS_ENDPOINT", "FCM_CREDENTIALS_FILE",
		"FCM_PROJECT_ID", "FCM_ENDPOINT", "TLS_CERT_FILE", "TLS_KEY_FILE", "METRICS_ADDR"} {
		if !strings.Contains(out, v) {
			t.Errorf("-help lacks %s", v)
		}
	}
}

// TestSIGTERMShutsDownCleanly runs the binary on a test database, waits
// until it is ready, and stops it with SIGTERM.
func TestSIGTERMShutsDownCleanly(t *testing.T) {
	t.Parallel()
	db := pgtest.New(t)
	cmd := exec.Command(binary)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATABASE_URL=" + db.URL, "MASTER_KEY=" + key(), "LISTEN_ADDR=127.0.0.1:0"}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill() //nolint:errcheck
	addr := ""
	lines := bufio.NewScanner(stderr)
	var log []string
	for lines.Scan() {
		log = append(log, lines.Text())
		var line struct{ Msg, Addr string }
		if json.Unmarshal(lines.Bytes(), &line) == nil && line.Msg == "serving" {
			addr = line.Addr
			break
		}
	}
	if addr == "" {
		t.Fatalf("never served: %s", strings.Join(log, "\n"))
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", resp, err)
	}
	resp.Body.Close()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	go func() {
		for lines.Scan() {
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after SIGTERM")
	}
}

// TestDataDirNotWritable runs the server against a DATA_DIR it may not
// write. Root may write anywhere, so as root the binary runs as nobody.
func TestDataDirNotWritable(t *testing.T) {
	t.Parallel()
	parent, err := os.MkdirTemp("", "pushmfa-ro")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(parent)
	readOnly := filepath.Join(parent, "data")
	if err := os.Mkdir(readOnly, 0o555); err != nil {
		t.Fatal(err)
	}
	_ = os.Chmod(parent, 0o755)
	if os.Geteuid() == 0 {
		// Owned by the user that runs the server, only not writable.
		if err := os.Chown(readOnly, 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ dir, want string }{
		{readOnly, "is not writable"},
		{filepath.Join(readOnly, "sub"), "cannot be created"},
	} {
		cmd := exec.Command(binary)
		if os.Geteuid() == 0 {
			cmd = exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", binary)
		}
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "DATA_DIR=" + tc.dir, "LISTEN_ADDR=127.0.0.1:0"}
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("%s: exit %v: %s", tc.dir, err, out)
		}
		if !strings.Contains(string(out), "DATA_DIR") || !strings.Contains(string(out), tc.want) {
			t.Fatalf("%s: output lacks DATA_DIR ... %s: %s", tc.dir, tc.want, out)
		}
		if strings.Contains(string(out), "panic") {
			t.Fatalf("panicked: %s", out)
		}
	}
}
