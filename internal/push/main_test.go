package push

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/pushtest"
)

// ca signs the fakes' certificates; TestMain puts it into the process's
// system roots, which both client libraries use unmodified.
var ca *pushtest.CA

func TestMain(m *testing.M) {
	var remove func()
	var err error
	if ca, remove, err = pushtest.InstallTempCA(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	remove()
	os.Exit(code)
}

// hexToken returns a fresh APNs-shaped device token (32 bytes, hex).
func hexToken(t testing.TB) string {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// writeFile writes b under the test's directory and returns the path.
func writeFile(t testing.TB, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// leaves flattens a JSON document into its leaf paths ("aps.alert.loc-key")
// and values, so a test can hold a payload to an exact list of what it may
// say.
func leaves(t testing.TB, raw []byte) map[string]any {
	t.Helper()
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("payload %s: %v", raw, err)
	}
	out := map[string]any{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		obj, ok := v.(map[string]any)
		if !ok {
			out[prefix] = v
			return
		}
		for k, child := range obj {
			walk(strings.TrimPrefix(prefix+"."+k, "."), child)
		}
	}
	walk("", doc)
	return out
}

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// assertNothingSecret fails if any of secrets appears anywhere in what a
// provider received.
func assertNothingSecret(t testing.TB, received string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(received, s) {
			t.Errorf("the push carries %q:\n%s", s, received)
		}
	}
}
