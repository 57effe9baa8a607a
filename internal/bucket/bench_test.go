package bucket_test

import (
	"bytes"
	"fmt"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/objstore"
	"github.com/archipelago-go/archip/internal/volume"
)

// BenchmarkCompleteUpload: completing a multipart upload of 1 GiB and of
// 16 GiB, with the same number of parts (128, of 8 and of 128 MiB) and
// with the AWS CLI's 8 MiB parts (128 and 2,048 parts). The parts are
// real part records (UploadPartCopy of ranges of a sparse object, so that
// making them writes no data); completing reads only those records.
// Time per op should follow the number of parts, not their bytes.
func BenchmarkCompleteUpload(b *testing.B) {
	const gib = 1 << 30
	for _, c := range []struct {
		size  int64
		parts int
	}{{gib, 128}, {16 * gib, 128}, {16 * gib, 2048}} {
		b.Run(fmt.Sprintf("%dGiB/parts=%d", c.size/gib, c.parts), func(b *testing.B) {
			s := objstore.NewMem()
			bk := &bucket.Store{S: s}
			if err := bk.CreateBucket(ctx, "bkt"); err != nil {
				b.Fatal(err)
			}
			// A sparse image of c.size bytes as the source of the parts.
			blocks := c.size >> blockmap.DefaultShift
			id, err := volume.CreateImage(ctx, s, uint64(c.size), blockmap.DefaultShift, make([]blockmap.Entry, blocks))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := bk.PutMap(ctx, "bkt", "src", id, c.size, ""); err != nil {
				b.Fatal(err)
			}
			partSize := c.size / int64(c.parts)
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				up, err := bk.CreateUpload(ctx, "bkt", "dst", bucket.PutOptions{})
				if err != nil {
					b.Fatal(err)
				}
				list := make([]bucket.CompletePart, c.parts)
				for i := range list {
					p, err := bk.CopyPart(ctx, "bkt", up, i+1, "bkt", "src", int64(i)*partSize, partSize)
					if err != nil {
						b.Fatal(err)
					}
					list[i] = bucket.CompletePart{Number: i + 1, ETag: p.ETag}
				}
				b.StartTimer()
				obj, err := bk.CompleteUpload(ctx, "bkt", up, list)
				if err != nil {
					b.Fatal(err)
				}
				if obj.Size != c.size {
					b.Fatalf("completed %d bytes, want %d", obj.Size, c.size)
				}
			}
			b.ReportMetric(float64(partSize>>20), "MiB/part")
		})
	}
}

// BenchmarkPutObject: the upload path of PutObject (chunking, hashing,
// deduplication, block writes) of fresh random data, on a memory store
// (the software path alone) and on a file store (each object written
// durable before the upload returns).
func BenchmarkPutObject(b *testing.B) {
	for _, kind := range []string{"mem", "file"} {
		b.Run(kind, func(b *testing.B) {
			bk := &bucket.Store{S: benchStore(b, kind)}
			if err := bk.CreateBucket(ctx, "bkt"); err != nil {
				b.Fatal(err)
			}
			const size = 64 << 20
			b.SetBytes(size)
			for i := range b.N {
				b.StopTimer()
				p := data(uint64(i)+100, size)
				b.StartTimer()
				if _, err := bk.PutObject(ctx, "bkt", "k", bytes.NewReader(p), size, bucket.PutOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUploadParts: parts of 8 MiB, 10 at once, as the AWS CLI sends
// them by default, on a memory and on a file store.
func BenchmarkUploadParts(b *testing.B) {
	const partSize, parts, inFlight = 8 << 20, 40, 10
	for _, kind := range []string{"mem", "file"} {
		b.Run(kind, func(b *testing.B) {
			bk := &bucket.Store{S: benchStore(b, kind)}
			if err := bk.CreateBucket(ctx, "bkt"); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(partSize * parts)
			for i := range b.N {
				b.StopTimer()
				up, err := bk.CreateUpload(ctx, "bkt", "k", bucket.PutOptions{})
				if err != nil {
					b.Fatal(err)
				}
				body := make([][]byte, parts)
				for n := range body {
					body[n] = data(uint64(i*parts+n)+1000, partSize)
				}
				b.StartTimer()
				g := make(chan struct{}, inFlight)
				var wg sync.WaitGroup
				for n := range body {
					wg.Add(1)
					g <- struct{}{}
					go func() {
						defer func() { <-g; wg.Done() }()
						if _, err := bk.UploadPart(ctx, "bkt", up, n+1, bytes.NewReader(body[n]), partSize, nil); err != nil {
							b.Error(err)
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				if err := bk.AbortUpload(ctx, "bkt", up); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
		})
	}
}

func benchStore(b *testing.B, kind string) objstore.Store {
	if kind == "mem" {
		return objstore.NewMem()
	}
	s, err := objstore.OpenFile(b.TempDir(), true)
	if err != nil {
		b.Fatal(err)
	}
	return s
}
