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

// testCA is a certificate authority made for a test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	der  []byte
}

func newCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key, der}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes a certificate the CA signed and its key in dir as
// PREFIX-cert.pem and PREFIX-key.pem: for the server (127.0.0.1 and
// localhost) if prefix is "server", else for a client.
func (ca *testCA) issue(t *testing.T, dir, prefix string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: prefix},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if prefix == "server" {
		tmpl.Subject.CommonName = "localhost"
		tmpl.DNSNames, tmpl.IPAddresses = []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(dir, prefix+"-cert.pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, prefix+"-key.pem"), "EC PRIVATE KEY", keyDER)
}

// certDir makes a directory named as libnbd and QEMU look for
// certificates in: ca-cert.pem (ca), and a certificate signed by signer
// (server-* if server, else client-*; none if signer is nil).
func certDir(t *testing.T, dir string, ca, signer *testCA, server bool) string {
	t.Helper()
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, "ca-cert.pem"), "CERTIFICATE", ca.der)
	switch {
	case signer == nil:
	case server:
		signer.issue(t, dir, "server")
	default:
		signer.issue(t, dir, "client")
	}
	return dir
}

// TestTLS serves with --tls-required: nbdinfo and qemu-img connect with
// TLS; a plaintext client is refused.
func TestTLS(t *testing.T) {
	need(t, "nbdinfo", "qemu-img")
	e := newEnv(t)
	ca := newCA(t, "archip test CA")
	certs := certDir(t, e.path("pki"), ca, ca, true)
	e.archip("volume", "create", "sec", "--size", "8M")
	d := e.serve("--tls-cert", filepath.Join(certs, "server-cert.pem"), "--tls-key", filepath.Join(certs, "server-key.pem"), "--tls-required")

	out := run(t, "nbdinfo", "nbds://"+d.tcp+"/sec?tls-certificates="+certs)
	if !strings.Contains(out, "export-size: 8388608") || !strings.Contains(out, "with TLS") {
		t.Fatalf("nbdinfo over TLS:\n%s", out)
	}
	if out, err := qemuImgInfo(d, certs); err != nil {
		t.Fatalf("qemu-img over TLS: %v\n%s", err, out)
	}
	if out, err := exec.Command("nbdinfo", d.tcpURI("sec")).CombinedOutput(); err == nil {
		t.Fatalf("a plaintext client was served by a server that requires TLS:\n%s", out)
	}
}

// qemuImgInfo runs qemu-img info on sec over TLS with the certificates
// in the directory certs.
func qemuImgInfo(d *daemon, certs string) (string, error) {
	host, port, _ := net.SplitHostPort(d.tcp)
	out, err := exec.Command("qemu-img", "info", "--object", "tls-creds-x509,id=tls0,endpoint=client,dir="+certs,
		"--image-opts", "driver=nbd,server.type=inet,server.host="+host+",server.port="+port+",export=sec,tls-creds=tls0").CombinedOutput()
	return string(out), err
}

// TestTLSClientCertificates serves with --tls-ca and --tls-required:
// clients with a certificate that CA signed are served (nbdinfo,
// qemu-img); a client with a certificate from another CA, or with none,
// is refused.
func TestTLSClientCertificates(t *testing.T) {
	need(t, "nbdinfo", "qemu-img")
	e := newEnv(t)
	ca, other := newCA(t, "archip test CA"), newCA(t, "another CA")
	srv := certDir(t, e.path("pki"), ca, ca, true)
	good := certDir(t, e.path("good"), ca, ca, false)
	stranger := certDir(t, e.path("stranger"), ca, other, false)
	anonymous := certDir(t, e.path("anonymous"), ca, nil, false)
	e.archip("volume", "create", "sec", "--size", "8M")
	d := e.serve("--tls-cert", filepath.Join(srv, "server-cert.pem"), "--tls-key", filepath.Join(srv, "server-key.pem"),
		"--tls-ca", filepath.Join(srv, "ca-cert.pem"), "--tls-required")

	nbdinfo := func(certs string) (string, error) {
		out, err := exec.Command("nbdinfo", "nbds://"+d.tcp+"/sec?tls-certificates="+certs).CombinedOutput()
		return string(out), err
	}
	if out, err := nbdinfo(good); err != nil || !strings.Contains(out, "export-size: 8388608") {
		t.Fatalf("nbdinfo with a client certificate the CA signed: %v\n%s", err, out)
	}
	if out, err := qemuImgInfo(d, good); err != nil || !strings.Contains(out, "8 MiB") {
		t.Fatalf("qemu-img with a client certificate the CA signed: %v\n%s", err, out)
	}
	for name, dir := range map[string]string{"from another CA": stranger, "absent": anonymous} {
		if out, err := nbdinfo(dir); err == nil {
			t.Errorf("nbdinfo with a client certificate %s was served:\n%s", name, out)
		}
		if out, err := qemuImgInfo(d, dir); err == nil {
			t.Errorf("qemu-img with a client certificate %s was served:\n%s", name, out)
		}
	}
	if out, err := exec.Command("nbdinfo", d.tcpURI("sec")).CombinedOutput(); err == nil {
		t.Fatalf("a plaintext client was served by a server that requires TLS:\n%s", out)
	}
}
