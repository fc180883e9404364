// Package config loads the server's configuration from the environment into
// one typed struct and validates it, so that a bad value stops the server at
// start with a message naming the variable.
package config

import (
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MinBootstrapTokenLen keeps a guessable bootstrap admin token out of
// production: 32 characters of base64 carry 192 bits.
const MinBootstrapTokenLen = 32

// Config is the whole server configuration. Zero values are never used
// directly: Load fills defaults.
type Config struct {
	// DatabaseURL is the PostgreSQL connection string; empty means the
	// embedded local cluster under DataDir.
	DatabaseURL string
	// DatabaseConnectTimeout bounds how long start-up waits for the database.
	DatabaseConnectTimeout time.Duration
	ListenAddr             string
	// PublicURL is the externally visible base URL (what QR codes carry).
	PublicURL *url.URL
	// PublicURLDerived reports that PUBLIC_URL was not set: the server then
	// derives it from the address it actually listens on.
	PublicURLDerived bool
	DataDir          string
	// MasterKey encrypts secrets at rest (32 bytes). Nil when unset; the
	// server then generates one into DataDir, only for the embedded cluster.
	MasterKey []byte
	// PreviousMasterKeys still decrypt values sealed before a key rotation.
	PreviousMasterKeys [][]byte
	// BootstrapAdminToken is a global admin token from the operator; empty
	// disables it.
	BootstrapAdminToken string
	APNs                APNs
	FCM                 FCM
	TLSCertFile         string
	TLSKeyFile          string
	// MetricsAddr moves /metrics to its own listener when set.
	MetricsAddr string
	// PprofAddr serves Go's profiler on its own (loopback) listener when set.
	PprofAddr string
	LogLevel  slog.Level
	// AuthFailureLimit is the number of failed authentications a source
	// address may make per minute before it gets 429.
	AuthFailureLimit int
	ShutdownTimeout  time.Duration
	// PGBinDir overrides where the embedded cluster's binaries are found.
	PGBinDir string
	// WebhookAllowHTTPLoopback accepts http:// webhook URLs on loopback
	// hosts (local development only).
	WebhookAllowHTTPLoopback bool
	// TrustedProxies are the proxies whose X-Forwarded-For header names the
	// client (for per-address rate limits and logs).
	TrustedProxies []netip.Prefix
	// WebhookAllow lists non-public addresses webhooks may still call (an
	// internal relying party).
	WebhookAllow []netip.Prefix
}

// APNs holds the token-based (.p8) credentials for Apple push.
type APNs struct {
	KeyFile  string
	KeyID    string
	TeamID   string
	Topic    string
	Endpoint string
}

// Enabled reports whether APNs credentials are configured.
func (a APNs) Enabled() bool { return a.KeyFile != "" }

// FCM holds the Firebase Cloud Messaging credentials.
type FCM struct {
	CredentialsFile string
	ProjectID       string
	Endpoint        string
}

// Enabled reports whether FCM credentials are configured.
func (f FCM) Enabled() bool { return f.CredentialsFile != "" }

// Embedded reports whether the server runs its own local cluster.
func (c *Config) Embedded() bool { return c.DatabaseURL == "" }

// Variables lists every environment variable Load reads, with its meaning and
// default, for the README and `server -help`.
var Variables = []struct{ Name, Default, Doc string }{
	{"DATABASE_URL", "(embedded cluster)", "PostgreSQL connection string; unset: a private cluster under DATA_DIR"},
	{"DATABASE_CONNECT_TIMEOUT", "30s", "how long start-up waits for the database"},
	{"LISTEN_ADDR", "127.0.0.1:8080", "address the API listens on"},
	{"PUBLIC_URL", "http://LISTEN_ADDR", "external base URL, carried by enrollment QR codes"},
	{"DATA_DIR", "./.data", "embedded cluster and generated master key"},
	{"MASTER_KEY", "(generated in DATA_DIR with the embedded cluster)", "32 random bytes, standard base64; encrypts secrets at rest"},
	{"MASTER_KEY_PREVIOUS", "", "comma-separated earlier master keys, still used to decrypt"},
	{"BOOTSTRAP_ADMIN_TOKEN", "", "a global admin token (at least 32 characters)"},
	{"APNS_KEY_FILE", "", "APNs .p8 token key"},
	{"APNS_KEY_ID", "", "APNs key id"},
	{"APNS_TEAM_ID", "", "Apple developer team id"},
	{"APNS_TOPIC", "", "the app's bundle id"},
	{"APNS_ENDPOINT", "https://api.push.apple.com", "APNs host (sandbox or a fake)"},
	{"FCM_CREDENTIALS_FILE", "", "Firebase service-account JSON"},
	{"FCM_PROJECT_ID", "", "Firebase project id"},
	{"FCM_ENDPOINT", "https://fcm.googleapis.com/v1", "FCM v1 endpoint (a fake in tests)"},
	{"TLS_CERT_FILE", "", "serve HTTPS with this certificate"},
	{"TLS_KEY_FILE", "", "and this key"},
	{"METRICS_ADDR", "", "serve /metrics on its own listener"},
	{"PPROF_ADDR", "", "serve Go's profiler (net/http/pprof) on this loopback address"},
	{"LOG_LEVEL", "info", "debug, info, warn or error"},
	{"AUTH_FAILURE_LIMIT", "60", "failed authentications per source address per minute (at least 30)"},
	{"SHUTDOWN_TIMEOUT", "15s", "how long to drain requests on SIGTERM"},
	{"PG_BINDIR", "(found)", "PostgreSQL binaries for the embedded cluster"},
	{"WEBHOOK_ALLOW_HTTP_LOOPBACK", "false", "accept http:// webhook URLs on loopback hosts (development only)"},
	{"TRUSTED_PROXIES", "", "comma-separated addresses or CIDRs of proxies whose X-Forwarded-For is believed"},
	{"WEBHOOK_ALLOW_CIDRS", "", "comma-separated addresses or CIDRs webhooks may call although not public"},
}

// Load reads the configuration through getenv (os.LookupEnv in main) and
// validates it. Every problem is reported, each naming its variable.
func Load(getenv func(string) (string, bool)) (*Config, error) {
	l := loader{getenv: getenv}
	c := &Config{
		DatabaseURL:            l.str("DATABASE_URL", ""),
		DatabaseConnectTimeout: l.duration("DATABASE_CONNECT_TIMEOUT", 30*time.Second, time.Second, 10*time.Minute),
		ListenAddr:             l.str("LISTEN_ADDR", "127.0.0.1:8080"),
		DataDir:                l.str("DATA_DIR", "./.data"),
		BootstrapAdminToken:    l.str("BOOTSTRAP_ADMIN_TOKEN", ""),
		APNs: APNs{
			KeyFile:  l.str("APNS_KEY_FILE", ""),
			KeyID:    l.str("APNS_KEY_ID", ""),
			TeamID:   l.str("APNS_TEAM_ID", ""),
			Topic:    l.str("APNS_TOPIC", ""),
			Endpoint: l.str("APNS_ENDPOINT", "https://api.push.apple.com"),
		},
		FCM: FCM{
			CredentialsFile: l.str("FCM_CREDENTIALS_FILE", ""),
			ProjectID:       l.str("FCM_PROJECT_ID", ""),
			Endpoint:        l.str("FCM_ENDPOINT", "https://fcm.googleapis.com/v1"),
		},
		TLSCertFile:      l.str("TLS_CERT_FILE", ""),
		TLSKeyFile:       l.str("TLS_KEY_FILE", ""),
		MetricsAddr:      l.str("METRICS_ADDR", ""),
		PprofAddr:        l.str("PPROF_ADDR", ""),
		AuthFailureLimit: l.integer("AUTH_FAILURE_LIMIT", 60, 30, 1_000_000),
		ShutdownTimeout:  l.duration("SHUTDOWN_TIMEOUT", 15*time.Second, time.Second, 10*time.Minute),
		PGBinDir:         l.str("PG_BINDIR", ""),
	}
	c.LogLevel = l.level("LOG_LEVEL")
	c.WebhookAllowHTTPLoopback = l.boolean("WEBHOOK_ALLOW_HTTP_LOOPBACK")
	c.TrustedProxies = l.prefixes("TRUSTED_PROXIES")
	c.WebhookAllow = l.prefixes("WEBHOOK_ALLOW_CIDRS")
	c.MasterKey = l.key("MASTER_KEY", l.str("MASTER_KEY", ""))
	if prev := l.str("MASTER_KEY_PREVIOUS", ""); prev != "" {
		for _, k := range strings.Split(prev, ",") {
			if key := l.key("MASTER_KEY_PREVIOUS", strings.TrimSpace(k)); key != nil {
				c.PreviousMasterKeys = append(c.PreviousMasterKeys, key)
			}
		}
	}
	l.validate(c)
	if len(l.errs) > 0 {
		return nil, fmt.Errorf("invalid configuration: %w", errors.Join(l.errs...))
	}
	return c, nil
}

// LookupEnv adapts os.LookupEnv for Load.
func LookupEnv(name string) (string, bool) { return os.LookupEnv(name) }

type loader struct {
	getenv func(string) (string, bool)
	errs   []error
}

func (l *loader) fail(name, format string, args ...any) {
	l.errs = append(l.errs, fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...)))
}

