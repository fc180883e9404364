// Package enroll defines activations: the one-time codes with which a new
// device joins a user, the pushmfa:// URI an app scans, and the QR code that
// carries it.
package enroll

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/url"
	"strings"
	"time"

	"github.com/yeqown/go-qrcode/v2"
)

// States of an enrollment.
const (
	StatePending   = "pending"
	StateCompleted = "completed"
	StateExpired   = "expired"
)

// Enrollment is a one-time activation for a user.
type Enrollment struct {
	ID          string
	TenantID    string
	UserID      string
	UserName    string
	State       string
	CreatedAt   time.Time
	ExpiresAt   time.Time
	CompletedAt *time.Time
	DeviceID    string
}

// EffectiveState is the state as of now: a pending enrollment past its time
// reads as expired at once, before the sweeper gets to it.
func (e Enrollment) EffectiveState(now time.Time) string {
	if e.State == StatePending && !now.Before(e.ExpiresAt) {
		return StateExpired
	}
	return e.State
}

// codeBytes is the activation code's entropy: 160 bits.
const codeBytes = 20

// codeLen is the length of its text: 32 base32 characters.
const codeLen = 32

var b32 = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewCode makes an activation code: 160 random bits as 32 characters of
// RFC 4648 base32 (upper case letters and 2-7, which QR encodes compactly
// and people can read out).
func NewCode() (string, error) {
	b := make([]byte, codeBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("enroll: %w", err)
	}
	return b32.EncodeToString(b), nil
}

// WellFormed reports whether s could be an activation code, so that garbage
// is refused before any lookup.
func WellFormed(code string) bool {
	if len(code) != codeLen {
		return false
	}
	_, err := b32.DecodeString(code)
	return err == nil
}

// Digest is the SHA-256 of a code, the form looked up in the database.
func Digest(code string) []byte {
	d := sha256.Sum256([]byte(code))
	return d[:]
}

// URIScheme is the scheme the authenticator app registers.
const URIScheme = "pushmfa"

// URI builds pushmfa://enroll?url=<server>&code=<code>, in that order, as
// the wire contract writes it.
func URI(server, code string) string {
	return URIScheme + "://enroll?url=" + url.QueryEscape(server) + "&code=" + url.QueryEscape(code)
}

// ErrBadURI is returned for a URI that is not an enrollment URI.
var ErrBadURI = errors.New("not a pushmfa enrollment URI")

// ParseURI reads an enrollment URI, as an app does after scanning it: the
// server must be an absolute http(s) URL and the code well formed.
func ParseURI(raw string) (server, code string, err error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil || u.Scheme != URIScheme || u.Host != "enroll" || (u.Path != "" && u.Path != "/") {
		return "", "", ErrBadURI
	}
	q := u.Query()
	if len(q["url"]) != 1 || len(q["code"]) != 1 {
		return "", "", fmt.Errorf("%w: needs exactly one url and one code", ErrBadURI)
	}
	server, code = q.Get("url"), q.Get("code")
	s, err := url.Parse(server)
	if err != nil || (s.Scheme != "https" && s.Scheme != "http") || s.Host == "" || s.User != nil {
		return "", "", fmt.Errorf("%w: url must be an absolute http(s) URL", ErrBadURI)
	}
	if !WellFormed(code) {
		return "", "", fmt.Errorf("%w: malformed code", ErrBadURI)
	}
	return strings.TrimSuffix(server, "/"), code, nil
}

// QR holds the modules of a QR symbol encoding a text, drawn by the
// maintained encoder github.com/yeqown/go-qrcode.
type QR struct {
	modules [][]bool // [y][x], true = dark
}

// quiet is the margin in modules the QR specification asks for.
const quiet = 4

// NewQR encodes text with medium error correction.
func NewQR(text string) (*QR, error) {
	code, err := qrcode.NewWith(text, qrcode.WithErrorCorrectionLevel(qrcode.ErrorCorrectionMedium))
	if err != nil {
		return nil, fmt.Errorf("enroll: QR: %w", err)
	}
	m := &matrixWriter{}
	if err := code.Save(m); err != nil {
		return nil, fmt.Errorf("enroll: QR: %w", err)
	}
	return &QR{modules: m.modules}, nil
}

// matrixWriter receives the encoder's matrix instead of an image.
type matrixWriter struct{ modules [][]bool }

func (w *matrixWriter) Write(mat qrcode.Matrix) error {
	w.modules = mat.Bitmap()
	return nil
}

func (w *matrixWriter) Close() error { return nil }

// Size is the symbol's width in modules, without the quiet zone.
func (q *QR) Size() int { return len(q.modules) }

// Dark reports whether the module at (x, y) is dark.
func (q *QR) Dark(x, y int) bool { return q.modules[y][x] }

// PNG draws the symbol with scale pixels per module and the quiet zone.
func (q *QR) PNG(scale int) ([]byte, error) {
	n := (q.Size() + 2*quiet) * scale
	img := image.NewGray(image.Rect(0, 0, n, n))
	for i := range img.Pix {
		img.Pix[i] = 0xff
	}
	for y, row := range q.modules {
		for x, dark := range row {
			if !dark {
				continue
			}
			for dy := range scale {
				for dx := range scale {
					img.SetGray((x+quiet)*scale+dx, (y+quiet)*scale+dy, color.Gray{Y: 0})
				}
			}
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// SVG draws the symbol as one path, one unit per module, with the quiet zone.
func (q *QR) SVG() []byte {
	n := q.Size() + 2*quiet
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">`, n, n)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n, n)
	for y, row := range q.modules {
		for x, dark := range row {
			if dark {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x+quiet, y+quiet)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return []byte(b.String())
}
