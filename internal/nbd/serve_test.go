package nbd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// flakyListener returns the errors in errs from Accept, then the
// connections sent on conns, until closed.
type flakyListener struct {
	mu     sync.Mutex
	errs   []error
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		l.mu.Unlock()
		return nil, err
	}
	l.mu.Unlock()
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *flakyListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *flakyListener) Addr() net.Addr { return &net.UnixAddr{Name: "flaky", Net: "unix"} }

// logBuffer collects a server's log lines.
type logBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (b *logBuffer) logf(format string, args ...any) {
	b.mu.Lock()
	b.lines = append(b.lines, fmt.Sprintf(format, args...))
	b.mu.Unlock()
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}

// waitFor returns the log once it holds every one of subs, or after a
// long while (hang protection: the caller then fails on what it has).
// A line logged after the client saw the connection end (a recovered
// panic is logged once the connection's deferred closes ran) comes a
// moment later.
func (b *logBuffer) waitFor(subs ...string) string {
	deadline := time.Now().Add(time.Minute)
	for {
		l, all := b.String(), true
		for _, sub := range subs {
			all = all && strings.Contains(l, sub)
		}
		if all || time.Now().After(deadline) {
			return l
		}
		time.Sleep(time.Millisecond)
	}
}

// TestServeRetriesTransientAcceptErrors: out of file descriptors and an
// aborted connection are passing conditions: Serve logs them, backs off
// and serves the next connection.
func TestServeRetriesTransientAcceptErrors(t *testing.T) {
	s, _ := newTestServer(t)
	var log logBuffer
	s.Logf = log.logf
	accErr := func(e syscall.Errno) error {
		return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", e)}
	}
	l := &flakyListener{
		errs:   []error{accErr(syscall.EMFILE), accErr(syscall.ENFILE), accErr(syscall.ECONNABORTED), accErr(syscall.ENOBUFS)},
		conns:  make(chan net.Conn),
		closed: make(chan struct{}),
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	a, b := net.Pipe()
	defer b.Close()
	select {
	case l.conns <- a:
	case err := <-served:
		t.Fatalf("Serve returned on a transient accept error: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not accept after transient errors")
	}
	c := &client{t: t, nc: b}
	b.SetDeadline(time.Now().Add(10 * time.Second))
	c.hello()
	if !strings.Contains(log.String(), "too many open files") {
		t.Errorf("accept errors not logged:\n%s", log.String())
	}
	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve after Shutdown: %v", err)
	}
}

// TestServeReturnsPermanentAcceptErrors: an error that will not pass
// ends Serve.
func TestServeReturnsPermanentAcceptErrors(t *testing.T) {
	s, _ := newTestServer(t)
	bad := errors.New("listener broken")
	l := &flakyListener{errs: []error{bad}, conns: make(chan net.Conn), closed: make(chan struct{})}
	if err := s.Serve(l); !errors.Is(err, bad) {
		t.Fatalf("Serve: %v, want %v", err, bad)
	}
}
