package manage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/archipelago-go/archip/internal/catalog"
	"github.com/archipelago-go/archip/internal/manage"
	"github.com/archipelago-go/archip/internal/objstore"
)

// TestCreateRecordOutcomeUnknown: the write of a new record fails after
// the store applied it (a timeout that fired late): the caller hears an
// error, and the record exists. Whatever the operation answers, a record
// that exists must name a volume that exists and be found by its ID: the
// operation may neither remove the volume nor drop the record's hints
// (written meanwhile, issue 11) for a create whose outcome it does not
// know.
func TestCreateRecordOutcomeUnknown(t *testing.T) {
	errLate := errors.New("test: timed out after the store applied the write")
	for _, op := range []string{"create", "clone", "snapshot"} {
		t.Run(op, func(t *testing.T) {
			ctx := context.Background()
			f := objstore.NewFaulty(objstore.NewMem())
			m := manage.New(f)
			if _, err := m.CreateVolume(ctx, "src", 1<<20, 0); err != nil {
				t.Fatal(err)
			}
			if op == "clone" {
				if _, err := m.Snapshot(ctx, "src", "snap"); err != nil {
					t.Fatal(err)
				}
			}
			f.Add(objstore.Rule{Op: objstore.OpCreate, Prefix: catalog.NamePrefix, Count: 1, Err: errLate, ErrAfter: true})
			var err error
			switch op {
			case "create":
				_, err = m.CreateVolume(ctx, "new", 1<<20, 0)
			case "clone":
				_, err = m.Clone(ctx, "snap", "new", 0)
			case "snapshot":
				_, err = m.Snapshot(ctx, "src", "new")
			}
			f.Reset()
			t.Logf("%s answered %v", op, err)
			r, lerr := m.Catalog.Lookup(ctx, "new")
			if lerr != nil {
				if err == nil {
					t.Fatalf("%s answered success and no record: %v", op, lerr)
				}
				return // not created: nothing to check
			}
			if got, err := m.Catalog.ByID(ctx, r.ID); err != nil || got.Name != "new" {
				t.Errorf("the record of %q is not found by its ID: %v, %v", "new", got, err)
			}
			v, _, err := m.Open(ctx, "new", false)
			if err != nil {
				t.Fatalf("the record of %q names a volume that cannot be opened: %v", "new", err)
			}
			v.Close(ctx)
		})
	}
}
