package e2e

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

const (
	s3Access = "AKIAARCHIPE2E"
	s3Secret = "e2e-secret-key-not-for-production"
)

// awsBin is the AWS CLI: Debian's (v2) if installed, else the first on
// PATH.
func awsBin() string {
	if _, err := os.Stat("/usr/bin/aws"); err == nil {
		return "/usr/bin/aws"
	}
	return "aws"
}

var s3RE = regexp.MustCompile(`(?:frontend=S3 addr=|over S3 on )(\S+)`)

// serveS3 starts archip serve with the S3 API on a free loopback port
// and returns the daemon and the API's address.
func (e *env) serveS3(extra ...string) (*daemon, string) {
	e.t.Helper()
	keys := e.path("s3keys")
	os.WriteFile(keys, []byte("# test keys\n"+s3Access+" "+s3Secret+"\n"), 0o600)
	d := e.serve(append([]string{"--s3-listen", "127.0.0.1:0", "--s3-keys-file", keys}, extra...)...)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		d.mu.Lock()
		for _, l := range d.log {
			if m := s3RE.FindStringSubmatch(l); m != nil {
				d.mu.Unlock()
				return d, m[1]
			}
		}
		d.mu.Unlock()
	}
	e.t.Fatal("archip serve did not report its S3 address")
	return nil, ""
}

