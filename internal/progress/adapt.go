package progress

import "github.com/archipelago-go/archip/internal/move"

// GC returns a gc.Options.Progress that records a collection's phase
// ("mark", "sweep") and counts: heads marked, objects examined.
func (r *Reporter) GC() func(phase string, done int64) {
	return func(phase string, done int64) {
		unit := "objects_examined"
		if phase == "mark" {
			unit = "heads_marked"
		}
		r.Set(phase, map[string]int64{unit: done})
	}
}

// Move returns a move.Options.Progress that records a move's step and
// counts: the walk, blocks walked and to walk in it, blocks and bytes
// copied.
func (r *Reporter) Move() func(move.Progress) {
	return func(p move.Progress) {
		r.Set(p.Step, map[string]int64{"walk": int64(p.Walk), "blocks_walked": p.Done, "blocks_to_walk": p.Total,
			"blocks_copied": p.Copied, "bytes_copied": p.Bytes})
	}
}
