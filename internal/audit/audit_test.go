package audit

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func chain(t *testing.T, n int) []Event {
	t.Helper()
	prev := Genesis
	var out []Event
	at := time.Date(2026, 11, 24, 10, 0, 0, 123456000, time.UTC)
	for i := 1; i <= n; i++ {
		e := Event{
			ID: int64(100 + i), TenantID: "t1", OccurredAt: at.Add(time.Duration(i) * time.Second),
			Type: UserCreated, Actor: Actor{ActorAdmin, "bootstrap"}, UserID: "u1",
			Data: json.RawMessage(`{"b": 2, "a": [1, 2.0]}`), Seq: int64(i), PrevHash: prev,
		}
		h, err := Link(prev, e)
		if err != nil {
			t.Fatal(err)
		}
		e.Hash = h
		out = append(out, e)
		prev = h
	}
	return out
}

func TestCanonicalIsStable(t *testing.T) {
	t.Parallel()
	e := chain(t, 1)[0]
	a, err := Canonical(e)
	if err != nil {
		t.Fatal(err)
	}
	// Same content, other key order and spacing, other time zone.
	e.Data = json.RawMessage(`{"a":[1,2],"b":2}`)
	e.OccurredAt = e.OccurredAt.In(time.FixedZone("x", 3600))
	b, _ := Canonical(e)
	if string(a) != string(b) {
		t.Fatalf("canonical differs:\n%s\n%s", a, b)
	}
	want := `{"actor":{"id":"bootstrap","type":"admin"},"data":{"a":[1,2],"b":2},"id":101,` +
		`"occurred_at":"2026-11-24T10:00:01.123456Z","seq":1,"tenant_id":"t1","type":"user.created","user_id":"u1"}`
	if string(a) != want {
		t.Fatalf("canonical =\n%s\nwant\n%s", a, want)
	}
	e.UserID, e.Data = "", nil
	c, _ := Canonical(e)
	if !strings.Contains(string(c), `"user_id":null`) || !strings.Contains(string(c), `"data":{}`) {
		t.Fatalf("empty fields: %s", c)
	}
}

func TestVerifier(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		mutate   func([]Event) []Event
		wantSeq  int64 // seq of the first break; 0 = valid
		wantHead int64
	}{
		{"intact", func(e []Event) []Event { return e }, 0, 5},
		{"content changed", func(e []Event) []Event { e[2].Type = "user.deleted"; return e }, 3, 2},
		{"data changed", func(e []Event) []Event { e[3].Data = json.RawMessage(`{"a":1}`); return e }, 4, 3},
		{"time changed", func(e []Event) []Event { e[0].OccurredAt = e[0].OccurredAt.Add(time.Microsecond); return e }, 1, 0},
		{"event removed", func(e []Event) []Event { return append(e[:1], e[2:]...) }, 3, 1},
		{"reordered", func(e []Event) []Event { e[1], e[2] = e[2], e[1]; return e }, 3, 1},
		{"rehashed without relinking", func(e []Event) []Event {
			e[1].Actor.ID = "someone else"
			h, _ := Link(e[1].PrevHash, e[1])
			e[1].Hash = h
			return e
		}, 3, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v := NewVerifier()
			for _, e := range tc.mutate(chain(t, 5)) {
				v.Add(e)
			}
			head, hash, broken := v.Result()
			if tc.wantSeq == 0 {
				if broken != nil {
					t.Fatalf("broken at %+v", broken)
				}
			} else if broken == nil || broken.Seq != tc.wantSeq {
				t.Fatalf("broken = %+v, want seq %d", broken, tc.wantSeq)
			}
			if head != tc.wantHead || len(hash) != 32 {
				t.Fatalf("head = %d, want %d", head, tc.wantHead)
			}
		})
	}
}