func (l *loader) str(name, def string) string {
	v, ok := l.getenv(name)
	if !ok || v == "" {
		return def
	}
	return v
}

func (l *loader) duration(name string, def, lo, hi time.Duration) time.Duration {
	v := l.str(name, "")
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		l.fail(name, "%q is not a duration such as 30s or 2m", v)
		return def
	}
	if d < lo || d > hi {
		l.fail(name, "%s is out of range %s..%s", d, lo, hi)
		return def
	}
	return d
}

func (l *loader) integer(name string, def, lo, hi int) int {
	v := l.str(name, "")
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		l.fail(name, "%q is not an integer", v)
		return def
	}
	if n < lo || n > hi {
		l.fail(name, "%d is out of range %d..%d", n, lo, hi)
		return def
	}
	return n
}

func (l *loader) prefixes(name string) []netip.Prefix {
	var out []netip.Prefix
	for _, item := range strings.Split(l.str(name, ""), ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
		} else if a, err := netip.ParseAddr(item); err == nil {
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
		} else {
			l.fail(name, "%q is not an IP address or CIDR", item)
		}
	}
	return out
}

func (l *loader) boolean(name string) bool {
	v := l.str(name, "false")
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.fail(name, "%q is not true or false", v)
	}
	return b
}

func (l *loader) level(name string) slog.Level {
	var lv slog.Level
	v := l.str(name, "info")
	if err := lv.UnmarshalText([]byte(v)); err != nil {
		l.fail(name, "%q is not one of debug, info, warn, error", v)
		return slog.LevelInfo
	}
	return lv
}

