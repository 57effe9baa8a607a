package objstore_test

import (
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/objstore"
)

// TestFaultyErrAfterAndHook: ErrAfter applies the call and then fails it;
// Hook runs before the call and may act on the store.
func TestFaultyErrAfterAndHook(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMem()
	f := objstore.NewFaulty(mem)
	v1, _ := f.Put(ctx, "a", []byte("1"))
	f.Add(objstore.Rule{Op: objstore.OpSwap, Count: 1, Err: objstore.ErrTimeout, ErrAfter: true})
	if v, err := f.Swap(ctx, "a", []byte("2"), v1); !errors.Is(err, objstore.ErrTimeout) || v != 0 {
		t.Fatalf("swap with ErrAfter: %d, %v", v, err)
	}
	if b, _, _ := mem.Get(ctx, "a"); string(b) != "2" {
		t.Fatalf("ErrAfter did not apply the swap: %q", b)
	}
	hooked := 0
	f.Add(objstore.Rule{Op: objstore.OpPut, Count: 1, Hook: func(ctx context.Context, op objstore.Op, name string) {
		hooked++
		mem.Put(ctx, name, []byte("other"))
	}})
	if _, err := f.Put(ctx, "a", []byte("3")); err != nil || hooked != 1 {
		t.Fatalf("put with a hook: %v, hooked %d", err, hooked)
	}
	if b, _, _ := mem.Get(ctx, "a"); string(b) != "3" {
		t.Fatalf("after the hook's put and the call: %q", b)
	}
}

// TestFaultyListNames: a listing of names obeys the rules of OpList, also
// over a store whose List only it has (the file store's ListNames).
func TestFaultyListNames(t *testing.T) {
	ctx := context.Background()
	fs, err := objstore.OpenFile(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	f := objstore.NewFaulty(fs)
	if _, ok := objstore.Store(f).(objstore.NameLister); !ok {
		t.Fatal("Faulty hides the listing of names")
	}
	f.Put(ctx, "cat/name/a", []byte("r"))
	f.Add(objstore.Rule{Op: objstore.OpList, Prefix: "cat/", Count: 1, Err: objstore.ErrTimeout})
	err = objstore.ListNames(ctx, f, "cat/name/", func(string) error { return nil })
	if !errors.Is(err, objstore.ErrTimeout) {
		t.Fatalf("ListNames under a failing rule: %v", err)
	}
	var got []string
	if err := objstore.ListNames(ctx, f, "cat/name/", func(n string) error { got = append(got, n); return nil }); err != nil || len(got) != 1 || got[0] != "cat/name/a" {
		t.Fatalf("ListNames after the rule: %v, %v", got, err)
	}
}
