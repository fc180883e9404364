package webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestSign(t *testing.T) {
	t.Parallel()
	at := time.Unix(1_800_000_000, 0)
	body := []byte(`{"a":1}`)
	got := Sign([]byte("secret"), at, body)
	// Computed independently.
	mac := hmac.New(sha256.New, []byte("secret"))
	mac.Write([]byte("1800000000.{\"a\":1}"))
	if want := "t=1800000000,v1=" + hex.EncodeToString(mac.Sum(nil)); got != want {
		t.Fatalf("%s\n%s", got, want)
	}
}

func TestPublic(t *testing.T) {
	t.Parallel()
	for addr, want := range map[string]bool{
		"93.184.215.14": true, "2606:2800:21f:cb07:6820:80da:af6b:8b2c": true, "8.8.8.8": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fc00::1": false, "0.0.0.0": false, "::": false,
		"100.64.0.1": false, "224.0.0.1": false, "::ffff:127.0.0.1": false, "::ffff:10.0.0.1": false,
		"64:ff9b::a00:1": false, "2002:a00:1::": false, "255.255.255.255": false, "198.18.0.1": false,
	} {
		if got := Public(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: %v", addr, got)
		}
	}
}

func TestPost(t *testing.T) {
	t.Parallel()
	var got struct {
		sig, body string
	}
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.sig, got.body = r.Header.Get("X-Signature"), string(b)
	}))
	defer ok.Close()
	fail := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(500) }))
	defer fail.Close()
	redirect := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, ok.URL, http.StatusFound)
	}))
	defer redirect.Close()
	now := time.Now()
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	ctx := context.Background()

	// The test servers are on loopback: refused unless allow-listed.
	strict := &Client{}
	if _, err := strict.Post(ctx, ok.URL, []byte("s"), []byte("{}"), now); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("loopback without allow-list: %v", err)
	}
	if _, err := strict.Post(ctx, strings.Replace(ok.URL, "127.0.0.1", "localhost", 1), []byte("s"), []byte("{}"), now); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("a name resolving to loopback: %v", err)
	}
	c := &Client{Allow: loopback}
	res, err := c.Post(ctx, ok.URL, []byte("s"), []byte(`{"x":1}`), now)
	if err != nil || res.Status != 200 || got.body != `{"x":1}` || got.sig != Sign([]byte("s"), now, []byte(`{"x":1}`)) {
		t.Fatalf("post: %+v %v %+v", res, err, got)
	}
	if res, err := c.Post(ctx, fail.URL, []byte("s"), []byte("{}"), now); err == nil || res.Status != 500 {
		t.Fatalf("500: %+v %v", res, err)
	}
	got.body = ""
	if res, err := c.Post(ctx, redirect.URL, []byte("s"), []byte("{}"), now); err == nil || res.Status != 302 || got.body != "" {
		t.Fatalf("redirect followed: %+v %v", res, err)
	}
	if _, err := c.Post(ctx, "ftp://x", nil, nil, now); err == nil {
		t.Fatal("ftp URL")
	}
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Reading the body lets the server notice the client hanging up.
		_, _ = io.ReadAll(r.Body)
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer slow.Close()
	c := &Client{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Timeout: 200 * time.Millisecond}
	start := time.Now()
	if _, err := c.Post(context.Background(), slow.URL, nil, []byte("{}"), time.Now()); err == nil {
		t.Fatal("no timeout")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %s", d)
	}
}

// TestErrorHidesThePath: a failed call's error, which is stored and
// logged, names the host but not the URL's path or query, where receivers
// often put a credential of theirs.
func TestErrorHidesThePath(t *testing.T) {
	t.Parallel()
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close() // nothing listens there now
	c := &Client{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, Timeout: time.Second}
	_, err := c.Post(context.Background(), gone.URL+"/hooks/T0K3N-path?token=s3cr3t-query", nil, []byte("{}"), time.Now())
	if err == nil {
		t.Fatal("a call to a closed port succeeded")
	}
	host := strings.TrimPrefix(gone.URL, "http://")
	if msg := err.Error(); strings.Contains(msg, "T0K3N-path") || strings.Contains(msg, "s3cr3t-query") || !strings.Contains(msg, host) {
		t.Fatalf("error %q: want the host %s and neither the path nor the query", msg, host)
	}
}

// scriptedResolver answers each lookup with the next of its answers (the
// last one again when they run out), counting the lookups.
type scriptedResolver struct {
	mu      sync.Mutex
	answers [][]netip.Addr
	lookups int
}

func (r *scriptedResolver) LookupNetIP(_ context.Context, _, _ string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	a := r.answers[min(r.lookups, len(r.answers)-1)]
	r.lookups++
	return a, nil
}

// TestPinnedAddress: the address checked is the address called. A name
// that resolves to an allowed address when checked and to another when
// called (DNS rebinding) still reaches the checked one, with one lookup;
// and a name that lists an allowed and a forbidden address is refused.
func TestPinnedAddress(t *testing.T) {
	t.Parallel()
	var public, internal atomic.Int32
	// The checked server, and another on the same port of another loopback
	// address: where a second lookup would lead.
	var checked, rebound *httptest.Server
	var port int
	for try := 0; rebound == nil; try++ {
		checked = httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { public.Add(1) }))
		port = checked.Listener.Addr().(*net.TCPAddr).Port
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.2", strconv.Itoa(port)))
		if err != nil {
			checked.Close()
			if try == 10 {
				t.Fatalf("no port free on both 127.0.0.1 and 127.0.0.2: %v", err)
			}
			continue
		}
		rebound = &httptest.Server{Listener: ln, Config: &http.Server{Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) { internal.Add(1) })}}
		rebound.Start()
	}
	defer checked.Close()
	defer rebound.Close()

	ctx := context.Background()
	url := "http://hooks.example.test:" + strconv.Itoa(port) + "/cb"
	allowed := netip.MustParseAddr("127.0.0.1")
	r := &scriptedResolver{answers: [][]netip.Addr{{allowed}, {netip.MustParseAddr("127.0.0.2")}}}
	c := &Client{Allow: []netip.Prefix{netip.PrefixFrom(allowed, 32)}, Resolver: r}
	res, err := c.Post(ctx, url, []byte("s"), []byte("{}"), time.Now())
	if err != nil || res.Status != http.StatusOK {
		t.Fatalf("post: %+v %v", res, err)
	}
	if public.Load() != 1 || internal.Load() != 0 || r.lookups != 1 {
		t.Fatalf("checked server %d calls, rebound server %d, lookups %d: want 1, 0, 1", public.Load(), internal.Load(), r.lookups)
	}

	mixed := &Client{Allow: []netip.Prefix{netip.PrefixFrom(allowed, 32)},
		Resolver: &scriptedResolver{answers: [][]netip.Addr{{allowed, netip.MustParseAddr("10.0.0.1")}}}}
	if _, err := mixed.Post(ctx, url, []byte("s"), []byte("{}"), time.Now()); !errors.Is(err, ErrForbiddenAddress) {
		t.Fatalf("an allowed and a forbidden address: %v", err)
	}
	if public.Load() != 1 {
		t.Fatal("the refused call reached a server")
	}
}
