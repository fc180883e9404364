package errs

import (
	"errors"
	"fmt"
	"testing"
)

func TestIsMatchesByCode(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("find user: %w", NotFoundf("user %q not found", "x"))
	if !errors.Is(err, ErrNotFound) {
		t.Fatal("wrapped not_found is not ErrNotFound")
	}
	if errors.Is(err, ErrConflict) {
		t.Fatal("not_found is ErrConflict")
	}
	if CodeOf(err) != NotFound || CodeOf(errors.New("x")) != Internal {
		t.Fatal("CodeOf")
	}
	// A specific error is not a category of another message.
	if errors.Is(NotFoundf("a"), NotFoundf("b")) {
		t.Fatal("errors with messages compare as categories")
	}
	cause := errors.New("cause")
	e := &Error{Code: Conflict, Message: "m", Err: cause}
	if !errors.Is(e, cause) || e.Error() != "conflict: m: cause" {
		t.Fatalf("unwrap/format: %v", e)
	}
}
