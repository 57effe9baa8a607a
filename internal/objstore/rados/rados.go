//go:build ceph

// Package rados is the Ceph RADOS backend: rados://POOL?conf=PATH&id=CLIENT&namespace=NS.
//
// It uses what RADOS has natively: whole-object replace (write_full),
// exclusive create, compare-and-swap as a compound write operation that
// asserts the object's version, in-place ranged writes that create sparse
// objects, and copies made by the OSDs (copy_from) for copy-on-write. A
// write is durable when RADOS acknowledges it (the OSDs have it on stable
// storage in every replica), so the store is no objstore.Syncer: a flush
// has nothing to sync, where a Sync would cost a round trip per object.
// Versions are RADOS object versions. A full pool or cluster fails writes
// with objstore.ErrNoSpace instead of holding them (librados's default)
// and lets deletes, which free space, through.
//
// It needs librados (cgo: Debian's librados-dev, and libradospp-dev and g++
// for shim.cpp) and builds only with the build tags "ceph" and, for go-ceph
// on Ceph Pacific, "pacific".
package rados

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"

	"github.com/ceph/go-ceph/rados"

	"github.com/archipelago-go/archip/internal/objstore"
)

// Store is a RADOS pool (and namespace) as an objstore.Store.
type Store struct {
	conn *rados.Conn
	// ioctxs is a pool of I/O contexts: one per operation in flight,
	// because an I/O context's "last version" is per context.
	ioctxs chan *rados.IOContext
	// data is the I/O context of the asynchronous data path (aio.go),
	// which many operations share.
	data *rados.IOContext
}

var (
	_ objstore.Store       = (*Store)(nil)
	_ objstore.RangeWriter = (*Store)(nil)
	_ objstore.Copier      = (*Store)(nil)
)

// contexts is how many operations run at once on one Store.
const contexts = 32

// Open connects to the pool named by u (rados://POOL?conf=&id=&namespace=).
func Open(ctx context.Context, u *url.URL) (*Store, error) {
	pool := u.Host
	if pool == "" {
		return nil, fmt.Errorf("%w: %q names no pool; use rados://POOL?conf=/etc/ceph/ceph.conf", objstore.ErrBadURL, u.String())
	}
	q := u.Query()
	for k := range q {
		switch k {
		case "conf", "id", "namespace":
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q in %q (known: conf, id, namespace)", objstore.ErrBadURL, k, u.String())
		}
	}
	id := q.Get("id")
	if id == "" {
		id = "admin"
	}
	conn, err := rados.NewConnWithUser(id)
	if err != nil {
		return nil, fmt.Errorf("rados: %w", err)
	}
	if conf := q.Get("conf"); conf != "" {
		err = conn.ReadConfigFile(conf)
	} else {
		err = conn.ReadDefaultConfigFile()
	}
	if err != nil {
		return nil, fmt.Errorf("rados: read config: %w", err)
	}
	if err := conn.Connect(); err != nil {
		return nil, fmt.Errorf("rados: connect: %w", err)
	}
	s := &Store{conn: conn, ioctxs: make(chan *rados.IOContext, contexts)}
	for i := 0; i <= contexts; i++ {
		ioctx, err := conn.OpenIOContext(pool)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("rados: open pool %q: %w", pool, mapErr(err))
		}
		ioctx.SetNamespace(q.Get("namespace"))
		// On a full pool or cluster, librados holds writes until space
		// comes back, deletes included. With full-try they are sent:
		// deletes (what frees space) go through and writes fail with
		// ENOSPC or EDQUOT, which the volume engine reports as such.
		if err := ioctx.SetPoolFullTry(); err != nil {
			ioctx.Destroy()
			s.Close()
			return nil, fmt.Errorf("rados: %w", err)
		}
		if i == contexts {
			s.data = ioctx
		} else {
			s.ioctxs <- ioctx
		}
	}
	return s, nil
}

// with checks name and runs fn with an I/O context of its own.
func (s *Store) with(ctx context.Context, name string, fn func(*rados.IOContext) error) error {
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	return s.withIO(ctx, fn)
}

