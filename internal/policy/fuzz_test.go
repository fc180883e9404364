package policy

import (
	"encoding/json"
	"testing"
)

// FuzzApply checks that no patch can yield a policy outside its bounds.
func FuzzApply(f *testing.F) {
	for _, s := range []string{`{"max_devices":5}`, `{"totp_digits":7}`, `{"challenge_ttl_seconds":1e3}`, `{"x":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var patch Patch
		if json.Unmarshal(body, &patch) != nil {
			return
		}
		p, err := Default().Apply(patch)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("patch %s produced an invalid policy: %v", body, err)
		}
	})
}
