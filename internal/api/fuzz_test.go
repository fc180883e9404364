package api

import (
	"testing"

	"github.com/pushmfa/pushmfa/internal/errs"
)

// FuzzUnmarshalStrict feeds arbitrary bodies to the strict decoder: it must
// never panic, and every failure must be a domain error with a code the
// status table knows (so it becomes a 4xx, never a 500).
func FuzzUnmarshalStrict(f *testing.F) {
	for _, s := range []string{`{}`, `{"name":"x"}`, `{"name":1}`, `[`, `null`, "{\"a\":\"\xff\"}", `{"name":"x"} {}`,
		`{"user":"a","tenant":"b","duo":true,"webhook_url":"https://x"}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var dst struct {
			Name       string `json:"name"`
			User       string `json:"user"`
			Tenant     string `json:"tenant"`
			Duo        bool   `json:"duo"`
			WebhookURL string `json:"webhook_url"`
			Limit      *int   `json:"limit"`
		}
		err := unmarshalStrict(body, &dst)
		if err == nil {
			return
		}
		code := errs.CodeOf(err)
		if status, ok := statuses[code]; !ok || status >= 500 {
			t.Fatalf("body %q: error %v has code %q (status %d)", body, err, code, status)
		}
	})
}
