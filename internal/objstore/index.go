package objstore

import "context"

// IndexOps is the order of writes of a list index that a store keeps
// beside its objects (one key per object, set and removed by the
// object's writers), shared by the stores that keep one (RADOS's omap
// keys, the file store's key files): what makes every object that a
// returned call created have its key, however its writers interleave,
// stall or crash. See the RADOS store's index and docs/format.md.
type IndexOps struct {
	Set    func(ctx context.Context, name string) error         // sets name's key
	Has    func(ctx context.Context, name string) (bool, error) // reports whether name has its key
	Rm     func(ctx context.Context, name string) error         // removes name's key
	Exists func(ctx context.Context, name string) (bool, error) // reports whether the object exists
	// Hook, if set, runs between the steps (tests): "set", "keyed",
	// "created" around a write, "deleted", "checked" around a delete's.
	Hook func(step, name string)
}

func (o IndexOps) hook(step, name string) {
	if o.Hook != nil {
		o.Hook(step, name)
	}
}

// Write runs write, which may create the object name, in the index's
// order: the key set, write, the key read back and set again if gone.
// Once write returned, the check runs even if ctx is canceled: skipping
// it is the crash the order leaves uncovered, without a crash.
func (o IndexOps) Write(ctx context.Context, name string, write func() error) error {
	o.hook("set", name)
	if err := o.Set(ctx, name); err != nil {
		return err
	}
	o.hook("keyed", name)
	if err := write(); err != nil {
		return err
	}
	o.hook("created", name)
	ctx = context.WithoutCancel(ctx)
	has, err := o.Has(ctx, name)
	if err != nil || has {
		return err
	}
	return o.Set(ctx, name)
}

// Deleted removes the key of name, whose object a delete removed, then
// sets it again if the object exists by then (created since).
func (o IndexOps) Deleted(ctx context.Context, name string) error {
	ctx = context.WithoutCancel(ctx)
	o.hook("deleted", name)
	if err := o.Rm(ctx, name); err != nil {
		return err
	}
	ok, err := o.Exists(ctx, name)
	o.hook("checked", name)
	if err != nil || !ok {
		return err
	}
	return o.Set(ctx, name)
}
