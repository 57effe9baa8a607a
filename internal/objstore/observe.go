package objstore

import (
	"context"
	"time"
)

// Operations an Observed store reports beside those of Fault rules.
const (
	OpDeleteVersion Op = "deleteversion"
	OpCopy          Op = "copy"
	OpLend          Op = "readlend"
	OpFence         Op = "fence"
	OpOpen          Op = "open" // HandleOpener.OpenHandle
)

// ObservedOps lists every operation an Observed store reports. Reads
// and writes through a Handle report as OpReadAt, OpWriteAt and OpSync,
// and ListNames as OpList.
var ObservedOps = []Op{OpReadAt, OpGet, OpPut, OpCreate, OpSwap, OpDelete, OpDeleteVersion,
	OpStat, OpList, OpWriteAt, OpSync, OpCopy, OpLend, OpFence, OpOpen}

// A Probe hears one finished call: the bytes it read or wrote (0 for
// calls that move no data), how long it took, and its error.
type Probe func(n int64, d time.Duration, err error)

// Observed is a Store that reports every call to the store it wraps to
// a Probe per operation. It offers exactly the capabilities of the
// store it wraps (see Wrapper), and observes calls through each.
type Observed struct {
	s      Store
	probes map[Op]Probe
	caps   Caps
}

// Observed has every optional method, so that it hides none.
var (
	_ Wrapper      = (*Observed)(nil)
	_ RangeWriter  = (*Observed)(nil)
	_ Syncer       = (*Observed)(nil)
	_ Copier       = (*Observed)(nil)
	_ HandleOpener = (*Observed)(nil)
	_ Lender       = (*Observed)(nil)
	_ Fencer       = (*Observed)(nil)
	_ NameLister   = (*Observed)(nil)
	_ FreshStater  = (*Observed)(nil)
	_ LazyCreator  = (*Observed)(nil)
)

// Observe wraps s; probe is called once per operation of ObservedOps,
// here, for the Probe of that operation (nil: not observed).
func Observe(s Store, probe func(op Op) Probe) *Observed {
	o := &Observed{s: s, probes: map[Op]Probe{}, caps: CapabilitiesOf(s)}
	for _, op := range ObservedOps {
		p := probe(op)
		if p == nil {
			p = func(int64, time.Duration, error) {}
		}
		o.probes[op] = p
	}
	return o
}

// Unwrap returns the observed store.
func (o *Observed) Unwrap() Store { return o.s }

// Capabilities are the observed store's.
func (o *Observed) Capabilities() Caps { return o.caps }

func (o *Observed) done(op Op, n int64, t time.Time, err error) {
	o.probes[op](n, time.Since(t), err)
}

func (o *Observed) ReadAt(ctx context.Context, name string, p []byte, off int64) error {
	t := time.Now()
	err := o.s.ReadAt(ctx, name, p, off)
	o.done(OpReadAt, int64(len(p)), t, err)
	return err
}

func (o *Observed) Get(ctx context.Context, name string) ([]byte, Version, error) {
	t := time.Now()
	b, v, err := o.s.Get(ctx, name)
	o.done(OpGet, int64(len(b)), t, err)
	return b, v, err
}

func (o *Observed) Put(ctx context.Context, name string, data []byte) (Version, error) {
	t := time.Now()
	v, err := o.s.Put(ctx, name, data)
	o.done(OpPut, int64(len(data)), t, err)
	return v, err
}

func (o *Observed) Create(ctx context.Context, name string, data []byte) (Version, error) {
	t := time.Now()
	v, err := o.s.Create(ctx, name, data)
	o.done(OpCreate, int64(len(data)), t, err)
	return v, err
}

func (o *Observed) Swap(ctx context.Context, name string, data []byte, old Version) (Version, error) {
	t := time.Now()
	v, err := o.s.Swap(ctx, name, data, old)
	o.done(OpSwap, int64(len(data)), t, err)
	return v, err
}

func (o *Observed) Delete(ctx context.Context, name string) error {
	t := time.Now()
	err := o.s.Delete(ctx, name)
	o.done(OpDelete, 0, t, err)
	return err
}

func (o *Observed) DeleteVersion(ctx context.Context, name string, old Version) error {
	t := time.Now()
	err := o.s.DeleteVersion(ctx, name, old)
	o.done(OpDeleteVersion, 0, t, err)
	return err
}

func (o *Observed) Stat(ctx context.Context, name string) (Info, error) {
	t := time.Now()
	in, err := o.s.Stat(ctx, name)
	o.done(OpStat, 0, t, err)
	return in, err
}

func (o *Observed) List(ctx context.Context, prefix string, fn func(Info) error) error {
	t := time.Now()
	err := o.s.List(ctx, prefix, fn)
	o.done(OpList, 0, t, err)
	return err
}

func (o *Observed) Close() error { return o.s.Close() }

