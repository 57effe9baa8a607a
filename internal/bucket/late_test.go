package bucket_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/bucket"
	"github.com/archipelago-go/archip/internal/gc"
	"github.com/archipelago-go/archip/internal/objstore"
)

// lateStore stalls the first write of a map's head until wake is closed:
// an upload whose process stops after its blocks and segments are
// durable (a VM pause), past the grace period.
type lateStore struct {
	objstore.Store
	kind    blockmap.ObjectKind // of the write that stalls: a head's unless set
	off     bool                // no write stalls
	stalled chan struct{}       // closed once the write waits
	wake    chan struct{}
	once    sync.Once
}

func (l *lateStore) stall(name string) {
	kind := l.kind
	if kind == 0 {
		kind = blockmap.HeadObject
	}
	if !l.off && blockmap.ParseName(name).Kind == kind {
		first := false
		l.once.Do(func() { first = true })
		if first {
			close(l.stalled)
			<-l.wake
		}
	}
}

func (l *lateStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	l.stall(name)
	return l.Store.Create(ctx, name, data)
}

func (l *lateStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	l.stall(name)
	return l.Store.Put(ctx, name, data)
}

// lostHold is a hold that a collection takes for dead: its release
// reports gc.ErrHoldLost if a collection ran since it was acquired
// (lose), as gc.Hold.Release does when a collection swapped its record.
type lostHold struct {
	mu  sync.Mutex
	gen int // collections that took the holds of their time for dead
}

func (h *lostHold) lose() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gen++
}

func (h *lostHold) acquire(ctx context.Context) (func() error, error) {
	h.mu.Lock()
	gen := h.gen
	h.mu.Unlock()
	return func() error {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.gen != gen {
			return gc.ErrHoldLost
		}
		return nil
	}, nil
}

// lateSetup returns a bucket store over a lateStore whose objects age
// by clock, and a function that runs a collection at the clock's time.
func lateSetup(t *testing.T) (*bucket.Store, *lateStore, *lostHold, func(time.Duration), func() error) {
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	var cmu sync.Mutex
	now := func() time.Time { cmu.Lock(); defer cmu.Unlock(); return clock }
	advance := func(d time.Duration) { cmu.Lock(); defer cmu.Unlock(); clock = clock.Add(d) }
	m := objstore.NewMem()
	m.Now = now
	ls := &lateStore{Store: m, stalled: make(chan struct{}), wake: make(chan struct{})}
	h := &lostHold{}
	b := &bucket.Store{S: ls, BlockShift: 16, MinPart: bs, Hold: h.acquire}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	collect := func() error {
		_, err := gc.Run(ctx, m, gc.Options{Now: now})
		return err
	}
	return b, ls, h, advance, collect
}

// wakeLate waits for the operation stalled in ls, runs during, lets the
// clock run for stall, takes the operation's hold for dead, runs a
// collection, and wakes the operation: it returns the operation's error.
func wakeLate(t *testing.T, ls *lateStore, h *lostHold, advance func(time.Duration), collect func() error, done <-chan error, stall time.Duration, during func()) error {
	t.Helper()
	<-ls.stalled
	if during != nil {
		during()
	}
	advance(stall)
	h.lose()
	if err := collect(); err != nil {
		t.Fatal(err)
	}
	close(ls.wake)
	return <-done
}

// wantNoObject fails unless key has no object, saying what left it.
func wantNoObject(t *testing.T, b *bucket.Store, key, after string) {
	t.Helper()
	if obj, err := b.GetObject(ctx, "bkt", key); !errors.Is(err, bucket.ErrNoKey) {
		var got bytes.Buffer
		rerr := error(nil)
		if err == nil {
			rerr = b.Read(ctx, obj, 0, obj.Size, &got)
		}
		t.Fatalf("object after the %s: %v (read: %v), want ErrNoKey", after, err, rerr)
	}
}

