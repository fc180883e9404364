package pushtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// CA is a throwaway certificate authority for the fakes' TLS. Its key lives
// only in memory, so nothing it signs is trusted outside the test run.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

// NewCA creates a CA with a fresh P-256 key, valid from an hour ago (clock
// skew between parent and child process) for thirty days.
func NewCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pushtest: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "pushtest CA " + serial.Text(16), Organization: []string{"pushtest"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pushtest: sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pushtest: parse CA certificate: %w", err)
	}
	return &CA{
		cert: cert,
		key:  key,
		pem:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	}, nil
}

// PEM returns the CA certificate, PEM-encoded (what SSL_CERT_FILE points at).
func (ca *CA) PEM() []byte { return bytes.Clone(ca.pem) }

// Pool returns a new pool holding only the CA, for a client's tls.Config
// RootCAs. Each call returns its own pool, so callers may add to it.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// ServerConfig returns a TLS config with a fresh leaf certificate for
// 127.0.0.1, ::1 and localhost signed by the CA, offering h2 and http/1.1.
func (ca *CA) ServerConfig() (*tls.Config, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pushtest: leaf key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     ca.cert.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pushtest: sign leaf certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pushtest: parse leaf certificate: %w", err)
	}
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pushtest: certificate serial: %w", err)
	}
	return serial, nil
}

// installed is the CA InstallCA put into this process's system roots. It is
// process-wide because the roots are: Go loads them once per process.
var installed struct {
	once sync.Once
	ca   *CA
	err  error
}

// InstallCA creates a CA, writes its PEM to dir/ca.pem and sets SSL_CERT_FILE
// to it, so every TLS client of this process that uses the system pool
// (apns2's and the Firebase SDK's default transports do) trusts the fakes, and
// so does every child process started with this process's environment. The
// system's own roots (SSL_CERT_DIR, /etc/ssl/certs) stay trusted, and so do
// those of an SSL_CERT_FILE set before, which ca.pem repeats.
//
// It must run before anything in the process loads the system roots: call it
// from TestMain. It checks that the roots it sees include the CA and fails
// otherwise. Calling it twice in one process returns the same CA (and the
// first call's error); dir must outlive the process's use of TLS.
func InstallCA(dir string) (*CA, error) {
	installed.once.Do(func() { installed.ca, installed.err = installCA(dir) })
	return installed.ca, installed.err
}

// InstallTempCA is InstallCA into a fresh temporary directory, which
// remove deletes: for a TestMain, to call once its tests are done.
func InstallTempCA() (ca *CA, remove func(), err error) {
	dir, err := os.MkdirTemp("", "pushtest-ca")
	if err != nil {
		return nil, nil, fmt.Errorf("pushtest: CA directory: %w", err)
	}
	// Readable by all, so a server under test may run as another user.
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return nil, nil, fmt.Errorf("pushtest: CA directory: %w", err)
	}
	if ca, err = InstallCA(dir); err != nil {
		os.RemoveAll(dir)
		return nil, nil, err
	}
	return ca, func() { os.RemoveAll(dir) }, nil
}

func installCA(dir string) (*CA, error) {
	ca, err := NewCA()
	if err != nil {
		return nil, err
	}
	// Go reads only SSL_CERT_FILE when it is set: keep what an earlier one
	// trusted (a parent test's CA, a proxy's), after ours.
	roots := bytes.Clone(ca.pem)
	if prev := os.Getenv("SSL_CERT_FILE"); prev != "" {
		b, err := os.ReadFile(prev)
		if err != nil {
			return nil, fmt.Errorf("pushtest: read the SSL_CERT_FILE already set: %w", err)
		}
		roots = append(roots, b...)
	}
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, roots, 0o644); err != nil {
		return nil, fmt.Errorf("pushtest: write CA: %w", err)
	}
	if err := os.Setenv("SSL_CERT_FILE", file); err != nil {
		return nil, fmt.Errorf("pushtest: set SSL_CERT_FILE: %w", err)
	}
	// Loading the roots here both proves the file is read and pins them for
	// the process; if they were loaded earlier, the CA is missing and no
	// in-process client would trust the fakes, which is better said now.
	system, err := x509.SystemCertPool()
	if err != nil {
		return nil, fmt.Errorf("pushtest: load system roots: %w", err)
	}
	if _, err := ca.cert.Verify(x509.VerifyOptions{Roots: system}); err != nil {
		return nil, errors.New("pushtest: the system roots were loaded before InstallCA and do not include its CA; call InstallCA first thing in TestMain")
	}
	return ca, nil
}
