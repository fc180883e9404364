// Package webhook calls relying parties back when their challenges resolve:
// a signed POST, sent only to public addresses.
//
// Signature: X-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
// "<t>.<body>")>. The receiver recomputes it over the raw body and checks t
// is recent, which stops replays of old deliveries.
//
// The destination's host is resolved once per call and every address it
// resolves to must be public (not private, loopback, link-local, multicast,
// unspecified or otherwise special) unless allow-listed; the connection is
// then made to that checked address, so a DNS answer that changes in
// between (DNS rebinding) cannot redirect it. Redirects are not followed.
package webhook

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"
)

// Timeout bounds one call, connection included.
const Timeout = 5 * time.Second

// Sign returns the X-Signature header value for body at time t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

// ErrForbiddenAddress is returned for a destination that is not public.
var ErrForbiddenAddress = errors.New("webhook destination is not a public address")

// special are the ranges a webhook may never reach by default, beyond what
// netip's predicates cover.
var special = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this" network
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64 (could reach IPv4 private space)
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("100::/64"),        // discard
	netip.MustParsePrefix("2002::/16"),       // 6to4 (embeds IPv4)
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
	netip.MustParsePrefix("198.51.100.0/24"), // documentation
	netip.MustParsePrefix("203.0.113.0/24"),  // documentation
	netip.MustParsePrefix("192.0.2.0/24"),    // documentation
}

// Public reports whether an address may be called without an allow-list.
func Public(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsValid() || a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, p := range special {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// Resolver looks up a host's addresses, as *net.Resolver does.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Client calls webhooks.
type Client struct {
	// Allow lists addresses that may be called though not public (an
	// internal relying party, or loopback in development).
	Allow []netip.Prefix
	// Resolver resolves hosts (net.DefaultResolver when nil).
	Resolver Resolver
	// TLSConfig replaces the default TLS settings (tests trust their own CA).
	TLSConfig *tls.Config
	// Timeout bounds each call (the package's Timeout when zero).
	Timeout time.Duration
}

func (c *Client) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return Timeout
}

func (c *Client) allowed(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range c.Allow {
		if p.Contains(a) {
			return true
		}
	}
	return Public(a)
}

// dial resolves host, checks every address, and connects to a checked one.
func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var resolver Resolver = net.DefaultResolver
	if c.Resolver != nil {
		resolver = c.Resolver
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		ips, err := resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, fmt.Errorf("resolve %s: %w", host, err)
		}
		addrs = ips
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	// Every address must pass, or a host could list a public and a private
	// one and let the dialer pick.
	for _, a := range addrs {
		if !c.allowed(a) {
			return nil, fmt.Errorf("%w: %s resolves to %s", ErrForbiddenAddress, host, a)
		}
	}
	d := net.Dialer{Timeout: c.timeout()}
	var lastErr error
	for _, a := range addrs {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(a.String(), port))
		if err == nil {
			return conn, nil
		}
		lastErr = err
	}
	return nil, lastErr
}

// Result is the outcome of a call.
type Result struct {
	Status int
}

// Post sends body to rawURL, signed with secret, and reports the status.
// Anything but a 2xx is an error (redirects included).
func (c *Client) Post(ctx context.Context, rawURL string, secret, body []byte, now time.Time) (Result, error) {
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return Result{}, fmt.Errorf("bad webhook URL")
	}
	transport := &http.Transport{
		DialContext:           c.dial,
		TLSHandshakeTimeout:   c.timeout(),
		ResponseHeaderTimeout: c.timeout(),
		DisableKeepAlives:     true,
		Proxy:                 nil, // a proxy would connect where we have not checked
		ForceAttemptHTTP2:     true,
	}
	if c.TLSConfig != nil {
		transport.TLSClientConfig = c.TLSConfig
	}
	client := &http.Client{
		Transport: transport,
		Timeout:   c.timeout(),
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return Result{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "pushmfa-webhook/1")
	req.Header.Set("X-Signature", Sign(secret, now, body))
	resp, err := client.Do(req)
	if err != nil {
		// Not the URL: its path or query may carry a credential of the
		// receiver's, and the error is stored and logged.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("POST to %s: %w", req.URL.Host, ue.Err)
		}
		return Result{}, err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return Result{Status: resp.StatusCode}, fmt.Errorf("webhook answered %d", resp.StatusCode)
	}
	return Result{Status: resp.StatusCode}, nil
}
