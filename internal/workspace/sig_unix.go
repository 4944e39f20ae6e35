//go:build unix

package workspace

import (
	"io/fs"
	"syscall"
)

// inode returns fi's inode and device: a file renamed over another (an
// atomic rewrite) changes them even with the same size and time.
func inode(fi fs.FileInfo) (ino, dev uint64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return uint64(st.Ino), uint64(st.Dev) //nolint:unconvert // int32 on darwin
	}
	return 0, 0
}
