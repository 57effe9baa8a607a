package manage

import (
	"context"
	"testing"
)

// WriteT writes p at off into the volume called name and flushes, for
// tests of this and other packages; it fails the test on any error.
func WriteT(t testing.TB, m *Manager, name string, off int64, p []byte) {
	t.Helper()
	ctx := context.Background()
	v, _, err := m.Open(ctx, name, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WriteAt(ctx, p, off, false); err != nil {
		t.Fatal(err)
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}
}

// ReadT returns n bytes at off of the volume, snapshot or image called
// name (n < 0: to the end), for tests; it fails the test on any error.
func ReadT(t testing.TB, m *Manager, name string, off int64, n int) []byte {
	t.Helper()
	ctx := context.Background()
	v, _, err := m.Open(ctx, name, false)
	if err != nil {
		t.Fatal(err)
	}
	if n < 0 {
		n = int(v.Size() - off)
	}
	p := make([]byte, n)
	if err := v.ReadAt(ctx, p, off); err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	return p
}
