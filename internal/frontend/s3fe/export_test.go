package s3fe

import "time"

// SetBodyIdle sets the idle timeout of request bodies until the returned
// function restores it.
func SetBodyIdle(d time.Duration) func() {
	old := bodyIdle
	bodyIdle = d
	return func() { bodyIdle = old }
}
