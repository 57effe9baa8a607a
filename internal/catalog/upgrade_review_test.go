package catalog

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/archipelago-go/archip/internal/blockmap"
	"github.com/archipelago-go/archip/internal/objstore"
)

// stallBefore runs fn once before the first write of one object: a
// process that stalls there.
type stallBefore struct {
	objstore.Store
	name string
	fn   func()
	once sync.Once
}

func (s *stallBefore) at(name string) {
	if name == s.name {
		s.once.Do(s.fn)
	}
}

func (s *stallBefore) Put(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.at(name)
	return s.Store.Put(ctx, name, b)
}

func (s *stallBefore) Create(ctx context.Context, name string, b []byte) (objstore.Version, error) {
	s.at(name)
	return s.Store.Create(ctx, name, b)
}

// TestUpgraderStalledBeforeCreate: an upgrader that checked that the
// upgrade is still under way and then stalls before it writes a record
// and its hints, while another process finishes the upgrade, removes that
// name and renames another, brings back neither the removed name nor the
// old name of the renamed one, and leaves the renamed one found by ID.
func TestUpgraderStalledBeforeCreate(t *testing.T) {
	for _, victim := range []string{"img", "a"} {
		t.Run(victim, func(t *testing.T) {
			mem := objstore.NewMem()
			recs := oldRecords()
			b, _ := json.Marshal(marker{Format: 2, Records: []Record{}, Upgrading: recs})
			mem.Put(ctx, ObjectName, b) // frozen by a first upgrader
			var id = recs[0].ID
			for _, r := range recs {
				if r.Name == victim {
					id = r.ID
				}
			}
			late := &stallBefore{Store: mem, name: idHint(id), fn: func() {
				c := New(mem)
				if _, err := c.Upgrade(ctx); err != nil {
					t.Fatal(err)
				}
				if err := c.Rename(ctx, victim, "moved"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Remove(ctx, "c"); err != nil {
					t.Fatal(err)
				}
			}}
			if _, err := New(late).Upgrade(ctx); err != nil {
				t.Fatal(err)
			}
			want := map[string]blockmap.ID{}
			for _, r := range recs {
				switch r.Name {
				case "c":
				case victim:
					want["moved"] = r.ID
				default:
					want[r.Name] = r.ID
				}
			}
			c := New(mem)
			mustAbsent(t, c, victim)
			mustAbsent(t, c, "c")
			if r, err := c.ByID(ctx, id); err != nil || r.Name != "moved" {
				t.Fatalf("by ID: %v %v", r, err)
			}
			check(t, mem, want)
		})
	}
}