// An UploadPart that stalls after its blocks and segments are durable,
// past the grace period, while a collection runs (which takes its hold
// for dead and deletes the blocks and segments nothing named), then
// writes its head and record, fails (ErrHoldLost), and leaves no part
// that names that map: before, ListParts listed it, CompleteUpload made
// an object of it that could not be read, and every later collection
// failed marking the head (its segment missing) while the head was young.
func TestUploadPartWakesUpLate(t *testing.T) {
	b, ls, h, advance, collect := lateSetup(t)
	id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := twoBlocks(7)
	done := make(chan error, 1)
	go func() {
		_, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(p), 2*bs, nil)
		done <- err
	}()
	if err := wakeLate(t, ls, h, advance, collect, done, 2*gc.DefaultGrace, nil); !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("UploadPart woken up after a collection: %v, want ErrHoldLost", err)
	}
	if err := collect(); err != nil {
		t.Fatalf("collection after the late UploadPart: %v", err)
	}
	parts, err := b.ListParts(ctx, "bkt", id)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 0 {
		t.Fatalf("ListParts lists %d parts after the late UploadPart failed, want none", len(parts))
	}
	list := []bucket.CompletePart{{Number: 1, ETag: `"` + md5hex(p) + `"`}}
	if _, err := b.CompleteUpload(ctx, "bkt", id, list); !errors.Is(err, bucket.ErrBadPart) {
		t.Fatalf("complete with the late part: %v, want ErrBadPart", err)
	}
	if _, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(p), 2*bs, nil); err != nil {
		t.Fatal(err)
	}
	obj, err := b.CompleteUpload(ctx, "bkt", id, list)
	if err != nil {
		t.Fatal(err)
	}
	checkObject(t, b, obj.Key, p)
}

// A PutObject that wakes up late the same way fails and leaves no
// object: before, it left an object whose data a collection had deleted.
func TestPutObjectWakesUpLate(t *testing.T) {
	b, ls, h, advance, collect := lateSetup(t)
	p := twoBlocks(8)
	done := make(chan error, 1)
	go func() {
		_, err := b.PutObject(ctx, "bkt", "obj", bytes.NewReader(p), 2*bs, bucket.PutOptions{})
		done <- err
	}()
	if err := wakeLate(t, ls, h, advance, collect, done, 2*gc.DefaultGrace, nil); !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("PutObject woken up after a collection: %v, want ErrHoldLost", err)
	}
	if err := collect(); err != nil {
		t.Fatalf("collection after the late PutObject: %v", err)
	}
	wantNoObject(t, b, "obj", "late PutObject")
}

// A CompleteUpload that stalls after it claimed the upload (its record
// deleted, so its part records root nothing), past the grace period,
// while a collection runs, then writes the object, fails (ErrHoldLost)
// and leaves no object: before, it left an object over deleted maps.
func TestCompleteWakesUpLate(t *testing.T) {
	b, ls, h, advance, collect := lateSetup(t)
	ls.kind = blockmap.ObjectRecord
	id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := twoBlocks(10)
	part, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(p), 2*bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := b.CompleteUpload(ctx, "bkt", id, []bucket.CompletePart{{Number: 1, ETag: part.ETag}})
		done <- err
	}()
	if err := wakeLate(t, ls, h, advance, collect, done, 2*gc.DefaultGrace, nil); !errors.Is(err, gc.ErrHoldLost) {
		t.Fatalf("CompleteUpload woken up after a collection: %v, want ErrHoldLost", err)
	}
	if err := collect(); err != nil {
		t.Fatalf("collection after the late CompleteUpload: %v", err)
	}
	wantNoObject(t, b, "key", "late CompleteUpload")
}

// A CopyObject or CopyPart that stalls before it writes its record,
// past the grace period, while its source is deleted and a collection
// runs, fails (ErrHoldLost) and leaves no object or part over the
// source's deleted map: before, it left them.
func TestCopyWakesUpLate(t *testing.T) {
	for _, part := range []bool{false, true} {
		b, ls, h, advance, collect := lateSetup(t)
		ls.off = true
		p := twoBlocks(11)
		if _, err := b.PutObject(ctx, "bkt", "src", bytes.NewReader(p), 2*bs, bucket.PutOptions{}); err != nil {
			t.Fatal(err)
		}
		id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ls.kind, ls.off = blockmap.ObjectRecord, false
		if part {
			ls.kind = blockmap.PartRecord
		}
		done := make(chan error, 1)
		go func() {
			var err error
			if part {
				_, err = b.CopyPart(ctx, "bkt", id, 1, "bkt", "src", 0, -1)
			} else {
				_, err = b.CopyObject(ctx, "bkt", "src", "bkt", "dst", nil)
			}
			done <- err
		}()
		deleteSrc := func() {
			if err := b.DeleteObject(ctx, "bkt", "src"); err != nil {
				t.Fatal(err)
			}
		}
		if err := wakeLate(t, ls, h, advance, collect, done, 2*gc.DefaultGrace, deleteSrc); !errors.Is(err, gc.ErrHoldLost) {
			t.Fatalf("copy (part %v) woken up after a collection: %v, want ErrHoldLost", part, err)
		}
		if err := collect(); err != nil {
			t.Fatalf("collection after the late copy (part %v): %v", part, err)
		}
		if part {
			if parts, err := b.ListParts(ctx, "bkt", id); err != nil || len(parts) != 0 {
				t.Fatalf("ListParts after the late CopyPart: %d parts, %v; want none", len(parts), err)
			}
		} else if _, err := b.GetObject(ctx, "bkt", "dst"); !errors.Is(err, bucket.ErrNoKey) {
			t.Fatalf("object after the late CopyObject: %v, want ErrNoKey", err)
		}
	}
}

