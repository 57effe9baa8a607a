package objstore

import (
	"os"
	"path/filepath"
	"testing"
)

// TestExt4NoJournal reads ext4's journal_task in a sysfs tree laid out as
// the kernel's: the device's name from the /sys/dev/block link, "<none>"
// without a journal, a thread's number with one; and lazytime among the
// super block's options in a mount table.
func TestExt4NoJournal(t *testing.T) {
	root := t.TempDir()
	mk := func(mm, dev, journal string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Join(root, "dev", "block"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../../devices/virtual/block/"+dev, filepath.Join(root, "dev", "block", mm)); err != nil {
			t.Fatal(err)
		}
		if journal == "" {
			return
		}
		d := filepath.Join(root, "fs", "ext4", dev)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "journal_task"), []byte(journal), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mk("253:0", "vda", "<none>\n")
	mk("7:1", "loop1", "10877\n")
	mk("253:2", "dm-2", "") // no ext4 entry
	for _, c := range []struct {
		major, minor uint32
		want         bool
	}{{253, 0, true}, {7, 1, false}, {253, 2, false}, {8, 0, false}} {
		if got := ext4NoJournal(root, c.major, c.minor); got != c.want {
			t.Errorf("ext4NoJournal(%d:%d) = %v, want %v", c.major, c.minor, got, c.want)
		}
	}
	info := filepath.Join(root, "mountinfo")
	if err := os.WriteFile(info, []byte(`22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 253:0 / / rw,relatime - ext4 /dev/vda rw
45 27 7:2 / /mnt/lt rw,relatime - ext4 /dev/loop2 rw,lazytime
46 27 7:2 /sub /mnt/sub rw,relatime - ext4 /dev/loop2 rw,lazytime
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		major, minor uint32
		want         bool
	}{{253, 0, false}, {7, 2, true}, {0, 21, false}, {9, 9, false}} {
		if got := lazytime(info, c.major, c.minor); got != c.want {
			t.Errorf("lazytime(%d:%d) = %v, want %v", c.major, c.minor, got, c.want)
		}
	}
	if lazytime(filepath.Join(root, "none"), 7, 2) {
		t.Error("an unreadable mount table says lazytime")
	}
	// A store on a temporary directory answers as its file system does
	// (no error, whatever it is), and the capability follows.
	f, err := OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	if SyncWritesInode(f) != f.SyncWritesInode() {
		t.Fatal("CapabilitiesOf disagrees with the store's answer")
	}
	t.Logf("the test directory's file system: SyncWritesInode %v", f.SyncWritesInode())
}