// awsCLI runs the AWS CLI against the S3 API at addr; it fails the test
// if the command fails.
func awsCLI(t *testing.T, addr string, args ...string) string {
	t.Helper()
	out, errOut, err := awsTry(addr, args...)
	if err != nil {
		t.Fatalf("aws %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// awsConfig makes an AWS CLI v1 presign with SigV4 too (its default is
// SigV2, which archip refuses); v2 signs with SigV4 anyway.
const awsConfig = "[default]\ns3 =\n    signature_version = s3v4\n"

func awsTry(addr string, args ...string) (string, string, error) {
	return awsTryKey(addr, s3Secret, args...)
}

func awsTryKey(addr, secret string, args ...string) (string, string, error) {
	return awsTryURL("http://"+addr, secret, args...)
}

func awsTryURL(endpoint, secret string, args ...string) (string, string, error) {
	cfg, err := os.CreateTemp("", "archip-aws-config")
	if err != nil {
		return "", "", err
	}
	defer os.Remove(cfg.Name())
	cfg.WriteString(awsConfig)
	cfg.Close()
	cmd := exec.Command(awsBin(), append([]string{"--endpoint-url", endpoint}, args...)...)
	cmd.Env = append(os.Environ(), "AWS_ACCESS_KEY_ID="+s3Access, "AWS_SECRET_ACCESS_KEY="+secret,
		"AWS_DEFAULT_REGION=us-east-1", "AWS_CONFIG_FILE="+cfg.Name(), "AWS_SHARED_CREDENTIALS_FILE=/dev/null",
		"AWS_EC2_METADATA_DISABLED=true", "AWS_PAGER=")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

func contentBytes(e *env) int64 {
	var st struct {
		ContentBytes int64 `json:"content_bytes"`
	}
	if err := json.Unmarshal([]byte(e.archip("--json", "store", "stats")), &st); err != nil {
		e.t.Fatal(err)
	}
	return st.ContentBytes
}

func sameFiles(t *testing.T, a, b string) {
	t.Helper()
	run(t, "cmp", a, b)
}

// TestObjectAPIAwsCLI drives archip serve --s3-listen with the AWS CLI: a
// multipart upload (20 MiB: the CLI's parts are 8 MiB), download, ls,
// head-object, range get, copy, presign + curl (tampered: refused), and
// an upload of the same file under another key stores no new block.
func TestObjectAPIAwsCLI(t *testing.T) {
	need(t, awsBin(), "curl", "cmp")
	e := newEnv(t)
	_, addr := e.serveS3()
	src := e.randomFile("disk.raw", 20<<20, 20<<20, 7)

	awsCLI(t, addr, "s3", "mb", "s3://images")
	awsCLI(t, addr, "s3", "cp", src, "s3://images/disk.raw")
	stored := contentBytes(e)
	if ls := awsCLI(t, addr, "s3", "ls", "s3://images/"); !strings.Contains(ls, "20971520 disk.raw") {
		t.Fatalf("aws s3 ls: %s", ls)
	}
	var head struct {
		ContentLength int64
		ETag          string
	}
	json.Unmarshal([]byte(awsCLI(t, addr, "s3api", "head-object", "--bucket", "images", "--key", "disk.raw")), &head)
	if head.ContentLength != 20<<20 || !strings.HasSuffix(head.ETag, `-3"`) {
		t.Fatalf("head-object: %+v (want 20 MiB from 3 parts)", head)
	}
	dst := e.path("down.raw")
	awsCLI(t, addr, "s3", "cp", "s3://images/disk.raw", dst)
	sameFiles(t, src, dst)

	// Range get.
	part := e.path("range")
	awsCLI(t, addr, "s3api", "get-object", "--bucket", "images", "--key", "disk.raw", "--range", "bytes=8388000-8389000", part)
	got, _ := os.ReadFile(part)
	all, _ := os.ReadFile(src)
	if !bytes.Equal(got, all[8388000:8389001]) {
		t.Fatalf("range get: %d bytes, differ", len(got))
	}

	// The same data again, and a server-side copy: no new block.
	awsCLI(t, addr, "s3", "cp", src, "s3://images/again.raw")
	awsCLI(t, addr, "s3", "cp", "s3://images/disk.raw", "s3://images/copy.raw")
	if now := contentBytes(e); now != stored {
		t.Fatalf("stored bytes grew from %d to %d uploading and copying the same data", stored, now)
	}
	awsCLI(t, addr, "s3", "cp", "s3://images/copy.raw", dst)
	sameFiles(t, src, dst)

	// Presign + curl; a tampered URL is refused.
	url := strings.TrimSpace(awsCLI(t, addr, "s3", "presign", "s3://images/disk.raw", "--expires-in", "600"))
	run(t, "curl", "-sSf", "-o", dst, url)
	sameFiles(t, src, dst)
	bad := strings.Replace(url, "disk.raw", "copy.raw", 1)
	if code := strings.TrimSpace(run(t, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", bad)); code != "403" {
		t.Fatalf("tampered presigned URL: HTTP %s, want 403", code)
	}

	// Wrong secret.
	if _, errOut, err := awsTryKey(addr, "wrong", "s3api", "list-buckets"); err == nil || !strings.Contains(errOut, "SignatureDoesNotMatch") {
		t.Fatalf("wrong secret: %v %s", err, errOut)
	}

	// Delete, and a bucket that is not empty.
	if _, errOut, err := awsTry(addr, "s3", "rb", "s3://images"); err == nil || !strings.Contains(errOut, "BucketNotEmpty") {
		t.Fatalf("rb of a non-empty bucket: %v %s", err, errOut)
	}
	awsCLI(t, addr, "s3", "rm", "--recursive", "s3://images/")
	awsCLI(t, addr, "s3", "rb", "s3://images")
}

// TestObjectAPIs3cmd drives the S3 API with s3cmd: a 0-byte put, a
// streaming upload from stdin, get, ls.
func TestObjectAPIs3cmd(t *testing.T) {
	need(t, "s3cmd", "cmp")
	e := newEnv(t)
	_, addr := e.serveS3()
	cfg := e.path("s3cfg")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[default]
access_key = %s
secret_key = %s
host_base = %s
host_bucket = %s
use_https = False
signature_v2 = False
bucket_location = us-east-1
`, s3Access, s3Secret, addr, addr)), 0o600)
	s3cmd := func(args ...string) string {
		t.Helper()
		return run(t, "s3cmd", append([]string{"-c", cfg, "--no-progress"}, args...)...)
	}
	s3cmd("mb", "s3://files")
	empty := e.path("empty")
	os.WriteFile(empty, nil, 0o644)
	s3cmd("put", empty, "s3://files/empty")
	src := e.randomFile("stream.bin", 17<<20, 17<<20, 9)
	cmd := exec.Command("s3cmd", "-c", cfg, "--no-progress", "--multipart-chunk-size-mb=5", "put", "-", "s3://files/stream.bin")
	f, _ := os.Open(src)
	defer f.Close()
	cmd.Stdin = f
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("s3cmd put from stdin: %v\n%s", err, out)
	}
	ls := s3cmd("ls", "s3://files/")
	if !strings.Contains(ls, "s3://files/empty") || !strings.Contains(ls, "s3://files/stream.bin") {
		t.Fatalf("s3cmd ls: %s", ls)
	}
	dst := e.path("got")
	s3cmd("get", "--force", "s3://files/stream.bin", dst)
	sameFiles(t, src, dst)
	s3cmd("get", "--force", "s3://files/empty", dst)
	sameFiles(t, empty, dst)
}

// TestObjectAPIImageWorkflow: upload a raw image with the aws CLI (multipart),
// clone a volume from the object, read it over NBD (equal to the file),
// make it an image too,
// upload it again under another key (no new blocks), write, snapshot,
// publish the snapshot as an object, download it with the aws CLI: equal
// to the snapshot.
func TestObjectAPIImageWorkflow(t *testing.T) {
	need(t, awsBin(), "qemu-img", "qemu-io", "cmp")
	e := newEnv(t)
	d, addr := e.serveS3()
	src := e.randomFile("base.raw", 12<<20, 24<<20, 11)
	awsCLI(t, addr, "s3", "mb", "s3://images")
	awsCLI(t, addr, "s3", "cp", src, "s3://images/base.raw")
	stored := contentBytes(e)
	e.archip("volume", "clone", "s3://images/base.raw", "vm")
	if now := contentBytes(e); now != stored {
		t.Fatalf("clone from an object stored %d bytes", now-stored)
	}
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, d.uri("vm"))
	e.archip("image", "import", "s3://images/base.raw", "base")
	run(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", src, d.uri("base"))
	disk, _ := diskUse(t, e.path("store"))
	awsCLI(t, addr, "s3", "cp", src, "s3://images/base-again.raw")
	if now := contentBytes(e); now != stored {
		t.Fatalf("the same image under another key stored %d bytes", now-stored)
	}
	// On the disk too (du, not the store's own count): a map, records and
	// directories, not the image's 24 MiB again.
	if now, _ := diskUse(t, e.path("store")); now-disk > 2<<20 {
		t.Fatalf("the same image under another key took %d bytes more on the disk (du)", now-disk)
	}

	qemuIO(t, d.uri("vm"), "write -P 0x5a 1M 256k", "write -P 0xa5 20M 64k")
	e.archip("volume", "snapshot", "vm", "vm@1")
	qemuIO(t, d.uri("vm"), "write -P 0x11 0 64k") // after the snapshot: not published
	e.archip("image", "publish", "vm@1", "s3://images/vm1.raw")
	want := e.path("vm1-export.raw")
	e.archip("image", "export", "vm@1", want)
	got := e.path("vm1-download.raw")
	awsCLI(t, addr, "s3", "cp", "s3://images/vm1.raw", got)
	sameFiles(t, want, got)
	e.archip("volume", "remove", "vm@1")
	awsCLI(t, addr, "s3", "cp", "s3://images/vm1.raw", got)
	sameFiles(t, want, got)
}

// TestObjectAPIHTTPS: with --tls-cert and --tls-key the S3 API is HTTPS; the
// aws CLI uploads (multipart) and downloads over it.
func TestObjectAPIHTTPS(t *testing.T) {
	need(t, awsBin(), "cmp")
	e := newEnv(t)
	cert, key := e.path("cert.pem"), e.path("key.pem")
	writeSelfSigned(t, cert, key)
	_, addr := e.serveS3("--tls-cert", cert, "--tls-key", key)
	src := e.randomFile("f.bin", 9<<20, 9<<20, 13)
	tls := func(args ...string) string {
		t.Helper()
		out, errOut, err := awsTryURL("https://"+addr, s3Secret, append([]string{"--ca-bundle", cert}, args...)...)
		if err != nil {
			t.Fatalf("aws %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
		return out
	}
	tls("s3", "mb", "s3://sec")
	tls("s3", "cp", src, "s3://sec/f.bin")
	dst := e.path("f.out")
	tls("s3", "cp", "s3://sec/f.bin", dst)
	sameFiles(t, src, dst)
}

func writeSelfSigned(t *testing.T, certFile, keyFile string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(k)
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
}
