package s3

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// TestServerNames are the S3 servers tests run against: versitygw, and
// radosgw in builds with -tags ceph (the tests that need a Ceph cluster,
// as for rados://).
var TestServerNames = []string{"versitygw"}

// testBucket is the bucket the test helpers use on every server.
const testBucket = "archip-test"

var testPrefixes atomic.Int64

// TestServer returns the configuration (bucket, no prefix) of the test
// server name, with its credentials:
//   - versitygw: ARCHIP_TEST_VERSITYGW names the versitygw binary; a
//     server is started for the test, by PID, on a loopback port chosen
//     now, with random root keys, and stopped when the test ends.
//   - radosgw: ARCHIP_TEST_RGW_ENDPOINT is its URL and
//     ARCHIP_TEST_RGW_CREDENTIALS a shared-credentials file holding its
//     keys (scripts/ceph-cluster.sh start-rgw prints and writes them).
//
// Without them it skips the test, or fails it under CI=true.
func TestServer(t testing.TB, name string) Config {
	t.Helper()
	var c Config
	switch name {
	case "versitygw":
		bin := os.Getenv("ARCHIP_TEST_VERSITYGW")
		if bin == "" {
			skip(t, "ARCHIP_TEST_VERSITYGW is not set: install versitygw (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0) and set it to the binary's path")
		}
		c = startVersityGW(t, bin)
	case "radosgw":
		ep, cf := os.Getenv("ARCHIP_TEST_RGW_ENDPOINT"), os.Getenv("ARCHIP_TEST_RGW_CREDENTIALS")
		if ep == "" || cf == "" {
			skip(t, "ARCHIP_TEST_RGW_ENDPOINT and ARCHIP_TEST_RGW_CREDENTIALS are not set: scripts/ceph-cluster.sh start-rgw DIR starts a radosgw on a test cluster and prints them")
		}
		ak, sk, err := readCredentials(cf)
		if err != nil {
			t.Fatal(err)
		}
		c = Config{Endpoint: ep, PathStyle: true, Region: "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider(ak, sk, "")}
	default:
		t.Fatalf("no test server %q", name)
	}
	c.Bucket = testBucket
	c.Concurrency, c.Timeout, c.Attempts = DefaultConcurrency, 30*time.Second, DefaultAttempts
	makeBucket(t, c)
	return c
}

// OpenTestStore opens a store on c under a prefix of its own, so that
// each call starts empty.
func OpenTestStore(t testing.TB, c Config) *Store {
	t.Helper()
	c.Prefix = fmt.Sprintf("t%d-%d-%d", os.Getpid(), time.Now().UnixNano()%1e6, testPrefixes.Add(1))
	s, err := OpenConfig(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestStoreURL returns the store URL of prefix on the test server c
// (TestServer), for tests that run the archip command: its keys go to the
// AWS environment variables of the test (shared files are turned off),
// never into the URL.
func TestStoreURL(t *testing.T, c Config, prefix string) string {
	t.Helper()
	cr, err := c.Credentials.Retrieve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", cr.AccessKeyID)
	t.Setenv("AWS_SECRET_ACCESS_KEY", cr.SecretAccessKey)
	t.Setenv("AWS_CONFIG_FILE", os.DevNull)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", os.DevNull)
	return fmt.Sprintf("s3://%s/%s?endpoint=%s", c.Bucket, prefix, url.QueryEscape(c.Endpoint))
}

func skip(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// readCredentials reads the default keys of an AWS shared-credentials
// file.
func readCredentials(path string) (ak, sk string, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "aws_access_key_id":
			ak = strings.TrimSpace(v)
		case "aws_secret_access_key":
			sk = strings.TrimSpace(v)
		}
	}
	if ak == "" || sk == "" {
		return "", "", fmt.Errorf("s3: %s: no aws_access_key_id and aws_secret_access_key", path)
	}
	return ak, sk, sc.Err()
}

func randHex(n int) string {
	b := make([]byte, n)
	for i := 0; i < n; i += 8 {
		copy(b[i:], nonce())
	}
	return hex.EncodeToString(b)
}

// startVersityGW starts a versitygw serving a fresh directory and stops it
// when the test ends.
func startVersityGW(t testing.TB, bin string, tlsArgs ...string) Config {
	t.Helper()
	dir := t.TempDir()
	ak, sk := "AK"+randHex(8), randHex(16)
	var lastErr error
	for try := 0; try < 5; try++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		cmd := exec.Command(bin, append(append([]string{"--port", addr}, tlsArgs...), "posix", dir)...)
		cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+ak, "ROOT_SECRET_KEY="+sk)
		out, err := os.Create(dir + ".log")
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = out, out
		if err := cmd.Start(); err != nil {
			t.Fatalf("starting versitygw: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait(); out.Close() }()
		stop := func() {
			cmd.Process.Kill()
			<-exited
		}
		up := false
	wait:
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); {
			select {
			case err := <-exited:
				exited <- err
				lastErr = fmt.Errorf("versitygw exited: %v", err)
				break wait
			default:
			}
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				up = true
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if !up {
			stop()
			if lastErr == nil {
				lastErr = fmt.Errorf("versitygw did not listen on %s within 30s", addr)
			}
			continue // the port may have been taken meanwhile
		}
		t.Cleanup(stop)
		scheme := "http://"
		if len(tlsArgs) > 0 {
			scheme = "https://"
		}
		return Config{Endpoint: scheme + addr, PathStyle: true, Region: "us-east-1",
			Credentials: credentials.NewStaticCredentialsProvider(ak, sk, "")}
	}
	b, _ := os.ReadFile(dir + ".log")
	t.Fatalf("starting versitygw: %v\n%s", lastErr, b)
	return Config{}
}

// makeBucket creates c's bucket if it does not exist.
func makeBucket(t testing.TB, c Config) {
	t.Helper()
	c.NoConditional = true
	s, err := OpenConfig(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	err = s.idem(ctx, func(ctx context.Context) error {
		_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(c.Bucket)})
		return err
	})
	if err != nil && code(err) != "BucketAlreadyOwnedByYou" && code(err) != "BucketAlreadyExists" {
		t.Fatalf("creating bucket %s: %v", c.Bucket, err)
	}
}
