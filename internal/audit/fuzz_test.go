package audit

import (
	"encoding/json"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzCanonical checks that canonicalisation never panics and is stable:
// the canonical form of an event's data canonicalises to itself.
func FuzzCanonical(f *testing.F) {
	f.Add([]byte(`{"a":1,"b":[true,null,"x"]}`), "user.created")
	f.Add([]byte(`{"n":1.0e2,"s":"\u00e9"}`), "x.y")
	f.Fuzz(func(t *testing.T, data []byte, typ string) {
		if !json.Valid(data) {
			return
		}
		e := Event{ID: 1, TenantID: "t", Seq: 1, OccurredAt: time.Unix(0, 0), Type: typ, Data: data}
		c1, err := Canonical(e)
		if err != nil {
			// Only data that is not a JSON object of representable values
			// may fail (what PostgreSQL's jsonb column could hold).
			var obj map[string]any
			if json.Unmarshal(data, &obj) == nil && obj != nil && utf8.Valid(data) && utf8.ValidString(typ) {
				t.Fatalf("object %s (type %q) does not canonicalise: %v", data, typ, err)
			}
			return
		}
		var back struct {
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(c1, &back); err != nil {
			t.Fatalf("canonical form is not JSON: %s", c1)
		}
		e.Data = back.Data
		c2, err := Canonical(e)
		if err != nil || string(c1) != string(c2) {
			t.Fatalf("not stable:\n%s\n%s (%v)", c1, c2, err)
		}
	})
}
