package nbd

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// testCA is a certificate authority for tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key, der}
}

// issue makes a certificate for a server (localhost) or a client, and
// writes it and its key as PEM files in dir: NAME-cert.pem, NAME-key.pem.
func (ca *testCA) issue(t *testing.T, dir, name string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.DNSNames, tmpl.ExtKeyUsage = []string{"localhost"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	os.WriteFile(filepath.Join(dir, name+"-cert.pem"), certPEM, 0o600)
	os.WriteFile(filepath.Join(dir, name+"-key.pem"), keyPEM, 0o600)
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (ca *testCA) writePEM(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// startTLS reads the greeting and asks for STARTTLS; it returns the
// client's TLS configuration, trusting ca.
func (c *client) startTLS(ca *testCA) *tls.Config {
	c.t.Helper()
	c.hello()
	c.option(optStartTLS, nil)
	if typ, _ := c.optReply(); typ != repAck {
		c.t.Fatalf("STARTTLS: reply %#x", typ)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	return &tls.Config{RootCAs: roots, ServerName: "localhost"}
}

// tlsOpen connects to addr, upgrades with STARTTLS presenting cert (if
// any) and opens rw; it returns the error of the first step that failed.
func tlsOpen(t *testing.T, addr string, ca *testCA, cert *tls.Certificate) error {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	c := &client{t: t, nc: nc}
	cfg := c.startTLS(ca)
	if cert != nil {
		// Sent whoever the server says it trusts (Go's client otherwise
		// keeps a certificate of another CA to itself).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return err
	}
	// With TLS 1.3 the server judges the client's certificate after the
	// client's handshake is done: its verdict comes with the first read.
	if _, err := tc.Write(optHeader(optGo, goData("rw"))); err != nil {
		return err
	}
	if _, err := tc.Read(make([]byte, 1)); err != nil {
		return err
	}
	return nil
}

func optHeader(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, magicOpt)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// TestTLSClientCertificates: with a client CA, a client certificate
// that CA signed is accepted; one from another CA is refused; with
// TLSRequired, so is a client without a certificate.
func TestTLSClientCertificates(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "test CA"), newTestCA(t, "other CA")
	ca.issue(t, dir, "server", true)
	good := ca.issue(t, dir, "client", false)
	bad := other.issue(t, dir, "stranger", false)
	ca.writePEM(t, filepath.Join(dir, "ca-cert.pem"))
	for _, required := range []bool{false, true} {
		cfg, err := ServerTLS(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca-cert.pem"), required)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := newTestServer(t)
		s.TLS, s.TLSRequired = cfg, required
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go s.Serve(l)
		t.Cleanup(func() { l.Close() })
		addr := l.Addr().String()
		if err := tlsOpen(t, addr, ca, &good); err != nil {
			t.Errorf("required=%v: a client certificate the CA signed: %v", required, err)
		}
		if err := tlsOpen(t, addr, ca, &bad); err == nil {
			t.Errorf("required=%v: a client certificate from another CA was accepted", required)
		}
		err = tlsOpen(t, addr, ca, nil)
		if required && err == nil {
			t.Errorf("required=%v: a client without a certificate was accepted", required)
		}
		if !required && err != nil {
			t.Errorf("required=%v: a client without a certificate: %v", required, err)
		}
	}
	if _, err := ServerTLS(filepath.Join(dir, "server-cert.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "server-key.pem"), true); err == nil {
		t.Error("a CA file without a certificate was accepted")
	}
}
