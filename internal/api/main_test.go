package api_test

import (
	"testing"

	"github.com/pushmfa/pushmfa/internal/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
