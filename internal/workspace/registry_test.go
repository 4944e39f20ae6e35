package workspace

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// run starts r.Run and returns a function that stops it and waits.
func run(t *testing.T, r *Registry) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// expectUpdate waits (fake time, in a synctest bubble) for the next update
// and fails if it does not come within limit.
func expectUpdate(t *testing.T, rec *recorder, limit time.Duration) Update {
	t.Helper()
	start := time.Now()
	select {
	case u := <-rec.changed:
		t.Logf("generation %d after %s: %v", u.Generation, time.Since(start), u.Changes)
		return u
	case <-time.After(limit):
		t.Fatalf("no update within %s", limit)
		return Update{}
	}
}

func expectNoUpdate(t *testing.T, rec *recorder, d time.Duration) {
	t.Helper()
	select {
	case u := <-rec.changed:
		t.Fatalf("unexpected update %d: %v", u.Generation, u.Changes)
	case <-time.After(d):
	}
}

func wantChanges(t *testing.T, u Update, want ...Change) {
	t.Helper()
	if !slices.Equal(u.Changes, want) {
		t.Fatalf("generation %d changes = %v, want %v", u.Generation, u.Changes, want)
	}
}

func wantKey(t *testing.T, r *Registry, id, key string) {
	t.Helper()
	got, err := r.KeyFunc(id)()
	if err != nil || got != key {
		t.Fatalf("KeyFunc(%s)() = %q, %v; want %q", id, got, err, key)
	}
}

func TestOpenLoads(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "AAAAAAAAAAAAAAAAAAAAAAAA.key", "key-a\n")
	write(t, dir, "BBB_DEBUG.key", "key-b\r\n")
	write(t, dir, "BBB_DEBUG.dc", " 101\n")
	write(t, dir, "BBB_DEBUG.rate_limit_rpm", "150.5\n")
	write(t, dir, "c-3.key", "key-c")
	write(t, dir, "c-3.rate_limit_rpm", "60")
	write(t, dir, "ONLYDC.dc", "02") // no key: no workspace
	write(t, dir, ".hidden.key", "ignored")
	if err := os.Mkdir(filepath.Join(dir, "..2026_12_05_09_00_00.123"), 0o755); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	r := mustOpen(t, options(dir, rec, nil))

	if got, want := r.IDs(), []string{"AAAAAAAAAAAAAAAAAAAAAAAA", "BBB_DEBUG", "c-3"}; !slices.Equal(got, want) {
		t.Fatalf("IDs = %v, want %v", got, want)
	}
	for _, c := range []struct {
		id, key, dc string
		rpm         float64
	}{
		{"AAAAAAAAAAAAAAAAAAAAAAAA", "key-a", "01", 300},
		{"BBB_DEBUG", "key-b", "101", 150.5},
		{"c-3", "key-c", "01", 60},
	} {
		w, ok := r.Lookup(c.id)
		if !ok || w.ID != c.id || w.Key() != c.key || w.DC != c.dc || w.RateLimitRPM != c.rpm {
			t.Errorf("Lookup(%s) = %v (key %q), %v; want key %q dc %s rpm %v", c.id, w, w.Key(), ok, c.key, c.dc, c.rpm)
		}
		wantKey(t, r, c.id, c.key)
	}
	if _, ok := r.Lookup("ONLYDC"); ok {
		t.Error("a workspace without a key file is in the registry")
	}
	if r.Generation() != 1 || len(rec.updates) != 1 || rec.updates[0].Generation != 1 || len(rec.updates[0].Changes) != 3 {
		t.Errorf("generation %d, updates %v; want one update, generation 1, 3 added", r.Generation(), rec.updates)
	}
	if ps := r.Problems(); len(ps) != 0 {
		t.Errorf("Problems = %v, want none", ps)
	}
	if _, err := r.KeyFunc("NOPE")(); err == nil || !strings.Contains(err.Error(), "NOPE is not in the registry") {
		t.Errorf("KeyFunc(NOPE) error = %v", err)
	}
}

func TestOpenFailsOnUnreadableDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	write(t, dir, "file", "x")
	for name, d := range map[string]string{"missing": filepath.Join(dir, "missing"), "not a directory": file} {
		t.Run(name, func(t *testing.T) {
			_, err := Open(options(d, nil, nil))
			if err == nil || !strings.Contains(err.Error(), d) {
				t.Fatalf("Open(%s) error = %v, want an error naming it", d, err)
			}
		})
	}
	if _, err := Open(Options{Dir: dir}); err == nil {
		t.Error("Open without ValidDC: no error")
	}
}

// TestPlainChangesWithin5s adds, rotates, changes and removes workspaces
// in a plain directory, written in place, and checks each takes effect
// within 5 s with the default interval.
func TestPlainChangesWithin5s(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "A.key", "a1")
		write(t, dir, "B.key", "b1")
		rec := newRecorder()
		r := mustOpen(t, options(dir, rec, nil))
		<-rec.changed
		stop := run(t, r)
		defer stop()
		time.Sleep(time.Second / 2) // act between the polls, at 1 s, 2 s, ...
		const limit = 5 * time.Second

		expectNoUpdate(t, rec, 3*time.Second) // the confirmation reads change nothing

		write(t, dir, "C.key", "c1")
		wantChanges(t, expectUpdate(t, rec, limit), Change{"C", Added})
		wantKey(t, r, "C", "c1")

		key := r.KeyFunc("A") // taken before the rotation, as the sink does
		write(t, dir, "A.key", "a2-rotated")
		wantChanges(t, expectUpdate(t, rec, limit), Change{"A", KeyRotated})
		if k, _ := key(); k != "a2-rotated" {
			t.Fatalf("KeyFunc after rotation = %q", k)
		}

		write(t, dir, "B.dc", "02")
		write(t, dir, "B.rate_limit_rpm", "100")
		wantChanges(t, expectUpdate(t, rec, limit), Change{"B", DCChanged | LimitsChanged})
		if w, _ := r.Lookup("B"); w.DC != "02" || w.RateLimitRPM != 100 {
			t.Fatalf("B = %v", w)
		}

		remove(t, dir, "B.rate_limit_rpm") // back to the default
		wantChanges(t, expectUpdate(t, rec, limit), Change{"B", LimitsChanged})

		remove(t, dir, "C.key")
		wantChanges(t, expectUpdate(t, rec, limit), Change{"C", Removed})
		if _, err := r.KeyFunc("C")(); err == nil {
			t.Fatal("KeyFunc of a removed workspace returns a key")
		}
		if g := r.Generation(); g != 6 {
			t.Errorf("Generation = %d, want 6", g)
		}
	})
}

// TestKubeletSwapWithin5s publishes versions of a Secret volume as the
// kubelet does and checks each change takes effect within 5 s.
func TestKubeletSwapWithin5s(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		k := &kubelet{t: t, dir: dir}
		k.publish(map[string]string{"A.key": "a1", "B.key": "b1", "B.dc": "02"})
		rec := newRecorder()
		r := mustOpen(t, options(dir, rec, nil))
		wantChanges(t, <-rec.changed, Change{"A", Added}, Change{"B", Added})
		if w, _ := r.Lookup("B"); w.DC != "02" {
			t.Fatalf("B = %v", w)
		}
		stop := run(t, r)
		defer stop()
		time.Sleep(time.Second / 2)
		const limit = 5 * time.Second

		k.publish(map[string]string{"A.key": "a1", "B.key": "b1", "B.dc": "02", "C.key": "c1", "C.rate_limit_rpm": "30"})
		wantChanges(t, expectUpdate(t, rec, limit), Change{"C", Added})
		if w, _ := r.Lookup("C"); w.RateLimitRPM != 30 {
			t.Fatalf("C = %v", w)
		}

		// Rotation and a move to another data center, seen together.
		k.publish(map[string]string{"A.key": "a1", "B.key": "b2", "B.dc": "03", "C.key": "c1", "C.rate_limit_rpm": "30"})
		wantChanges(t, expectUpdate(t, rec, limit), Change{"B", KeyRotated | DCChanged})
		wantKey(t, r, "B", "b2")

		k.publish(map[string]string{"B.key": "b2", "B.dc": "03"})
		wantChanges(t, expectUpdate(t, rec, limit), Change{"A", Removed}, Change{"C", Removed})
		expectNoUpdate(t, rec, 3*time.Second)
		if ps := r.Problems(); len(ps) != 0 {
			t.Errorf("Problems = %v", ps)
		}
	})
}

