//go:build linux

// Command syncplaces measures what a 4 KiB write and an fdatasync cost on
// one file system depending on where the write goes, with the cases
// interleaved write by write (so that a change of the machine's load hits
// every case alike):
//
//   - onefile: random 4 KiB writes into one 1 GiB file (what nbdkit's file
//     plugin does for a 1 GiB disk);
//   - objects: the same into 256 files of 4 MiB, a random one each write
//     (archip's in-place writes into a filled volume's block objects);
//   - oneobject, span4m: random writes within one 4 MiB file, or a 4 MiB
//     span of the 1 GiB file (locality alone);
//   - loggrow: a record (36 + 4096 bytes) and a commit (36 bytes) appended
//     at the end of a file that grows (the write log without zeros ahead);
//   - logahead: the same, with the file written with zeros 1 MiB ahead of
//     its tail (the write log since issue 11);
//   - aligned: aligned 4 KiB writes in turn over a file written before.
//
// Usage (Linux): go run ./bench/syncplaces -dir DIR [-n 500] [-rounds 4]; DIR on
// the file system to measure (about 2.1 GiB is written there, removed at
// the end). It prints, per round and case, the mean, median and 90th
// percentile of a write and its fdatasync.
package main

import (
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"time"

	"golang.org/x/sys/unix"
)

func must(err error) {
	if err != nil {
		log.Fatal(err)
	}
}

func create(dir, name string, size int64) *os.File {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_RDWR, 0o644)
	must(err)
	buf := make([]byte, 1<<20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	for off := int64(0); off < size; off += int64(len(buf)) {
		_, err := f.WriteAt(buf[:min(int64(len(buf)), size-off)], off)
		must(err)
	}
	must(unix.Fsync(int(f.Fd())))
	return f
}

func write(f *os.File, p []byte, off int64) {
	_, err := f.WriteAt(p, off)
	must(err)
}

func sync(f *os.File) { must(unix.Fdatasync(int(f.Fd()))) }

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the file system to measure")
	n := flag.Int("n", 500, "writes per case and round")
	rounds := flag.Int("rounds", 4, "rounds")
	flag.Parse()
	d, err := os.MkdirTemp(*dir, "syncplaces")
	must(err)
	defer os.RemoveAll(d)
	big := create(d, "big", 1<<30)
	var objs []*os.File
	for i := range 256 {
		objs = append(objs, create(d, fmt.Sprintf("o%03d", i), 4<<20))
	}
	grow := create(d, "grow", 0)
	ahead := create(d, "ahead", 0)
	aligned := create(d, "aligned", 64<<20)
	var growEnd, aheadEnd, aheadZeros, alignedEnd int64
	zeros := make([]byte, 1<<20)
	page := make([]byte, 4096)
	for i := range page {
		page[i] = byte(i*13 + 5)
	}
	rec := append(make([]byte, 36), page...)
	commit := make([]byte, 36)
	pageIn := func(size int64) int64 { return rand.Int64N(size/4096) * 4096 }
	cases := []struct {
		name string
		do   func()
	}{
		{"onefile", func() { write(big, page, pageIn(1<<30)); sync(big) }},
		{"objects", func() { f := objs[rand.IntN(256)]; write(f, page, pageIn(4<<20)); sync(f) }},
		{"oneobject", func() { write(objs[7], page, pageIn(4<<20)); sync(objs[7]) }},
		{"span4m", func() { write(big, page, 512<<20+pageIn(4<<20)); sync(big) }},
		{"loggrow", func() {
			for _, r := range [][]byte{rec, commit} {
				write(grow, r, growEnd)
				growEnd += int64(len(r))
			}
			sync(grow)
		}},
		{"logahead", func() {
			for _, r := range [][]byte{rec, commit} {
				if aheadEnd+int64(len(r)) > aheadZeros {
					write(ahead, zeros, aheadZeros)
					aheadZeros += int64(len(zeros))
				}
				write(ahead, r, aheadEnd)
				aheadEnd += int64(len(r))
			}
			sync(ahead)
		}},
		{"aligned", func() {
			write(aligned, page, alignedEnd)
			alignedEnd = (alignedEnd + 4096) % (64 << 20)
			sync(aligned)
		}},
	}
	lat := make([][]time.Duration, len(cases))
	for r := range *rounds {
		for i := range *n {
			for j := range cases {
				k := (i + j) % len(cases)
				t := time.Now()
				cases[k].do()
				lat[k] = append(lat[k], time.Since(t))
			}
		}
		for k, c := range cases {
			l := lat[k]
			var sum time.Duration
			for _, d := range l {
				sum += d
			}
			slices.Sort(l)
			us := func(d time.Duration) int64 { return d.Microseconds() }
			fmt.Printf("round %d %-10s mean %5d µs  median %5d µs  p90 %5d µs\n", r, c.name, us(sum/time.Duration(len(l))), us(l[len(l)/2]), us(l[len(l)*9/10]))
			lat[k] = l[:0]
		}
	}
}
