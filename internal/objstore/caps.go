package objstore

import "strings"

// Caps is a set of the optional capabilities of a store: the small
// interfaces beside Store (RangeWriter, Syncer, ...), and FreshStat's
// answer.
type Caps uint16

// The capabilities.
const (
	CapRangeWrite  Caps = 1 << iota // RangeWriter
	CapSync                         // Syncer
	CapCopy                         // Copier
	CapHandles                      // HandleOpener
	CapLend                         // Lender
	CapFence                        // Fencer
	CapListNames                    // NameLister
	CapFreshStat                    // FreshStater, answering true
	CapListOrdered                  // OrderedLister
	CapLazyCreate                   // LazyCreator
	CapSyncWaits                    // SyncWaiter, answering true
	CapSettle                       // Settler
	CapSyncInode                    // InodeSyncer, answering true
)

var capNames = []string{"rangewrite", "sync", "copy", "handles", "lend", "fence", "listnames", "freshstat", "listordered", "lazycreate", "syncwaits", "settle", "syncinode"}

func (c Caps) String() string {
	var s []string
	for i, n := range capNames {
		if c&(1<<i) != 0 {
			s = append(s, n)
		}
	}
	return "{" + strings.Join(s, ",") + "}"
}

// A Wrapper is a store in front of another (instrumentation, fault
// injection). It says which capabilities it offers instead of letting
// callers guess them from its methods, which a wrapper must have whether
// or not the store it wraps has the capability: the helpers below
// (AsRangeWriter, ...) trust Capabilities, so that a wrapper can neither
// hide a capability of the store it wraps (a method it lacks is found
// on the wrapped store by Unwrap) nor fake one (a method it has for a
// capability it does not offer is not used).
type Wrapper interface {
	Store
	// Capabilities is the set this store offers: normally
	// CapabilitiesOf(Unwrap()), or a subset of it.
	Capabilities() Caps
	// Unwrap returns the wrapped store.
	Unwrap() Store
}

// CapabilitiesOf returns the capabilities of s: a Wrapper's own answer,
// or those whose interfaces s implements.
func CapabilitiesOf(s Store) Caps {
	if w, ok := s.(Wrapper); ok {
		return w.Capabilities()
	}
	var c Caps
	if _, ok := s.(RangeWriter); ok {
		c |= CapRangeWrite
	}
	if _, ok := s.(Syncer); ok {
		c |= CapSync
	}
	if _, ok := s.(Copier); ok {
		c |= CapCopy
	}
	if _, ok := s.(HandleOpener); ok {
		c |= CapHandles
	}
	if _, ok := s.(Lender); ok {
		c |= CapLend
	}
	if _, ok := s.(Fencer); ok {
		c |= CapFence
	}
	if _, ok := s.(NameLister); ok {
		c |= CapListNames
	}
	if _, ok := s.(OrderedLister); ok {
		c |= CapListOrdered
	}
	if _, ok := s.(LazyCreator); ok {
		c |= CapLazyCreate
	}
	if f, ok := s.(FreshStater); ok && f.FreshStat() {
		c |= CapFreshStat
	}
	if w, ok := s.(SyncWaiter); ok && w.SyncWaitsOnly() {
		c |= CapSyncWaits
	}
	if _, ok := s.(Settler); ok {
		c |= CapSettle
	}
	if i, ok := s.(InodeSyncer); ok && i.SyncWritesInode() {
		c |= CapSyncInode
	}
	return c
}

// as finds the implementation of capability c on s: s's own if s has
// the method, else down the Unwrap chain; none if s does not offer c.
func as[T any](s Store, c Caps) (T, bool) {
	var zero T
	if CapabilitiesOf(s)&c == 0 {
		return zero, false
	}
	for {
		if t, ok := s.(T); ok {
			return t, true
		}
		w, ok := s.(Wrapper)
		if !ok {
			return zero, false
		}
		s = w.Unwrap()
	}
}

// AsRangeWriter returns s as a RangeWriter if it offers CapRangeWrite.
func AsRangeWriter(s Store) (RangeWriter, bool) { return as[RangeWriter](s, CapRangeWrite) }

// AsSyncer returns s as a Syncer if it offers CapSync.
func AsSyncer(s Store) (Syncer, bool) { return as[Syncer](s, CapSync) }

// AsCopier returns s as a Copier if it offers CapCopy.
func AsCopier(s Store) (Copier, bool) { return as[Copier](s, CapCopy) }

// AsHandleOpener returns s as a HandleOpener if it offers CapHandles.
func AsHandleOpener(s Store) (HandleOpener, bool) { return as[HandleOpener](s, CapHandles) }

// AsLender returns s as a Lender if it offers CapLend.
func AsLender(s Store) (Lender, bool) { return as[Lender](s, CapLend) }

// AsFencer returns s as a Fencer if it offers CapFence.
func AsFencer(s Store) (Fencer, bool) { return as[Fencer](s, CapFence) }

// AsNameLister returns s as a NameLister if it offers CapListNames.
func AsNameLister(s Store) (NameLister, bool) { return as[NameLister](s, CapListNames) }

// AsOrderedLister returns s as an OrderedLister if it offers CapListOrdered.
func AsOrderedLister(s Store) (OrderedLister, bool) { return as[OrderedLister](s, CapListOrdered) }

// AsLazyCreator returns s as a LazyCreator if it offers CapLazyCreate.
func AsLazyCreator(s Store) (LazyCreator, bool) { return as[LazyCreator](s, CapLazyCreate) }

// AsSettler returns s as a Settler if it offers CapSettle.
func AsSettler(s Store) (Settler, bool) { return as[Settler](s, CapSettle) }

// SyncWaits reports whether s's Sync only waits (see SyncWaiter).
func SyncWaits(s Store) bool { return CapabilitiesOf(s)&CapSyncWaits != 0 }

// SyncWritesInode reports whether s's Sync writes an object's inode
// after a write moved its times (see InodeSyncer).
func SyncWritesInode(s Store) bool { return CapabilitiesOf(s)&CapSyncInode != 0 }

// FreshStat reports whether s's Stat is fresh (see FreshStater).
func FreshStat(s Store) bool { return CapabilitiesOf(s)&CapFreshStat != 0 }
