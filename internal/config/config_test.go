package config

import (
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func key() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.StdEncoding.EncodeToString(b)
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil))
	if err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(".data")
	switch {
	case !c.Embedded(), c.ListenAddr != "127.0.0.1:8080", c.DataDir != abs, c.MasterKey != nil,
		c.PublicURL.String() != "http://127.0.0.1:8080", c.LogLevel != slog.LevelInfo, c.AuthFailureLimit != 60,
		c.DatabaseConnectTimeout != 30*time.Second, c.APNs.Enabled(), c.FCM.Enabled(),
		c.APNs.Endpoint != "https://api.push.apple.com", c.FCM.Endpoint != "https://fcm.googleapis.com/v1":
		t.Fatalf("defaults: %+v", c)
	}
}

func TestDerivedAndExplicit(t *testing.T) {
	t.Parallel()
	k1, k2, k3 := key(), key(), key()
	c, err := Load(env(map[string]string{
		"DATABASE_URL": "postgres://u@db/x", "MASTER_KEY": k1, "MASTER_KEY_PREVIOUS": k2 + ", " + k3,
		"LISTEN_ADDR": "0.0.0.0:9000", "LOG_LEVEL": "debug", "PUBLIC_URL": "https://mfa.example.com/base/",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Embedded() || len(c.PreviousMasterKeys) != 2 || c.PublicURL.String() != "https://mfa.example.com/base" ||
		c.LogLevel != slog.LevelDebug {
		t.Fatalf("%+v", c)
	}
	c, err = Load(env(map[string]string{"TRUSTED_PROXIES": "10.1.2.3/8, 192.168.0.1, ::1"}))
	if err != nil || len(c.TrustedProxies) != 3 || c.TrustedProxies[0].String() != "10.0.0.0/8" ||
		c.TrustedProxies[1].String() != "192.168.0.1/32" {
		t.Fatalf("trusted proxies %v %v", c.TrustedProxies, err)
	}
	c, err = Load(env(map[string]string{"LISTEN_ADDR": "0.0.0.0:9000"}))
	if err != nil || c.PublicURL.String() != "http://localhost:9000" {
		t.Fatalf("public URL for a wildcard listener: %v %v", c.PublicURL, err)
	}
}

func TestErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]string{
		"LISTEN_ADDR":                 {"LISTEN_ADDR": "8080"},
		"METRICS_ADDR":                {"METRICS_ADDR": "x"},
		"MASTER_KEY":                  {"MASTER_KEY": base64.StdEncoding.EncodeToString([]byte("short"))},
		"MASTER_KEY_PREVIOUS":         {"MASTER_KEY_PREVIOUS": key() + ",nope"},
		"DATABASE_URL":                {"DATABASE_URL": "http://x", "MASTER_KEY": key()},
		"PUBLIC_URL":                  {"PUBLIC_URL": "ftp://x"},
		"BOOTSTRAP_ADMIN_TOKEN":       {"BOOTSTRAP_ADMIN_TOKEN": strings.Repeat("a", 31)},
		"AUTH_FAILURE_LIMIT":          {"AUTH_FAILURE_LIMIT": "10"},
		"SHUTDOWN_TIMEOUT":            {"SHUTDOWN_TIMEOUT": "-1s"},
		"DATABASE_CONNECT_TIMEOUT":    {"DATABASE_CONNECT_TIMEOUT": "1h"},
		"FCM_CREDENTIALS_FILE":        {"FCM_PROJECT_ID": "p"},
		"APNS_KEY_FILE":               {"APNS_TOPIC": "com.example"},
		"APNS_ENDPOINT":               {"APNS_ENDPOINT": "api.push.apple.com"},
		"WEBHOOK_ALLOW_HTTP_LOOPBACK": {"WEBHOOK_ALLOW_HTTP_LOOPBACK": "maybe"},
		"TRUSTED_PROXIES":             {"TRUSTED_PROXIES": "10.0.0.0/8, proxy.example"},
	}
	for name, vars := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, err := Load(env(vars))
			if err == nil || !strings.Contains(err.Error(), name+":") {
				t.Fatalf("err = %v, want one naming %s", err, name)
			}
			for _, v := range vars {
				if len(v) > 20 && strings.Contains(err.Error(), v) {
					t.Fatalf("value echoed in the error: %v", err)
				}
			}
		})
	}
}

// TestREADMEDocumentsEveryVariable keeps the README's configuration table in
// step with what Load reads.
func TestREADMEDocumentsEveryVariable(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range Variables {
		if !strings.Contains(string(readme), "`"+v.Name+"`") {
			t.Errorf("README.md does not document %s", v.Name)
		}
	}
}
