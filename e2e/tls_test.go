package e2e

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
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCerts makes a CA and a server certificate for 127.0.0.1 and
// localhost in dir, named as libnbd and QEMU look for them.
func writeCerts(t *testing.T, dir string) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "archip test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	srv := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srv, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	write := func(name, typ string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("ca-cert.pem", "CERTIFICATE", caDER)
	write("server-cert.pem", "CERTIFICATE", srvDER)
	write("server-key.pem", "EC PRIVATE KEY", keyDER)
}

// TestTLS serves with --tls-required: nbdinfo and qemu-img connect with
// TLS; a plaintext client is refused.
func TestTLS(t *testing.T) {
	need(t, "nbdinfo", "qemu-img")
	e := newEnv(t)
	certs := e.path("pki")
	os.Mkdir(certs, 0o700)
	writeCerts(t, certs)
	e.archip("volume", "create", "sec", "--size", "8M")
	d := e.serve("--tls-cert", filepath.Join(certs, "server-cert.pem"), "--tls-key", filepath.Join(certs, "server-key.pem"), "--tls-required")

	out := run(t, "nbdinfo", "nbds://"+d.tcp+"/sec?tls-certificates="+certs)
	if !strings.Contains(out, "export-size: 8388608") || !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	host, port, _ := net.SplitHostPort(d.tcp)
	run(t, "qemu-img", "info", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+certs,
		"--image-opts", "driver=nbd,server.type=inet,server.host="+host+",server.port="+port+",export=sec,tls-creds=tls0")
	if out, err := exec.Command("nbdinfo", d.tcpURI("sec")).CombinedOutput(); err == nil {
		t.Fatalf("a plaintext client was served by a server that requires TLS:\n%s", out)
	}
}
