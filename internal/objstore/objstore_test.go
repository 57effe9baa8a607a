package objstore_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/objstore/all"
	"github.com/archipelago-go/archip/internal/objstore/storetest"
)

func TestMem(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewMem() })
}

func TestCrashable(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewCrashable() })
}

func TestFile(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store {
		f, err := objstore.OpenFile(t.TempDir(), true)
		if err != nil {
			t.Fatal(err)
		}
		return f
	})
}

func TestFaultyPassesThrough(t *testing.T) {
	storetest.Run(t, func(t *testing.T) objstore.Store { return objstore.NewFaulty(objstore.NewMem()) })
}

func TestFileTwoHandlesShareState(t *testing.T) {
	// Two opens of one directory act like two hosts sharing it over NFS.
	dir := t.TempDir()
	a, err := objstore.OpenFile(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := objstore.OpenFile(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	v, err := a.Put(ctx, "x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Swap(ctx, "x", []byte("2"), v); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Swap(ctx, "x", []byte("3"), v); !errors.Is(err, objstore.ErrConflict) {
		t.Fatalf("stale swap through the other handle: %v", err)
	}
}

func TestFileMissingAndBadFormat(t *testing.T) {
	if _, err := objstore.OpenFile(t.TempDir(), false); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("opening an empty directory without create: %v", err)
	}
}

func TestCrashKeepsOnlySynced(t *testing.T) {
	ctx := context.Background()
	m := objstore.NewCrashable()
	m.Put(ctx, "put", []byte("durable"))
	m.WriteAt(ctx, "w", []byte("synced"), 0)
	m.Sync(ctx, "w")
	m.WriteAt(ctx, "w", []byte("LOST"), 0)
	for seed := uint64(0); seed < 20; seed++ {
		c := m.Crash(rand.New(rand.NewPCG(seed, 0)))
		if b, _, _ := c.Get(ctx, "put"); string(b) != "durable" {
			t.Fatalf("seed %d: put object = %q", seed, b)
		}
		b, _, _ := c.Get(ctx, "w")
		if string(b) != "synced" && string(b) != "LOSTed" {
			t.Fatalf("seed %d: written object = %q", seed, b)
		}
	}
}

func TestFaultRules(t *testing.T) {
	ctx := context.Background()
	f := objstore.NewFaulty(objstore.NewMem())
	f.Add(objstore.Rule{Op: objstore.OpPut, Prefix: "blk/", Skip: 1, Count: 1, Err: objstore.ErrNoSpace})
	for i, want := range []error{nil, objstore.ErrNoSpace, nil} {
		if _, err := f.Put(ctx, "blk/x", nil); !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("put %d: %v, want %v", i, err, want)
		}
	}
	if _, err := f.Put(ctx, "other", nil); err != nil {
		t.Fatal(err)
	}
}

func TestRegistry(t *testing.T) {
	ctx := context.Background()
	r := all.Registry()
	dir := t.TempDir()
	for _, u := range []string{"file://" + dir, dir} {
		s, err := r.Open(ctx, u, objstore.OpenOptions{Create: true})
		if err != nil {
			t.Fatalf("%s: %v", u, err)
		}
		s.Close()
	}
	for _, bad := range []string{"", "nosuch://x", "file://otherhost/x"} {
		if _, err := r.Open(ctx, bad, objstore.OpenOptions{}); !errors.Is(err, objstore.ErrBadURL) {
			t.Errorf("Open(%q) = %v, want ErrBadURL", bad, err)
		}
	}
	a, _ := r.Open(ctx, "mem://t", objstore.OpenOptions{})
	a.Put(ctx, "k", []byte("v"))
	a.Close()
	b, _ := r.Open(ctx, "mem://t", objstore.OpenOptions{})
	if got, _, err := b.Get(ctx, "k"); err != nil || string(got) != "v" {
		t.Fatalf("mem:// store not shared within a registry: %q %v", got, err)
	}
}
