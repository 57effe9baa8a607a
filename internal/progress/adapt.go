package progress

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