// key decodes a 32-byte standard-base64 key. The value itself never appears
// in an error message.
func (l *loader) key(name, v string) []byte {
	if v == "" {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		l.fail(name, "is not standard base64 (generate one with: head -c 32 /dev/urandom | base64)")
		return nil
	}
	if len(b) != 32 {
		l.fail(name, "must decode to 32 bytes, got %d", len(b))
		return nil
	}
	return b
}

func (l *loader) validate(c *Config) {
	if c.DatabaseURL != "" {
		u, err := url.Parse(c.DatabaseURL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			// The URL may hold a password: never echo it.
			l.fail("DATABASE_URL", "must be a postgres:// or postgresql:// URL")
		}
		if c.MasterKey == nil {
			l.fail("MASTER_KEY", "is required when DATABASE_URL is set (it is generated only for the embedded cluster)")
		}
	}
	host, port, err := net.SplitHostPort(c.ListenAddr)
	if err != nil {
		l.fail("LISTEN_ADDR", "%q is not host:port", c.ListenAddr)
	} else if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		l.fail("LISTEN_ADDR", "%q has an invalid port", c.ListenAddr)
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			l.fail("METRICS_ADDR", "%q is not host:port", c.MetricsAddr)
		}
	}
	if c.PprofAddr != "" {
		// The profiler exposes memory contents: loopback only.
		h, _, err := net.SplitHostPort(c.PprofAddr)
		ip := net.ParseIP(h)
		if err != nil || (h != "localhost" && (ip == nil || !ip.IsLoopback())) {
			l.fail("PPROF_ADDR", "%q must be a loopback host:port", c.PprofAddr)
		}
	}
	if abs, err := filepath.Abs(c.DataDir); err != nil {
		l.fail("DATA_DIR", "%v", err)
	} else {
		c.DataDir = abs
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		l.fail("TLS_CERT_FILE", "TLS_CERT_FILE and TLS_KEY_FILE must be set together")
	} else if c.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile); err != nil {
			l.fail("TLS_CERT_FILE", "cannot load the certificate and key: %v", err)
		}
	}
	l.publicURL(c, host)
	if t := c.BootstrapAdminToken; t != "" && len(t) < MinBootstrapTokenLen {
		l.fail("BOOTSTRAP_ADMIN_TOKEN", "must be at least %d characters", MinBootstrapTokenLen)
	}
	l.apns(c.APNs)
	l.fcm(c.FCM)
}

