//go:build !unix

package localkafka

import (
	"context"
	"errors"
	"os"
	"syscall"
)

var errUnsupported = errors.New("localkafka: only supported on Unix systems")

func lockFile(context.Context, string, func()) (func(), error) { return nil, errUnsupported }

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, _ syscall.Signal) error { return p.Kill() }
