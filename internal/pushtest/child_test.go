package pushtest

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestChildProcess runs this test binary again as a stand-in for the server
// (see childMain): configured only by the server's own variables, with
// apns2's and the Firebase SDK's default transports, it reaches the fakes
// because it inherits SSL_CERT_FILE from InstallCA.
func TestChildProcess(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p8, key, err := NewP8Key()
	if err != nil {
		t.Fatal(err)
	}
	apns, err := NewAPNs(APNsConfig{CA: installedCA, KeyID: testKeyID, TeamID: testTeamID, Key: &key.PublicKey, Topic: testTopic})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(apns.Close)
	fcm := newFCMFake(t)

	keyFile, credsFile := filepath.Join(dir, "apns.p8"), filepath.Join(dir, "fcm.json")
	if err := os.WriteFile(keyFile, p8, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(credsFile, fcm.CredentialsJSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	apnsDevice, fcmDevice := newDeviceToken(t), newFCMToken(t)
	apns.Script(apnsDevice, Reply{Reason: "Unregistered"})
	env := []string{
		"APNS_ENDPOINT=" + apns.URL(),
		"APNS_KEY_FILE=" + keyFile,
		"APNS_KEY_ID=" + testKeyID,
		"APNS_TEAM_ID=" + testTeamID,
		"APNS_TOPIC=" + testTopic,
		"APNS_DEVICE_TOKEN=" + apnsDevice,
		"FCM_ENDPOINT=" + fcm.Endpoint(),
		"FCM_CREDENTIALS_FILE=" + credsFile,
		"FCM_PROJECT_ID=" + testProject,
		"FCM_DEVICE_TOKEN=" + fcmDevice,
	}

	t.Run("trusts the fakes through SSL_CERT_FILE", func(t *testing.T) {
		t.Parallel()
		res := runChild(t, "apns,fcm", append(os.Environ(), env...))
		if res.APNsError != "" || res.APNsStatus != 410 || res.APNsReason != "Unregistered" || !canonicalUUID(res.APNsID) {
			t.Errorf("child's APNs push: %+v, want the scripted 410 Unregistered", res)
		}
		if res.FCMError != "" || !strings.HasPrefix(res.FCMName, "projects/"+testProject+"/messages/") {
			t.Errorf("child's FCM send: %+v", res)
		}
		if got := apns.ReceivedFor(apnsDevice); len(got) != 1 || got[0].ApnsID != res.APNsID || !got[0].Answered {
			t.Errorf("APNs fake received %+v", got)
		}
		if got := fcm.ReceivedFor(fcmDevice); len(got) != 1 || got[0].Name != res.FCMName {
			t.Errorf("FCM fake received %+v", got)
		}
		// The child fetched its access token from the fake.
		if fcm.TokensIssued() != 1 {
			t.Errorf("tokens issued %d, want 1", fcm.TokensIssued())
		}
	})

	t.Run("distrusts them without it", func(t *testing.T) {
		t.Parallel()
		// Only APNs: the Firebase SDK would retry the TLS failure for 7 s.
		withoutCA := slices.DeleteFunc(append(os.Environ(), env...), func(kv string) bool {
			return strings.HasPrefix(kv, "SSL_CERT_FILE=")
		})
		res := runChild(t, "apns", withoutCA)
		if !strings.Contains(res.APNsError, "certificate signed by unknown authority") {
			t.Errorf("child's APNs push without the CA: %+v, want a certificate error", res)
		}
	})
}

func runChild(t *testing.T, providers string, env []string) childResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe)
	cmd.Env = append(env, childEnv+"="+providers)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("child: %v\nstderr: %s", err, stderr.String())
	}
	var res childResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("child's output %q: %v\nstderr: %s", stdout.String(), err, stderr.String())
	}
	return res
}

func TestInstallCA(t *testing.T) {
	t.Parallel()
	again, err := InstallCA(t.TempDir())
	if err != nil || again != installedCA {
		t.Fatalf("second InstallCA = %p, %v; want the first CA %p", again, err, installedCA)
	}
	file := os.Getenv("SSL_CERT_FILE")
	pemBytes, err := os.ReadFile(file)
	if err != nil || filepath.Base(file) != "ca.pem" || !bytes.HasPrefix(pemBytes, installedCA.PEM()) {
		t.Errorf("SSL_CERT_FILE %q holds %q (%v), want the CA's PEM", file, pemBytes, err)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := installedCA.cert.Verify(x509.VerifyOptions{Roots: roots}); err != nil {
		t.Errorf("the system roots do not hold the CA: %v", err)
	}
}

func TestCA(t *testing.T) {
	t.Parallel()
	ca, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(ca.PEM())
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatalf("PEM %q", ca.PEM())
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		t.Fatalf("CA certificate %v, %v", cert, err)
	}
	cfg, err := ca.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("ALPN %q", cfg.NextProtos)
	}
	leaf := cfg.Certificates[0].Leaf
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: host}); err != nil {
			t.Errorf("leaf for %s: %v", host, err)
		}
	}
	other, err := NewCA()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: other.Pool(), DNSName: "localhost"}); err == nil {
		t.Error("another CA's pool trusts the leaf")
	}
	// Pools are the caller's own.
	p := ca.Pool()
	p.AddCert(other.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: "localhost"}); err != nil {
		t.Error(err)
	}
}
