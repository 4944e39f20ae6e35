package localkafka

import "syscall"

// sysProcAttr puts the JVM in its own process group (so Stop can signal the
// whole group) and has the kernel SIGKILL it if the thread that started it
// dies: Start runs the JVM from a goroutine locked to its OS thread for the
// JVM's whole life, so in practice that means "if this Go process dies".
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
