package api_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/pushmfa/pushmfa/internal/pgtest"
	"github.com/pushmfa/pushmfa/internal/pushtest"
)

// ca signs the fake push providers' certificates. It is in the process's
// system roots before any TLS client loads them, so the servers under test
// trust the fakes through their unmodified clients.
var ca *pushtest.CA

func TestMain(m *testing.M) {
	var remove func()
	var err error
	if ca, remove, err = pushtest.InstallTempCA(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := pgtest.Run(m)
	remove()
	os.Exit(code)
}
