package workspace

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

var testDCs = []string{"01", "02", "03", "04", "05", "06", "101"}

// recorder collects what a Registry reports.
type recorder struct {
	mu       sync.Mutex
	updates  []Update
	problems []Problem
	changed  chan Update // every update, unbuffered reads are not required
}

func newRecorder() *recorder { return &recorder{changed: make(chan Update, 100)} }

func (rec *recorder) onChange(u Update) {
	rec.mu.Lock()
	rec.updates = append(rec.updates, u)
	rec.mu.Unlock()
	rec.changed <- u
}

func (rec *recorder) onProblem(p Problem) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	rec.problems = append(rec.problems, p)
}

func (rec *recorder) problemFiles() []string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	var fs []string
	for _, p := range rec.problems {
		fs = append(fs, p.File)
	}
	return fs
}

// options returns Options for dir that report to rec and log into logs.
func options(dir string, rec *recorder, logs *syncBuffer) Options {
	o := Options{Dir: dir, DefaultDC: "01", DefaultRPM: 300, ValidDC: OneOf(testDCs)}
	if rec != nil {
		o.OnChange, o.OnProblem = rec.onChange, rec.onProblem
	}
	if logs != nil {
		o.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	} else {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// write writes name in dir in place (not atomically), as an editor or
// `echo key > file` does.
func write(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func remove(t testing.TB, dir, name string) {
	t.Helper()
	if err := os.Remove(filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

func mustOpen(t testing.TB, o Options) *Registry {
	t.Helper()
	r, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// kubelet publishes versions of a volume exactly as the kubelet's
// AtomicWriter does (kubernetes pkg/volume/util/atomic_writer.go, Write):
// a new ..<timestamp> directory holds the payload, user-visible symlinks
// name -> ..data/name are created for new names, a ..data_tmp symlink to the
// new directory is renamed over ..data, the old user-visible names are
// removed, then the old timestamped directory.
type kubelet struct {
	t   testing.TB
	dir string
}

func (k *kubelet) publish(payload map[string]string) {
	t := k.t
	t.Helper()
	old, err := os.Readlink(filepath.Join(k.dir, "..data"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var oldNames []string
	if old != "" {
		if oldNames, err = listNames(filepath.Join(k.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
	ts, err := os.MkdirTemp(k.dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range payload {
		write(t, ts, name, content)
	}
	for name := range payload {
		if _, err := os.Readlink(filepath.Join(k.dir, name)); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", name), filepath.Join(k.dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Symlink(filepath.Base(ts), filepath.Join(k.dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(k.dir, "..data_tmp"), filepath.Join(k.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for _, name := range oldNames {
		if _, ok := payload[name]; !ok {
			if err := os.Remove(filepath.Join(k.dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(k.dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// noKeyIn fails if a key appears in s.
func noKeyIn(t testing.TB, s string, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if strings.Contains(s, k) {
			t.Errorf("key %q appears in %q", k, s)
		}
	}
}