func (l *loader) publicURL(c *Config, listenHost string) {
	raw := l.str("PUBLIC_URL", "")
	if raw == "" {
		c.PublicURLDerived = true
		scheme := "http"
		if c.TLSCertFile != "" {
			scheme = "https"
		}
		host := c.ListenAddr
		if listenHost == "" || listenHost == "0.0.0.0" || listenHost == "::" {
			_, port, _ := net.SplitHostPort(c.ListenAddr)
			host = net.JoinHostPort("localhost", port)
		}
		raw = scheme + "://" + host
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" {
		l.fail("PUBLIC_URL", "%q must be an absolute http(s) URL without credentials, query or fragment", raw)
		return
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	c.PublicURL = u
}

func (l *loader) apns(a APNs) {
	set := map[string]string{"APNS_KEY_FILE": a.KeyFile, "APNS_KEY_ID": a.KeyID, "APNS_TEAM_ID": a.TeamID, "APNS_TOPIC": a.Topic}
	l.allOrNone(set, "APNS_KEY_FILE")
	if a.KeyFile != "" {
		l.readable("APNS_KEY_FILE", a.KeyFile)
	}
	l.httpsURL("APNS_ENDPOINT", a.Endpoint)
}

func (l *loader) fcm(f FCM) {
	l.allOrNone(map[string]string{"FCM_CREDENTIALS_FILE": f.CredentialsFile, "FCM_PROJECT_ID": f.ProjectID}, "FCM_CREDENTIALS_FILE")
	if f.CredentialsFile != "" {
		l.readable("FCM_CREDENTIALS_FILE", f.CredentialsFile)
	}
	l.httpsURL("FCM_ENDPOINT", f.Endpoint)
}

// allOrNone reports, under the variable first, a partly configured provider.
func (l *loader) allOrNone(vars map[string]string, first string) {
	var set, unset []string
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		if vars[name] == "" {
			unset = append(unset, name)
		} else {
			set = append(set, name)
		}
	}
	if len(set) > 0 && len(unset) > 0 {
		l.fail(first, "%s set but %s missing: set all or none", strings.Join(set, ", "), strings.Join(unset, ", "))
	}
}

func (l *loader) readable(name, path string) {
	f, err := os.Open(path)
	if err != nil {
		l.fail(name, "cannot read %s: %v", path, errors.Unwrap(err))
		return
	}
	_ = f.Close()
}

func (l *loader) httpsURL(name, raw string) {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		l.fail(name, "%q must be an https URL", raw)
	}
}