// TestKubeletSwapDuringRead swaps ..data while the registry reads a
// version, which the kubelet then deletes: before the registry lists it
// (the listing fails) or after (its files read as removed). The registry
// must not take the half-deleted version (its workspaces would be removed)
// nor report a problem, and must end on the newest version.
func TestKubeletSwapDuringRead(t *testing.T) {
	for step, name := range []string{"before the listing", "after the listing"} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			k := &kubelet{t: t, dir: dir}
			k.publish(map[string]string{"A.key": "a1", "B.key": "b1"})
			rec := newRecorder()
			r := mustOpen(t, options(dir, rec, nil))
			<-rec.changed

			reads := 0
			r.sc.readHook = func(s int) {
				if s == step {
					if reads++; reads == 1 {
						k.publish(map[string]string{"A.key": "a3", "B.key": "b3"}) // deletes v2
					}
				}
			}
			k.publish(map[string]string{"A.key": "a2", "B.key": "b2"})
			r.poll()
			if reads != 2 {
				t.Fatalf("read %d versions, want 2 (v2, swapped away during its read, then v3)", reads)
			}
			for _, u := range rec.updates {
				for _, c := range u.Changes {
					if c.What == Removed {
						t.Fatalf("generation %d removed %s", u.Generation, c.ID)
					}
				}
			}
			if got := rec.problemFiles(); len(got) != 0 {
				t.Fatalf("problems reported: %q", got)
			}
			wantKey(t, r, "A", "a3")
			wantKey(t, r, "B", "b3")
		})
	}
}

// TestKubeletBadVersionKeepsLastGood publishes a version in which one
// workspace's key is empty and another's data center invalid, while a
// third rotates: the first two keep their last good values, the third
// rotates, and both files are problems until a good version comes.
func TestKubeletBadVersionKeepsLastGood(t *testing.T) {
	dir := t.TempDir()
	k := &kubelet{t: t, dir: dir}
	k.publish(map[string]string{"A.key": "a1", "B.key": "b1", "B.dc": "02", "C.key": "c1"})
	rec := newRecorder()
	r := mustOpen(t, options(dir, rec, nil))
	<-rec.changed

	k.publish(map[string]string{"A.key": "", "B.key": "b1", "B.dc": "99", "C.key": "c2"})
	r.poll()
	wantChanges(t, <-rec.changed, Change{"C", KeyRotated})
	wantKey(t, r, "A", "a1")
	if w, _ := r.Lookup("B"); w.DC != "02" {
		t.Fatalf("B = %v, want its last good data center", w)
	}
	var files []string
	for _, p := range r.Problems() {
		files = append(files, p.File)
	}
	if !slices.Equal(files, []string{"A.key", "B.dc"}) {
		t.Fatalf("problems in %v, want A.key and B.dc", files)
	}

	k.publish(map[string]string{"A.key": "a2", "B.key": "b1", "B.dc": "03", "C.key": "c2"})
	r.poll()
	wantChanges(t, <-rec.changed, Change{"A", KeyRotated}, Change{"B", DCChanged})
	if ps := r.Problems(); len(ps) != 0 {
		t.Fatalf("Problems = %v", ps)
	}
}
