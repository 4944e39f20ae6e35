//go:build unix && !linux

package localkafka

import "syscall"

// sysProcAttr puts the JVM in its own process group so Stop can signal the
// whole group. There is no parent-death signal outside Linux: a Go process
// that crashes may leave the JVM running.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