// withIO runs fn with an I/O context of its own.
func (s *Store) withIO(ctx context.Context, fn func(*rados.IOContext) error) error {
	var ioctx *rados.IOContext
	select {
	case ioctx = <-s.ioctxs:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { s.ioctxs <- ioctx }()
	return fn(ioctx)
}

// code returns the errno of a RADOS error, looking inside compound
// operation errors, which do not unwrap.
func code(err error) int {
	var oe rados.OperationError
	if errors.As(err, &oe) {
		if oe.OpError != nil {
			return code(oe.OpError)
		}
		for _, se := range oe.StepErrors {
			if c := code(se); c != 0 {
				return c
			}
		}
	}
	var ce interface{ ErrorCode() int }
	if errors.As(err, &ce) {
		c := ce.ErrorCode()
		if c < 0 {
			c = -c
		}
		return c
	}
	return 0
}

// mapErr turns RADOS errors into objstore sentinels, keeping the cause.
func mapErr(err error) error {
	switch code(err) {
	case 0:
		if err == nil {
			return nil
		}
	case int(syscall.ENOENT):
		return fmt.Errorf("%w: %v", objstore.ErrNotFound, err)
	case int(syscall.EEXIST):
		return fmt.Errorf("%w: %v", objstore.ErrExists, err)
	case int(syscall.ERANGE), int(syscall.EOVERFLOW), int(syscall.ECANCELED):
		return fmt.Errorf("%w: %v", objstore.ErrConflict, err)
	case int(syscall.ENOSPC), int(syscall.EDQUOT):
		return fmt.Errorf("%w: %v", objstore.ErrNoSpace, err)
	case int(syscall.EROFS):
		return fmt.Errorf("%w: %v", objstore.ErrReadOnly, err)
	case int(syscall.ETIMEDOUT):
		// Only with "rados osd op timeout" (or mon) set in ceph.conf; by
		// default librados waits for the cluster as long as it takes.
		return fmt.Errorf("%w: %v", objstore.ErrTimeout, err)
	}
	return fmt.Errorf("rados: %w", err)
}

func (s *Store) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	if off < 0 {
		return fmt.Errorf("rados: negative offset %d", off)
	}
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	n, err := aio(ctx, s.data, false, name, p, off)
	if err != nil {
		return err
	}
	if len(p) == 0 {
		// An empty read still reports a missing object.
		_, err := s.Stat(ctx, name)
		return err
	}
	clear(p[n:]) // past the end of the object
	return nil
}

// getIn reads the whole object in one operation, so the data and the
// version belong together.
func getIn(io *rados.IOContext, name string) ([]byte, objstore.Version, error) {
	buf := make([]byte, 64<<10)
	for {
		op := rados.CreateReadOp()
		step := op.Read(0, buf)
		err := op.Operate(io, name, rados.OperationNoFlag)
		op.Release()
		if err != nil {
			return nil, 0, mapErr(err)
		}
		if step.BytesRead < int64(len(buf)) {
			v, err := io.GetLastVersion()
			if err != nil {
				return nil, 0, mapErr(err)
			}
			return buf[:step.BytesRead], objstore.Version(v), nil
		}
		buf = make([]byte, 4*len(buf))
	}
}

func (s *Store) Get(ctx context.Context, name string) (b []byte, v objstore.Version, err error) {
	err = s.with(ctx, name, func(io *rados.IOContext) error {
		b, v, err = getIn(io, name)
		return err
	})
	return b, v, err
}

// write runs a compound write operation and returns the new version.
func (s *Store) write(ctx context.Context, name string, build func(*rados.WriteOp)) (v objstore.Version, err error) {
	err = s.with(ctx, name, func(io *rados.IOContext) error {
		op := rados.CreateWriteOp()
		defer op.Release()
		build(op)
		if err := op.Operate(io, name, rados.OperationNoFlag); err != nil {
			return mapErr(err)
		}
		lv, err := io.GetLastVersion()
		v = objstore.Version(lv)
		return mapErr(err)
	})
	return v, err
}

// replace sets the object's whole content. NB: go-ceph cannot write an
// empty buffer and has no truncate step, so an empty replacement removes
// and re-creates the object in the same atomic operation.
func replace(op *rados.WriteOp, data []byte) {
	if len(data) == 0 {
		op.Remove()
		op.Create(rados.CreateIdempotent)
		return
	}
	op.WriteFull(data)
}

func (s *Store) Put(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	return s.write(ctx, name, func(op *rados.WriteOp) {
		op.Create(rados.CreateIdempotent)
		replace(op, data)
	})
}

