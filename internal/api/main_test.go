package api_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/pushtest"
)

// ca signs the fake push providers' certificates. InstallCA puts it into
// the process's system roots before any TLS client loads them, so the
// servers under test trust the fakes through their unmodified clients.
var ca *pushtest.CA

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "api-test-ca")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if ca, err = pushtest.InstallCA(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	os.RemoveAll(dir)
	os.Exit(code)
}
