//go:build linux

package objstore_test

import (
	"bytes"
	"context"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/archipelago-go/archip/internal/objstore"
)

// alignedBuf returns n bytes starting on a page boundary in memory.
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)) % 4096
	return b[skip : skip+n : skip+n]
}

// generationFile returns the path of the newest generation of name in
// the file store at root.
func generationFile(t *testing.T, root, name string) string {
	t.Helper()
	dir := filepath.Join(root, objectDirOf(t, name))
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	newest := ""
	for _, e := range ents {
		if e.Type().IsRegular() && e.Name() > newest {
			newest = e.Name()
		}
	}
	if newest == "" {
		t.Fatalf("no generation file in %s", dir)
	}
	return filepath.Join(dir, newest)
}

// residentPages counts the pages of the file at path in the page cache.
func residentPages(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(st.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	vec := make([]byte, (len(m)+4095)/4096)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n
}

// directIO reports whether the file system of dir takes O_DIRECT.
func directIO(dir string) bool {
	fd, err := unix.Open(filepath.Join(dir, "direct-probe"), unix.O_CREAT|unix.O_WRONLY|unix.O_DIRECT, 0o644)
	if err != nil {
		return false
	}
	unix.Close(fd)
	os.Remove(filepath.Join(dir, "direct-probe"))
	return true
}

// TestFileLargeObjectsAroundCache: a new object of 1 MiB or more is
// written around the page cache (its last partial page aside), and a
// handle's ReadAtUncached reads it without filling the cache; both give
// back the bytes, also where the buffer, offset or length does not suit
// O_DIRECT (they go through the cache), and a small object goes through
// the cache.
func TestFileLargeObjectsAroundCache(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	f, err := objstore.OpenFile(root, true)
	if err != nil {
		t.Fatal(err)
	}
	direct := directIO(root)
	// Uncached reads open the handle's descriptor again through /proc.
	_, err = os.Stat("/proc/self/fd")
	directRead := direct && err == nil
	rng := rand.New(rand.NewPCG(1, 2))
	data := alignedBuf(4<<20 + 100)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	if _, err := f.Create(ctx, "big", data); err != nil {
		t.Fatal(err)
	}
	gen := generationFile(t, root, "big")
	if n := residentPages(t, gen); direct && n > 1 {
		t.Errorf("%d pages of a new 4 MiB object in the page cache; want at most its last partial one", n)
	}

	h, err := f.OpenHandle(ctx, "big", false, false)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	u, ok := h.(objstore.UncachedReader)
	if !ok {
		t.Fatal("the file store's handle reads no way around the cache")
	}
	p := alignedBuf(8 << 20)
	for i := range p {
		p[i] = 0xee // past the end must read as zeros
	}
	if err := u.ReadAtUncached(p, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p[:len(data)], data) || !bytes.Equal(p[len(data):], make([]byte, len(p)-len(data))) {
		t.Fatal("ReadAtUncached of the whole object and past its end gave other bytes")
	}
	if n := residentPages(t, gen); directRead && n > 1 {
		t.Errorf("%d pages in the page cache after ReadAtUncached; want at most the last partial one", n)
	}
	// Not suited to O_DIRECT: through the cache, the same bytes.
	for _, c := range []struct {
		name string
		p    []byte
		off  int64
	}{
		{"an unaligned offset", alignedBuf(1 << 20), 100},
		{"an unaligned buffer", alignedBuf(1<<20 + 1)[1:], 0},
		{"a length not of whole pages", alignedBuf(1<<20 + 1), 4096},
		{"a small read", alignedBuf(4096), 8192},
	} {
		if err := u.ReadAtUncached(c.p, c.off); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if !bytes.Equal(c.p, data[c.off:c.off+int64(len(c.p))]) {
			t.Fatalf("%s: other bytes", c.name)
		}
	}
	if got, _, err := f.Get(ctx, "big"); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get: %v, equal %v", err, bytes.Equal(got, data))
	}

	// A buffer not aligned in memory, and a small object: through the
	// cache, the same bytes.
	odd := alignedBuf(2<<20 + 1)[1:]
	copy(odd, data)
	if _, err := f.Create(ctx, "odd", odd); err != nil {
		t.Fatal(err)
	}
	small := data[:64<<10]
	if _, err := f.Create(ctx, "small", small); err != nil {
		t.Fatal(err)
	}
	if n := residentPages(t, generationFile(t, root, "small")); n != 16 {
		t.Errorf("%d pages of a new 64 KiB object in the page cache; want all 16 (small objects go through it)", n)
	}
	for name, want := range map[string][]byte{"odd": odd, "small": small} {
		if got, _, err := f.Get(ctx, name); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("Get %s: %v, equal %v", name, err, bytes.Equal(got, want))
		}
	}
}
