//go:build !linux

package objstore

import "os"

// writeUncached: no O_DIRECT here; the data goes through the cache.
func writeUncached(fh *os.File, data []byte) (bool, error) { return false, nil }

// readUncached: no O_DIRECT here; the data comes through the cache.
func readUncached(fh *os.File, p []byte, off int64) (bool, int, error) { return false, 0, nil }
