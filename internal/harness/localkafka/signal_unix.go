//go:build unix

package localkafka

import (
	"errors"
	"os"
	"syscall"
)

// signalGroup sends sig to the process group led by p (the JVM, started with
// Setpgid), falling back to p alone if the group is gone.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	err := syscall.Kill(-p.Pid, sig)
	if errors.Is(err, syscall.ESRCH) {
		err = p.Signal(sig)
		if errors.Is(err, os.ErrProcessDone) {
			return nil
		}
	}
	return err
}
