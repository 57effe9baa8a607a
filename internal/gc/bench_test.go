package gc

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// BenchmarkCollect runs a collection over 1,000 volumes cloned from 10
// images that together reference 1,000,000 content objects (1-byte
// objects: the metadata work is what is measured), on the mem store. It
// reports the time per collection and the heap the mark set takes per
// referenced object. Targets: at most 100 bytes per referenced object;
// time dominated by listing.
func BenchmarkCollect(b *testing.B) {
	ctx := context.Background()
	const images, blocks, clones = 10, 100_000, 1000
	s := objstore.NewMem()
	old := time.Unix(1_000_000, 0)
	s.Now = func() time.Time { return old }
	cat := catalog.New(s)
	var imgIDs []blockmap.ID
	var buf [16]byte
	for i := 0; i < images; i++ {
		entries := make([]blockmap.Entry, blocks)
		for j := range entries {
			binary.LittleEndian.PutUint64(buf[:], uint64(i))
			binary.LittleEndian.PutUint64(buf[8:], uint64(j))
			e := blockmap.ContentEntry(sha256.Sum256(buf[:]))
			s.Put(ctx, e.ObjectName(), []byte{1})
			entries[j] = e
		}
		id, err := volume.CreateImage(ctx, s, uint64(blocks)<<16, 16, entries)
		if err != nil {
			b.Fatal(err)
		}
		imgIDs = append(imgIDs, id)
	}
	for i, id := range imgIDs {
		if err := cat.Create(ctx, catalog.Record{Name: fmt.Sprint("img", i), ID: id, Kind: catalog.KindImage}); err != nil {
			b.Fatal(err)
		}
	}
	for c := 0; c < clones; c++ {
		id, err := volume.Clone(ctx, s, imgIDs[c%images], 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := cat.Create(ctx, catalog.Record{Name: fmt.Sprint("vm", c), ID: id, Kind: catalog.KindVolume, Parent: imgIDs[c%images]}); err != nil {
			b.Fatal(err)
		}
	}
	now := func() time.Time { return old.Add(48 * time.Hour) }

	// The mark set's heap per referenced object, measured once.
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m, err := mark(ctx, s, nil, now().Add(-DefaultGrace), &Report{}, nil)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	n := len(m.content) + len(m.private) + len(m.segments) + len(m.heads)
	perRef := float64(after.HeapAlloc-before.HeapAlloc) / float64(n)
	runtime.KeepAlive(m)
	m = nil

	var rep Report
	for b.Loop() {
		if rep, err = Run(ctx, s, Options{Now: now, DryRun: true}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perRef, "B/ref")
	b.ReportMetric(float64(rep.Examined), "objects")
	b.ReportMetric(float64(rep.Roots), "maps")
}