// The optional capabilities: Observed has every method, but the
// capability helpers use one only if the wrapped store offers it.

func (o *Observed) ListNames(ctx context.Context, prefix string, fn func(string) error) error {
	t := time.Now()
	err := ListNames(ctx, o.s, prefix, fn)
	o.done(OpList, 0, t, err)
	return err
}

// ListNamesAfter is observed as OpList.
func (o *Observed) ListNamesAfter(ctx context.Context, prefix, after string, fn func(string) error) error {
	ol, ok := AsOrderedLister(o.s)
	if !ok {
		return ErrUnsupport
	}
	t := time.Now()
	err := ol.ListNamesAfter(ctx, prefix, after, fn)
	o.done(OpList, 0, t, err)
	return err
}

func (o *Observed) WriteAt(ctx context.Context, name string, p []byte, off int64) error {
	w, ok := AsRangeWriter(o.s)
	if !ok {
		return ErrUnsupport
	}
	t := time.Now()
	err := w.WriteAt(ctx, name, p, off)
	o.done(OpWriteAt, int64(len(p)), t, err)
	return err
}

func (o *Observed) Sync(ctx context.Context, name string) error {
	s, ok := AsSyncer(o.s)
	if !ok {
		return ErrUnsupport
	}
	t := time.Now()
	err := s.Sync(ctx, name)
	o.done(OpSync, 0, t, err)
	return err
}

func (o *Observed) Copy(ctx context.Context, src, dst string) error {
	c, ok := AsCopier(o.s)
	if !ok {
		return ErrUnsupport
	}
	t := time.Now()
	err := c.Copy(ctx, src, dst)
	o.done(OpCopy, 0, t, err)
	return err
}

func (o *Observed) ReadLend(ctx context.Context, name string, off int64, n int, fn func(bufs [][]byte) error) error {
	l, ok := AsLender(o.s)
	if !ok {
		return ErrUnsupport
	}
	t := time.Now()
	var got int64
	err := l.ReadLend(ctx, name, off, n, func(bufs [][]byte) error {
		for _, b := range bufs {
			got += int64(len(b))
		}
		return fn(bufs)
	})
	o.done(OpLend, got, t, err)
	return err
}

func (o *Observed) FenceID(ctx context.Context) (string, error) {
	f, ok := AsFencer(o.s)
	if !ok {
		return "", ErrUnsupport
	}
	return f.FenceID(ctx)
}

func (o *Observed) Fence(ctx context.Context, id string) error {
	f, ok := AsFencer(o.s)
	if !ok {
		return ErrUnsupport
	}
	t := time.Now()
	err := f.Fence(ctx, id)
	o.done(OpFence, 0, t, err)
	return err
}

func (o *Observed) FreshStat() bool { return o.caps&CapFreshStat != 0 }

func (o *Observed) OpenHandle(ctx context.Context, name string, create, writable bool) (Handle, error) {
	h, ok := AsHandleOpener(o.s)
	if !ok {
		return nil, ErrUnsupport
	}
	t := time.Now()
	hd, err := h.OpenHandle(ctx, name, create, writable)
	o.done(OpOpen, 0, t, err)
	if err != nil {
		return nil, err
	}
	return &observedHandle{o: o, h: hd}, nil
}

func (o *Observed) OpenHandleLazy(ctx context.Context, name string) (Handle, error) {
	l, ok := AsLazyCreator(o.s)
	if !ok {
		return nil, ErrUnsupport
	}
	t := time.Now()
	hd, err := l.OpenHandleLazy(ctx, name)
	o.done(OpOpen, 0, t, err)
	if err != nil {
		return nil, err
	}
	return &observedHandle{o: o, h: hd}, nil
}

func (o *Observed) ForgetLazy(names []string) {
	if l, ok := AsLazyCreator(o.s); ok {
		l.ForgetLazy(names)
	}
}

// observedHandle reports the I/O of a Handle as its store's.
type observedHandle struct {
	o *Observed
	h Handle
}

func (h *observedHandle) ReadAt(p []byte, off int64) error {
	t := time.Now()
	err := h.h.ReadAt(p, off)
	h.o.done(OpReadAt, int64(len(p)), t, err)
	return err
}

func (h *observedHandle) ReadAtUncached(p []byte, off int64) error {
	t := time.Now()
	err := ReadAtUncached(h.h, p, off)
	h.o.done(OpReadAt, int64(len(p)), t, err)
	return err
}

func (h *observedHandle) WriteAt(p []byte, off int64) error {
	t := time.Now()
	err := h.h.WriteAt(p, off)
	h.o.done(OpWriteAt, int64(len(p)), t, err)
	return err
}

func (h *observedHandle) Sync() error {
	t := time.Now()
	err := h.h.Sync()
	h.o.done(OpSync, 0, t, err)
	return err
}

func (h *observedHandle) Close() error { return h.h.Close() }
