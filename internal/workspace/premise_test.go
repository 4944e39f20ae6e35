package workspace

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestMtimeGranularityPremise checks the premise of the plain directory's
// change detection: two in-place writes of the same size, 20 ms apart,
// get different signatures (the file system's modification times are finer
// than the poll interval). On a file system with 1 s or 2 s times (ext3,
// FAT) this fails: such a directory must be written with renames (a new
// inode), as the package doc says.
func TestMtimeGranularityPremise(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "A.key")
	write(t, dir, "A.key", "a1")
	before := stat(path)
	time.Sleep(20 * time.Millisecond)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0) // same inode
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("a2"); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	after := stat(path)
	if before.ino != after.ino || before.size != after.size {
		t.Fatalf("not an in-place write of the same size: %+v, %+v", before, after)
	}
	if before == after {
		t.Fatalf("an in-place rewrite 20 ms later left the signature unchanged (%+v): modification times are too coarse", after)
	}
}

// TestRealClockRotation runs the registry on the real clock with a short
// interval: a rotation is used well within a second.
func TestRealClockRotation(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "A.key", "a1")
	o := options(dir, nil, nil)
	o.Interval = 10 * time.Millisecond
	r := mustOpen(t, o)
	stop := run(t, r)
	defer stop()
	key := r.KeyFunc("A")
	// A rotation written as an operator should: a new file renamed over.
	write(t, dir, ".A.key.tmp", "a2")
	if err := os.Rename(filepath.Join(dir, ".A.key.tmp"), filepath.Join(dir, "A.key")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for k, _ := key(); k != "a2"; k, _ = key() {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("key still %q after 5 s", k)
		}
		time.Sleep(time.Millisecond)
	}
	t.Logf("rotation used after %s", time.Since(start))
}
