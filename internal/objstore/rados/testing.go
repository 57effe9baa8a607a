//go:build ceph

package rados

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"testing"
)

var testNamespaces atomic.Int64

// OpenTestStore opens the pool "archip" of the test cluster named by
// ARCHIP_TEST_CEPH_CONF (scripts/ceph-cluster.sh prints it; scripts/test.sh
// starts one), in a namespace of its own so each call starts empty. Without
// a cluster it skips the test, or fails it under CI=true.
func OpenTestStore(t testing.TB) *Store {
	t.Helper()
	return OpenTestStores(t, 1)[0]
}

// OpenTestStores is OpenTestStore with n connections (n clients, as n
// hosts would have) to one fresh namespace.
func OpenTestStores(t testing.TB, n int) []*Store {
	t.Helper()
	conf := os.Getenv("ARCHIP_TEST_CEPH_CONF")
	if conf == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("ARCHIP_TEST_CEPH_CONF is not set: scripts/test.sh starts a cluster and sets it")
		}
		t.Skip("no test cluster: set ARCHIP_TEST_CEPH_CONF (scripts/ceph-cluster.sh start DIR prints it)")
	}
	u, _ := url.Parse(fmt.Sprintf("rados://archip?conf=%s&namespace=t%d-%d", url.QueryEscape(conf), os.Getpid(), testNamespaces.Add(1)))
	var stores []*Store
	for range n {
		s, err := Open(context.Background(), u)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		stores = append(stores, s)
	}
	return stores
}

// SetStatHook sets a function called at the start of each Stat (tests of
// other packages count the reads of a map head with it).
func (s *Store) SetStatHook(fn func()) { s.statHook = fn }

// DropIndexKey removes the key of the catalog object name from the
// catalog's index, as the index's uncovered crash state, or a binary
// older than the index, leaves it (tests of other packages).
func (s *Store) DropIndexKey(ctx context.Context, name string) error {
	if err := s.ensureIndex(ctx); err != nil {
		return err
	}
	return s.indexRm(ctx, name)
}

// HoldWrites makes the next write operation of a data object in place
// wait, before it is sent, until release is called, so that the writes
// to that object after it queue behind it (tests of other packages: a
// stalled writer's merged writes). Call it while no write is in flight.
func (s *Store) HoldWrites() (release func()) {
	gate := make(chan struct{})
	var once sync.Once
	submit := s.merger.submit
	s.merger.submit = func(name string, ext []extent, done func(error)) error {
		once.Do(func() { <-gate })
		return submit(name, ext, done)
	}
	var rel sync.Once
	return func() { rel.Do(func() { close(gate) }) }
}

// Queued returns how many in-place writes wait behind an operation in
// flight on their object (tests of other packages).
func (s *Store) Queued() int {
	s.merger.mu.Lock()
	defer s.merger.mu.Unlock()
	n := 0
	for _, q := range s.merger.objs {
		n += len(q.waiting)
	}
	return n
}

// Merged returns how many in-place writes went in an operation with
// others before them (tests of other packages).
func (s *Store) Merged() int64 { return s.merger.merged.Load() }
