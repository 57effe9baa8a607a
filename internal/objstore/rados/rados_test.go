//go:build ceph

package rados

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

var ctx = context.Background()

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return OpenTestStore(t) })
}

func TestMapErr(t *testing.T) {
	for _, c := range []struct {
		errno syscall.Errno
		want  error
	}{
		{syscall.ENOENT, objstore.ErrNotFound},
		{syscall.EEXIST, objstore.ErrExists},
		{syscall.ERANGE, objstore.ErrConflict},
		{syscall.ECANCELED, objstore.ErrConflict},
		{syscall.EOVERFLOW, objstore.ErrConflict},
		{syscall.ENOSPC, objstore.ErrNoSpace},
		{syscall.EDQUOT, objstore.ErrNoSpace},
		{syscall.EROFS, objstore.ErrReadOnly},
		{syscall.ETIMEDOUT, objstore.ErrTimeout},
	} {
		if err := mapErr(errnoError(-int(c.errno))); !errors.Is(err, c.want) {
			t.Errorf("errno %d (%v): %v, want %v", int(c.errno), c.errno, err, c.want)
		}
	}
	if err := mapErr(errnoError(-int(syscall.EIO))); err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("EIO: %v", err)
	}
	if mapErr(nil) != nil {
		t.Error("mapErr(nil) != nil")
	}
}

func TestBadURL(t *testing.T) {
	for _, raw := range []string{"rados://", "rados://p?bogus=1"} {
		u, _ := url.Parse(raw)
		if _, err := Open(context.Background(), u); err == nil {
			t.Errorf("Open(%q) succeeded", raw)
		}
	}
}

// TestFullPool: on a pool over its quota, writes fail with ErrNoSpace
// instead of waiting for space (librados's default), and deletes, which
// free it, go through.
func TestFullPool(t *testing.T) {
	base := OpenTestStore(t)
	pool := fmt.Sprintf("archip-full-%d", os.Getpid())
	mon := func(cmd map[string]any) {
		t.Helper()
		b, _ := json.Marshal(cmd)
		if _, info, err := base.conn.MonCommand(b); err != nil {
			t.Fatalf("%v: %v (%s)", cmd, err, info)
		}
	}
	if err := base.conn.MakePool(pool); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mon(map[string]any{"prefix": "osd pool delete", "pool": pool, "pool2": pool, "yes_i_really_really_mean_it": true})
	})
	mon(map[string]any{"prefix": "osd pool set-quota", "pool": pool, "field": "max_objects", "val": "3"})
	u, _ := url.Parse("rados://" + pool + "?conf=" + url.QueryEscape(os.Getenv("ARCHIP_TEST_CEPH_CONF")))
	s, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	closeStore := true
	defer func() {
		if closeStore {
			s.Close()
		}
	}()

	// The monitor marks the pool full when the OSD next reports its
	// usage (seconds); until then writes still land.
	deadline := time.Now().Add(2 * time.Minute)
	var full error
	for i := 0; full == nil; i++ {
		if time.Now().After(deadline) {
			t.Fatal("the pool over its quota was never reported full")
		}
		done := make(chan error, 1)
		go func() { _, err := s.Put(ctx, fmt.Sprintf("o%d", i), []byte("data")); done <- err }()
		var err error
		select {
		case err = <-done:
		case <-time.After(time.Minute):
			closeStore = false // it would wait for the held write
			t.Fatalf("write %d held for a minute on a pool over quota", i)
		}
		switch {
		case errors.Is(err, objstore.ErrNoSpace):
			full = err
		case err != nil:
			t.Fatalf("write %d on a pool over quota: %v (want ErrNoSpace)", i, err)
		default:
			time.Sleep(500 * time.Millisecond)
		}
	}
	t.Logf("full: %v", full)
	if err := s.WriteAt(ctx, "o0", []byte("more"), 4); !errors.Is(err, objstore.ErrNoSpace) {
		t.Fatalf("in-place write on a full pool: %v, want ErrNoSpace", err)
	}
	if b, _, err := s.Get(ctx, "o0"); err != nil || string(b) != "data" {
		t.Fatalf("o0 after refused writes: %q, %v", b, err)
	}
	if err := s.Delete(ctx, "o0"); err != nil {
		t.Fatalf("delete on a full pool: %v", err)
	}
}
