package gc

// WithShortGrace lets a test collect with a grace below MinGrace.
func WithShortGrace(o Options) Options { o.shortGrace = true; return o }

const (
	RecordTTL = recordTTL
	MaxDrift  = maxDrift
)
