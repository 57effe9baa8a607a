package s3

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCustomCA: a server whose certificate a private authority signed is
// reached with ca=FILE, and refused without it.
func TestCustomCA(t *testing.T) {
	bin := os.Getenv("ARCHIP_TEST_VERSITYGW")
	if bin == "" {
		skip(t, "ARCHIP_TEST_VERSITYGW is not set")
	}
	dir := t.TempDir()
	ca, cert, key := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeCerts(t, ca, cert, key)
	c := startVersityGW(t, bin, "--cert", cert, "--key", key)
	c.Bucket, c.CA = testBucket, ca
	makeBucket(t, c)
	s := OpenTestStore(t, c)
	if _, err := s.Put(ctx, "x", []byte("over TLS")); err != nil {
		t.Fatal(err)
	}
	if b, _, err := s.Get(ctx, "x"); err != nil || string(b) != "over TLS" {
		t.Fatalf("Get = %q, %v", b, err)
	}
	c.CA, c.Attempts = "", 1
	c.Prefix = "p"
	if _, err := OpenConfig(ctx, c); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("open without the CA: %v; want a certificate error", err)
	}
}

func writeCerts(t *testing.T, caPath, certPath, keyPath string) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "archip test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	for path, b := range map[string]*pem.Block{caPath: {Type: "CERTIFICATE", Bytes: caDER}, certPath: {Type: "CERTIFICATE", Bytes: der}, keyPath: {Type: "EC PRIVATE KEY", Bytes: kb}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
}
