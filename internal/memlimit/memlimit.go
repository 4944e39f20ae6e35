// Package memlimit sizes the Go runtime's soft memory limit (GOMEMLIMIT)
// from the container's cgroup memory limit, so that the limit follows the
// pod's resources.limits.memory instead of a literal kept in step by hand.
//
// It reads the cgroup files itself (v1 and v2, about forty lines) rather
// than depend on a library: the worker needs one number at start, not
// automemlimit's refresh loop, provider chain and logging hooks.
package memlimit

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// Fraction of the cgroup limit given to the Go runtime: the rest covers
// what the runtime does not count (thread stacks outside the heap, the
// binary's text, cgo) and the GC's overshoot.
const Fraction = 0.9

// unlimitedV1 is the smallest value a cgroup v1 memory.limit_in_bytes takes
// when no limit is set (PAGE_COUNTER_MAX in pages, rounded down to a page:
// 0x7FFFFFFFFFFFF000 on 4 KiB pages). Anything at or above 2^62 is "none".
const unlimitedV1 = 1 << 62

// FromCgroup returns the memory limit of the cgroup the process runs in, in
// bytes, read under root (normally /sys/fs/cgroup) for the membership in
// procCgroup (the contents of /proc/self/cgroup). It looks at cgroup v2
// (memory.max, under root and under root/unified for hybrid hosts) and v1
// (memory/…/memory.limit_in_bytes), at the process's cgroup and every
// parent up to the mount's root, and returns the smallest limit found.
// ok is false when no limit is set anywhere.
func FromCgroup(root string, procCgroup []byte) (limit int64, ok bool) {
	var best int64 = -1
	consider := func(dir, rel, file string) {
		for p := path.Clean("/" + rel); ; p = path.Dir(p) {
			if n, found := readLimit(filepath.Join(dir, p, file)); found && (best < 0 || n < best) {
				best = n
			}
			if p == "/" {
				return
			}
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(procCgroup))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		f := strings.SplitN(sc.Text(), ":", 3)
		if len(f) != 3 {
			continue
		}
		switch {
		case f[0] == "0" && f[1] == "":
			consider(root, f[2], "memory.max")
			consider(filepath.Join(root, "unified"), f[2], "memory.max")
		case hasController(f[1], "memory"):
			consider(filepath.Join(root, "memory"), f[2], "memory.limit_in_bytes")
		}
	}
	if best < 0 {
		return 0, false
	}
	return best, true
}

func hasController(list, name string) bool {
	for _, c := range strings.Split(list, ",") {
		if c == name {
			return true
		}
	}
	return false
}

// readLimit reads one limit file: a byte count, or "max" (v2) or a huge
// value (v1) for none.
func readLimit(file string) (int64, bool) {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0, false
	}
	s := strings.TrimSpace(string(b))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n >= unlimitedV1 {
		return 0, false
	}
	return n, true
}

// Result is what Apply decided, for the start-up log.
type Result struct {
	Limit  int64  // the Go memory limit now in force, bytes; 0 when none
	Cgroup int64  // the cgroup limit found, bytes; 0 when none
	Source string // "GOMEMLIMIT", "cgroup" or "none"
}

// Apply sets the runtime's memory limit to Fraction of the cgroup limit,
// unless GOMEMLIMIT is set (the runtime has applied it: an explicit value
// wins). getenv reads GOMEMLIMIT; set is debug.SetMemoryLimit (a test
// passes its own).
func Apply(getenv func(string) string, root string, readProc func() ([]byte, error), set func(int64) int64) (Result, error) {
	if v := getenv("GOMEMLIMIT"); v != "" {
		return Result{Limit: set(-1), Source: "GOMEMLIMIT"}, nil
	}
	proc, err := readProc()
	if err != nil {
		if errors.Is(err, os.ErrNotExist) { // not Linux, or no /proc
			return Result{Source: "none"}, nil
		}
		return Result{Source: "none"}, err
	}
	cg, ok := FromCgroup(root, proc)
	if !ok {
		return Result{Source: "none"}, nil
	}
	limit := int64(float64(cg) * Fraction)
	set(limit)
	return Result{Limit: limit, Cgroup: cg, Source: "cgroup"}, nil
}
