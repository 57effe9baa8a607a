//go:build !unix

package volume

func fdLimit() uint64 { return 0 }