// An UploadPart or PutObject whose hold a collection took for dead
// while it stalled, but less than the grace period (the collection
// deleted nothing of its map), keeps its result: it checks, under a new
// hold, that its map is whole, and succeeds.
func TestWakesUpLateWhole(t *testing.T) {
	for _, part := range []bool{false, true} {
		b, ls, h, advance, collect := lateSetup(t)
		id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
		if err != nil {
			t.Fatal(err)
		}
		p := twoBlocks(12)
		done := make(chan error, 1)
		go func() {
			var err error
			if part {
				_, err = b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(p), 2*bs, nil)
			} else {
				_, err = b.PutObject(ctx, "bkt", "key", bytes.NewReader(p), 2*bs, bucket.PutOptions{})
			}
			done <- err
		}()
		if err := wakeLate(t, ls, h, advance, collect, done, gc.DefaultGrace/2, nil); err != nil {
			t.Fatalf("upload (part %v) woken up after a collection that deleted none of its map: %v", part, err)
		}
		advance(2 * gc.DefaultGrace)
		if err := collect(); err != nil {
			t.Fatal(err)
		}
		if part {
			if _, err := b.CompleteUpload(ctx, "bkt", id, []bucket.CompletePart{{Number: 1, ETag: `"` + md5hex(p) + `"`}}); err != nil {
				t.Fatal(err)
			}
		}
		checkObject(t, b, "key", p)
	}
}

func md5hex(p []byte) string {
	s := md5.Sum(p)
	return hex.EncodeToString(s[:])
}

// retryStore holds the first head write and the first part record write
// (an UploadPart's second stage) until go is closed, and signals held
// for each. Then the record goes to the store even if its ctx ended (it
// was sent before), the head fails if its ctx ended (it was not). A
// delete fails once its ctx ended, as on the real stores.
type retryStore struct {
	objstore.Store
	held   chan string
	goOn   chan struct{}
	head   sync.Once
	record sync.Once
}

func (r *retryStore) first(o *sync.Once, name string) bool {
	first := false
	o.Do(func() { first = true })
	if first {
		r.held <- name
		<-r.goOn
	}
	return first
}

func (r *retryStore) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if blockmap.ParseName(name).Kind == blockmap.HeadObject && r.first(&r.head, name) && ctx.Err() != nil {
		return 0, ctx.Err()
	}
	return r.Store.Create(ctx, name, data)
}

func (r *retryStore) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	if blockmap.ParseName(name).Kind == blockmap.PartRecord && r.first(&r.record, name) {
		ctx = context.WithoutCancel(ctx)
	}
	return r.Store.Put(ctx, name, data)
}

func (r *retryStore) Delete(ctx context.Context, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.Store.Delete(ctx, name)
}

func (r *retryStore) DeleteVersion(ctx context.Context, name string, v objstore.Version) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return r.Store.DeleteVersion(ctx, name, v)
}

// A client whose UploadPart (A) timed out retries it (B), which
// succeeds; A, still running on the server, has its request cancelled
// as its record (sent already) lands over B's and before its map's head
// is sent. The upload must still complete with the part B answered for:
// before, A's record named a head never written (and A's delete of its
// record failed, its ctx done), so CompleteUpload refused the part the
// client had been told was stored.
func TestUploadPartRetryOverCancelled(t *testing.T) {
	rs := &retryStore{Store: objstore.NewMem(), held: make(chan string, 2), goOn: make(chan struct{})}
	b := &bucket.Store{S: rs, BlockShift: 16, MinPart: bs}
	if err := b.CreateBucket(ctx, "bkt"); err != nil {
		t.Fatal(err)
	}
	id, err := b.CreateUpload(ctx, "bkt", "key", bucket.PutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := twoBlocks(9)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		_, err := b.UploadPart(actx, "bkt", id, 1, bytes.NewReader(p), 2*bs, nil)
		done <- err
	}()
	<-rs.held
	<-rs.held
	part, err := b.UploadPart(ctx, "bkt", id, 1, bytes.NewReader(p), 2*bs, nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	close(rs.goOn)
	<-done // A's outcome is the client's no more: it gave up on it
	obj, err := b.CompleteUpload(ctx, "bkt", id, []bucket.CompletePart{{Number: 1, ETag: part.ETag}})
	if err != nil {
		t.Fatalf("complete with the part whose retry succeeded: %v", err)
	}
	checkObject(t, b, obj.Key, p)
}
