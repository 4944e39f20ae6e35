package workspace

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// dataLink is the symlink the kubelet swaps atomically to publish a new
// version of a Secret, ConfigMap or projected volume.
const dataLink = "..data"

// result is what the registry last took from one file.
type result struct {
	present bool   // the file exists
	val     string // its content, when read without error
	err     error  // it exists but cannot be read, or its name is no workspace's
}

func (r result) same(o result) bool {
	return r.present == o.present && r.val == o.val && errText(r.err) == errText(o.err)
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// sig is a file's stat signature: a write changes its size, modification
// time or (a file renamed over it) its inode.
type sig struct {
	state   uint8 // sigAbsent, sigFile, sigError
	size    int64
	mtime   int64
	ino     uint64
	dev     uint64
	errText string
}

const (
	sigAbsent uint8 = iota
	sigFile
	sigError
)

// entry is one file name's state in the scanner.
type entry struct {
	id   string
	kind kind
	sig  sig    // the last signature observed
	read bool   // res holds the content as of sig; false: read it once sig is seen again
	res  result // what the registry uses
	seen uint64 // the last round the name was listed
}

// scanner reads the directory. It is owned by whoever holds
// Registry.pollMu; it never publishes anything itself.
//
// Two layouts:
//   - Kubernetes (dir/..data is a symlink): the files are read from the
//     directory ..data points to, a complete version the kubelet never
//     modifies once published (it writes the next one beside it and swaps
//     the link). A poll is one readlink; a new target is read in full, and
//     kept only if ..data still points to it afterwards (else the version
//     read may have been deleted under us: read again).
//   - Plain directory (anything else): every poll lists the directory and
//     stats each file (following symlinks). A file whose signature changed
//     is read only once the next poll sees the same signature, so that a
//     file being written (truncated, half-written) is not taken; a removed
//     file is likewise gone only when two polls agree.
type scanner struct {
	dir    string
	target string // the ..data target the files were read from; "" plain
	round  uint64
	files  map[string]*entry
	// readHook, when set (tests), runs while a Kubernetes version is
	// read: with 0 before it is listed, 1 before its files are read.
	readHook func(step int)
}

// poll updates the files. It reports whether any result changed; err is a
// problem with the directory as a whole, which changes nothing.
func (s *scanner) poll(first bool) (changed bool, err error) {
	target, lerr := os.Readlink(filepath.Join(s.dir, dataLink))
	if lerr == nil {
		return s.pollData(target)
	}
	if s.target != "" { // ..data is gone: a plain directory now, read at once
		s.target, s.files, first = "", map[string]*entry{}, true
	}
	return s.pollPlain(first)
}

// pollData reads the version ..data points to when it is a new one.
func (s *scanner) pollData(target string) (bool, error) {
	for range 3 {
		if target == s.target {
			return false, nil
		}
		files, err := s.readVersion(s.resolve(target))
		again, lerr := os.Readlink(filepath.Join(s.dir, dataLink))
		switch {
		case lerr != nil:
			return false, fmt.Errorf("read %s again: %w", dataLink, lerr)
		case again != target:
			// Swapped while we read: what we read may be half gone (the
			// kubelet deletes the old version), an error included.
			target = again
			continue
		case err != nil:
			return false, err
		}
		s.target, s.files = target, files
		return true, nil
	}
	return false, fmt.Errorf("%s changed during each of 3 reads; trying again at the next poll", dataLink)
}

// resolve returns the directory a ..data target names.
func (s *scanner) resolve(target string) string {
	if filepath.IsAbs(target) {
		return target
	}
	return filepath.Join(s.dir, target)
}

func (s *scanner) hook(step int) {
	if s.readHook != nil {
		s.readHook(step)
	}
}

// readVersion reads every file of one published Kubernetes version.
func (s *scanner) readVersion(base string) (map[string]*entry, error) {
	s.hook(0)
	names, err := listNames(base)
	if err != nil {
		return nil, err
	}
	s.hook(1)
	files := make(map[string]*entry, len(names))
	for _, name := range names {
		e := newEntry(name)
		if e.kind != kindOther {
			e.res = readFile(filepath.Join(base, name))
		}
		e.read = true
		files[name] = e
	}
	return files, nil
}

// pollPlain lists and stats a plain directory. first reads every file at
// once (at Open), but reads each again at the next poll even if its
// signature stays the same: a write in the same clock tick as our read
// would not change its modification time.
func (s *scanner) pollPlain(first bool) (bool, error) {
	names, err := listNames(s.dir)
	if err != nil {
		return false, err
	}
	s.round++
	changed := false
	for _, name := range names {
		e := s.files[name]
		if e == nil {
			e = newEntry(name)
			s.files[name] = e
			if e.kind == kindOther {
				e.read, changed = true, true
			}
		}
		e.seen = s.round
		if e.kind != kindOther && s.observe(name, e, stat(filepath.Join(s.dir, name)), first) {
			changed = true
		}
	}
	for name, e := range s.files {
		if e.seen == s.round {
			continue
		}
		if e.kind == kindOther || s.observe(name, e, sig{state: sigAbsent}, first) {
			changed = true
		}
		if e.kind == kindOther || e.read && !e.res.present {
			delete(s.files, name)
		}
	}
	return changed, nil
}

// observe applies one observation of a file's signature; it reports
// whether the file's result changed.
func (s *scanner) observe(name string, e *entry, now sig, first bool) bool {
	switch {
	case first:
		e.sig, e.read = now, false
	case now != e.sig:
		e.sig, e.read = now, false // changed: wait for it to settle
		return false
	case e.read:
		return false
	default:
		e.read = true
	}
	var r result
	switch now.state {
	case sigFile:
		r = readFile(filepath.Join(s.dir, name))
	case sigError:
		r = result{present: true, err: errors.New(now.errText)}
	}
	if r.same(e.res) {
		return false
	}
	e.res = r
	return true
}

func newEntry(name string) *entry {
	id, k, err := classify(name)
	e := &entry{id: id, kind: k}
	if err != nil {
		e.res = result{present: true, err: err}
	}
	return e
}

// listNames lists a directory's names, without dot files (the kubelet's
// ..data, ..data_tmp and ..<timestamp> directories among them), sorted.
func listNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	kept := names[:0]
	for _, n := range names {
		if !strings.HasPrefix(n, ".") {
			kept = append(kept, n)
		}
	}
	return kept, nil
}

// stat returns path's signature, following symlinks: a dangling symlink
// (the kubelet's, for a removed file) is absent.
func stat(path string) sig {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return sig{state: sigAbsent}
	case err != nil:
		return sig{state: sigError, errText: err.Error()}
	case fi.IsDir():
		return sig{state: sigError, errText: "is a directory"}
	}
	ino, dev := inode(fi)
	return sig{state: sigFile, size: fi.Size(), mtime: fi.ModTime().UnixNano(), ino: ino, dev: dev}
}

// readFile reads one file of at most maxFile bytes.
func readFile(path string) result {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return result{}
	}
	if err != nil {
		return result{present: true, err: err}
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFile+1))
	switch {
	case err != nil:
		return result{present: true, err: err}
	case len(b) > maxFile:
		return result{present: true, err: fmt.Errorf("larger than %d bytes", maxFile)}
	}
	return result{present: true, val: string(b)}
}