func (s *Store) Create(ctx context.Context, name string, data []byte) (objstore.Version, error) {
	return s.write(ctx, name, func(op *rados.WriteOp) {
		op.Create(rados.CreateExclusive)
		if len(data) > 0 {
			op.WriteFull(data)
		}
	})
}

func (s *Store) Swap(ctx context.Context, name string, data []byte, old objstore.Version) (objstore.Version, error) {
	if old == 0 {
		v, err := s.Create(ctx, name, data)
		if errors.Is(err, objstore.ErrExists) {
			err = fmt.Errorf("%w: %s exists", objstore.ErrConflict, name)
		}
		return v, err
	}
	v, err := s.write(ctx, name, func(op *rados.WriteOp) {
		op.AssertVersion(uint64(old))
		replace(op, data)
	})
	if objstore.IsNotExist(err) {
		err = fmt.Errorf("%w: %s does not exist", objstore.ErrConflict, name)
	}
	return v, err
}

func (s *Store) Delete(ctx context.Context, name string) error {
	return s.with(ctx, name, func(io *rados.IOContext) error { return mapErr(io.Delete(name)) })
}

// DeleteVersion removes the object under the same version assertion as
// Swap, in one atomic operation: the OSD applies both or neither.
func (s *Store) DeleteVersion(ctx context.Context, name string, old objstore.Version) error {
	if old == 0 {
		_, err := s.Stat(ctx, name)
		if err == nil {
			return fmt.Errorf("%w: %s exists", objstore.ErrConflict, name)
		}
		return err
	}
	_, err := s.write(ctx, name, func(op *rados.WriteOp) {
		op.AssertVersion(uint64(old))
		op.Remove()
	})
	return err
}

func statIn(io *rados.IOContext, name string) (objstore.Info, error) {
	// A read operation that asserts existence gives the version.
	op := rados.CreateReadOp()
	op.AssertExists()
	err := op.Operate(io, name, rados.OperationNoFlag)
	op.Release()
	if err != nil {
		return objstore.Info{}, mapErr(err)
	}
	v, err := io.GetLastVersion()
	if err != nil {
		return objstore.Info{}, mapErr(err)
	}
	st, err := io.Stat(name)
	if err != nil {
		return objstore.Info{}, mapErr(err)
	}
	return objstore.Info{Name: name, Size: int64(st.Size), Version: objstore.Version(v), ModTime: st.ModTime}, nil
}

// FreshStat: a stat is answered by the object's OSD, never a cache.
func (s *Store) FreshStat() bool { return true }

func (s *Store) Stat(ctx context.Context, name string) (in objstore.Info, err error) {
	err = s.with(ctx, name, func(io *rados.IOContext) error {
		in, err = statIn(io, name)
		return err
	})
	return in, err
}

// List walks every object of the pool's namespace: RADOS has no index by
// name, so the cost is that of the namespace, whatever the prefix.
func (s *Store) List(ctx context.Context, prefix string, fn func(objstore.Info) error) error {
	var names []string
	err := s.withIO(ctx, func(io *rados.IOContext) error {
		it, err := io.Iter()
		if err != nil {
			return mapErr(err)
		}
		defer it.Close()
		for it.Next() {
			if n := it.Value(); strings.HasPrefix(n, prefix) && objstore.ValidName(n) == nil {
				names = append(names, n)
			}
		}
		return mapErr(it.Err())
	})
	if err != nil {
		return err
	}
	return objstore.StatEach(ctx, s, names, fn)
}

func (s *Store) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	if off < 0 {
		return fmt.Errorf("rados: negative offset %d", off)
	}
	if err := objstore.ValidName(name); err != nil {
		return err
	}
	if len(p) == 0 {
		return s.with(ctx, name, func(io *rados.IOContext) error { return mapErr(io.Create(name, rados.CreateIdempotent)) })
	}
	_, err := aio(ctx, s.data, true, name, p, off)
	return err
}

func (s *Store) Close() error {
	if s.data != nil {
		s.data.Destroy()
		s.data = nil
	}
	for {
		select {
		case io := <-s.ioctxs:
			io.Destroy()
		default:
			if s.conn != nil {
				s.conn.Shutdown()
				s.conn = nil
			}
			return nil
		}
	}
}
