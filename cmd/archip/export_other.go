//go:build !linux

package main

import (
	"errors"
	"os"
)

// openUnnamed: unnamed files are Linux's; elsewhere exports use a named
// temporary file.
func openUnnamed(dir string) *os.File { return nil }

func linkFile(f *os.File, name string) error { return errors.ErrUnsupported }
