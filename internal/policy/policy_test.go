package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/pushmfa/pushmfa/internal/errs"
)

func TestDefaultMatchesContract(t *testing.T) {
	t.Parallel()
	// The wire contract's defaults, written out independently of Default().
	want := `{"challenge_ttl_seconds":60,"enrollment_ttl_seconds":600,"number_matching":true,` +
		`"push_enabled":true,"require_user_verification":false,"challenges_per_window":10,` +
		`"challenge_window_seconds":300,"max_pending_challenges":3,"denial_backoff_after":3,` +
		`"fraud_lockout_after":1,"totp_enabled":true,"totp_digits":6,"totp_max_attempts":5,` +
		`"totp_attempt_window_seconds":300,"max_devices":5}`
	got, err := json.Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Fatalf("Default() =\n%s\nwant\n%s", got, want)
	}
	if err := Default().Validate(); err != nil {
		t.Fatal(err)
	}
	// Every JSON field of Policy has a bounds entry and the other way round.
	var m map[string]any
	_ = json.Unmarshal(got, &m)
	if len(m) != len(AllBounds()) {
		t.Fatalf("%d JSON fields, %d bounds", len(m), len(AllBounds()))
	}
	for _, b := range AllBounds() {
		if _, ok := m[b.Name]; !ok {
			t.Errorf("bounds for unknown field %s", b.Name)
		}
	}
}

func TestApplyBounds(t *testing.T) {
	t.Parallel()
	bounds := map[string][2]int{
		"challenge_ttl_seconds":       {10, 600},
		"enrollment_ttl_seconds":      {60, 604800},
		"challenges_per_window":       {1, 1000000},
		"challenge_window_seconds":    {1, 86400},
		"max_pending_challenges":      {1, 1000},
		"denial_backoff_after":        {1, 1000},
		"fraud_lockout_after":         {1, 100},
		"totp_max_attempts":           {1, 100},
		"totp_attempt_window_seconds": {30, 86400},
		"max_devices":                 {1, 100},
	}
	type tc struct {
		name  string
		patch string
		field string
		ok    bool
	}
	var tests []tc
	for f, b := range bounds {
		tests = append(tests,
			tc{f + " at min", fmt.Sprintf(`{%q:%d}`, f, b[0]), f, true},
			tc{f + " at max", fmt.Sprintf(`{%q:%d}`, f, b[1]), f, true},
			tc{f + " below min", fmt.Sprintf(`{%q:%d}`, f, b[0]-1), f, false},
			tc{f + " above max", fmt.Sprintf(`{%q:%d}`, f, b[1]+1), f, false},
		)
	}
	tests = append(tests,
		tc{"digits 6", `{"totp_digits":6}`, "totp_digits", true},
		tc{"digits 8", `{"totp_digits":8}`, "totp_digits", true},
		tc{"digits 7", `{"totp_digits":7}`, "totp_digits", false},
		tc{"fraction", `{"max_devices":2.5}`, "max_devices", false},
		tc{"exponent integral", `{"max_devices":5e0}`, "max_devices", true},
		tc{"huge", `{"max_devices":1e300}`, "max_devices", false},
		tc{"string number", `{"max_devices":"5"}`, "max_devices", false},
		tc{"null", `{"max_devices":null}`, "max_devices", false},
		tc{"bool as int", `{"number_matching":1}`, "number_matching", false},
		tc{"bool null", `{"push_enabled":null}`, "push_enabled", false},
		tc{"bool ok", `{"push_enabled":false}`, "push_enabled", true},
	)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var patch Patch
			if err := json.Unmarshal([]byte(tc.patch), &patch); err != nil {
				t.Fatal(err)
			}
			before := Default()
			got, err := before.Apply(patch)
			if tc.ok {
				if err != nil {
					t.Fatalf("Apply: %v", err)
				}
				if err := got.Validate(); err != nil {
					t.Fatal(err)
				}
				return
			}
			var e *errs.Error
			if !errors.As(err, &e) || e.Code != errs.InvalidPolicy || e.Field != tc.field {
				t.Fatalf("err = %#v, want invalid_policy on %s", err, tc.field)
			}
			if !strings.Contains(e.Message, tc.field) {
				t.Fatalf("message %q does not name the field", e.Message)
			}
			if !reflect.DeepEqual(before, Default()) {
				t.Fatal("Apply changed its receiver")
			}
		})
	}
}

func TestApplyUnknownFieldAndSubset(t *testing.T) {
	t.Parallel()
	_, err := Default().Apply(Patch{"nope": json.RawMessage(`1`)})
	if errs.CodeOf(err) != errs.InvalidRequest {
		t.Fatalf("unknown field: %v", err)
	}
	got, err := Default().Apply(Patch{"challenge_ttl_seconds": json.RawMessage(`120`), "number_matching": json.RawMessage(`false`)})
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.ChallengeTTLSeconds, want.NumberMatching = 120, false
	if got != want {
		t.Fatalf("got %+v", got)
	}
}
