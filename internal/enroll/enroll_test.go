package enroll

import (
	"bytes"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

func TestCodes(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 100 {
		c, err := NewCode()
		if err != nil {
			t.Fatal(err)
		}
		if !WellFormed(c) || seen[c] {
			t.Fatalf("code %q malformed or repeated", c)
		}
		seen[c] = true
	}
	for _, bad := range []string{"", "abc", strings.Repeat("A", 31), strings.Repeat("A", 33), strings.Repeat("1", 32), strings.Repeat("a", 32)} {
		if WellFormed(bad) {
			t.Errorf("%q is well formed", bad)
		}
	}
	if len(Digest("x")) != 32 {
		t.Fatal("digest")
	}
}

func TestURIRoundTrip(t *testing.T) {
	t.Parallel()
	code, _ := NewCode()
	for _, server := range []string{"https://mfa.example.com", "http://127.0.0.1:8080", "https://x.example/base/path"} {
		uri := URI(server, code)
		if !strings.HasPrefix(uri, "pushmfa://enroll?url=") || !strings.HasSuffix(uri, "&code="+code) {
			t.Fatal(uri)
		}
		s, c, err := ParseURI(uri)
		if err != nil || s != server || c != code {
			t.Fatalf("%s: %q %q %v", uri, s, c, err)
		}
	}
	for _, bad := range []string{
		"", "https://enroll?url=https://x&code=" + code, "pushmfa://other?url=https://x&code=" + code,
		"pushmfa://enroll?url=ftp://x&code=" + code, "pushmfa://enroll?url=https://x&code=short",
		"pushmfa://enroll?code=" + code, "pushmfa://enroll?url=https://x",
		"pushmfa://enroll?url=https://x&url=https://y&code=" + code,
		"pushmfa://enroll?url=https://u:p@x&code=" + code, "pushmfa://enroll/extra?url=https://x&code=" + code,
	} {
		if _, _, err := ParseURI(bad); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

// TestQRDecodes draws the QR code and reads it back with an independent
// decoder (ZXing's Go port), as a phone's camera would.
func TestQRDecodes(t *testing.T) {
	t.Parallel()
	code, _ := NewCode()
	uri := URI("https://mfa.example.com", code)
	q, err := NewQR(uri)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := q.PNG(6)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, nil)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if res.GetText() != uri {
		t.Fatalf("QR reads %q, want %q", res.GetText(), uri)
	}
	svg := string(q.SVG())
	if !strings.HasPrefix(svg, "<svg") || strings.Count(svg, "M") < q.Size() {
		t.Fatalf("svg: %.100s", svg)
	}
	// The SVG draws exactly the dark modules.
	dark := 0
	for y := range q.Size() {
		for x := range q.Size() {
			if q.Dark(x, y) {
				dark++
			}
		}
	}
	if strings.Count(svg, "h1v1h-1z") != dark {
		t.Fatalf("svg has %d modules, QR %d", strings.Count(svg, "h1v1h-1z"), dark)
	}
}

func TestEffectiveState(t *testing.T) {
	t.Parallel()
	now := time.Now()
	e := Enrollment{State: StatePending, ExpiresAt: now.Add(time.Second)}
	if e.EffectiveState(now) != StatePending || e.EffectiveState(now.Add(time.Second)) != StateExpired {
		t.Fatal("pending past its time must read as expired")
	}
	e.State = StateCompleted
	if e.EffectiveState(now.Add(time.Hour)) != StateCompleted {
		t.Fatal("completed changed")
	}
}

func FuzzParseURI(f *testing.F) {
	f.Add("pushmfa://enroll?url=https%3A%2F%2Fx&code=ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
	f.Add("pushmfa://enroll?url=http://[::1]:80&code=x")
	f.Fuzz(func(t *testing.T, raw string) {
		server, code, err := ParseURI(raw)
		if err != nil {
			return
		}
		if !WellFormed(code) || !(strings.HasPrefix(server, "http://") || strings.HasPrefix(server, "https://")) {
			t.Fatalf("%q parsed to %q %q", raw, server, code)
		}
	})
}
