package workspace

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// TestHalfWrittenKeyKeepsLastGood truncates a key file (as `echo k > f`
// does before it writes) and leaves it so: the workspace keeps its last
// good key, the file is reported once, the neighbour is untouched; the
// complete key then rotates it and resolves the problem.
func TestHalfWrittenKeyKeepsLastGood(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := t.TempDir()
		write(t, dir, "A.key", "a1")
		write(t, dir, "B.key", "b1")
		rec, logs := newRecorder(), &syncBuffer{}
		r := mustOpen(t, options(dir, rec, logs))
		<-rec.changed
		stop := run(t, r)
		defer stop()
		time.Sleep(time.Second / 2)

		write(t, dir, "A.key", "")
		expectNoUpdate(t, rec, 10*time.Second)
		wantKey(t, r, "A", "a1")
		wantKey(t, r, "B", "b1")
		if got := rec.problemFiles(); !slices.Equal(got, []string{"A.key"}) {
			t.Fatalf("problems reported = %v, want A.key once", got)
		}
		ps := r.Problems()
		if len(ps) != 1 || ps[0].ID != "A" || !strings.Contains(ps[0].Err.Error(), "A.key: empty") ||
			!strings.Contains(ps[0].Err.Error(), "keeping the workspace's last good value") {
			t.Fatalf("Problems = %v", ps)
		}

		// Half a key and a control character: still kept.
		write(t, dir, "A.key", "a2\x00")
		expectNoUpdate(t, rec, 5*time.Second)
		wantKey(t, r, "A", "a1")

		write(t, dir, "A.key", "a2\n")
		wantChanges(t, expectUpdate(t, rec, 5*time.Second), Change{"A", KeyRotated})
		wantKey(t, r, "A", "a2")
		if ps := r.Problems(); len(ps) != 0 {
			t.Fatalf("Problems after the fix = %v", ps)
		}
		noKeyIn(t, logs.String(), "a1", "a2")
	})
}

// TestRewriteBetweenPollsIsNotAProblem truncates and rewrites a key
// within one poll interval: the registry never takes the empty file.
func TestRewriteBetweenPollsIsNotAProblem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir, rec, _, stop := runWithA1(t)
		defer stop()
		time.Sleep(1500 * time.Millisecond) // the confirmation read at 1 s is done

		write(t, dir, "A.key", "")
		time.Sleep(time.Second) // one poll sees it empty
		write(t, dir, "A.key", "a2")
		wantChanges(t, expectUpdate(t, rec, 5*time.Second), Change{"A", KeyRotated})
		if got := rec.problemFiles(); len(got) != 0 {
			t.Fatalf("problems reported = %v, want none", got)
		}
	})
}

// TestRemovedAndRecreatedBetweenPolls removes a key file and writes it
// again within one poll interval (a non-atomic replacement): the
// workspace is never removed.
func TestRemovedAndRecreatedBetweenPolls(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir, rec, r, stop := runWithA1(t)
		defer stop()
		time.Sleep(1500 * time.Millisecond)

		remove(t, dir, "A.key")
		time.Sleep(time.Second)
		write(t, dir, "A.key", "a1")
		expectNoUpdate(t, rec, 5*time.Second)
		wantKey(t, r, "A", "a1")
	})
}

// TestRewriteInTheTickOfOpen rewrites a key, same size, right after Open
// read it, with the modification time Open saw (a file system whose clock
// did not tick in between): the first poll reads it again anyway.
func TestRewriteInTheTickOfOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "A.key")
	write(t, dir, "A.key", "a1")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	r := mustOpen(t, options(dir, rec, nil))
	write(t, dir, "A.key", "a2")
	if err := os.Chtimes(path, fi.ModTime(), fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if s := stat(path); s != r.sc.files["A.key"].sig {
		t.Fatalf("the rewrite changed the signature (%+v): the test does not test the tick", s)
	}
	r.poll()
	wantKey(t, r, "A", "a2")
}

func TestInvalidNames(t *testing.T) {
	dir := t.TempDir()
	write(t, dir, "GOOD.key", "k")
	bad := map[string]string{
		"bad id.key":                      "is not a valid workspace ID",
		"a:b.key":                         "is not a valid workspace ID",
		"-lead.dc":                        "is not a valid workspace ID",
		".key":                            "", // a dot file: ignored
		strings.Repeat("X", 129) + ".key": "is not a valid workspace ID",
		"GOOD.keys":                       "not a workspace file",
		"README":                          "not a workspace file",
	}
	for name := range bad {
		write(t, dir, name, "x")
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	bad["sub"] = "not a workspace file"
	rec := newRecorder()
	r := mustOpen(t, options(dir, rec, nil))
	if got := r.IDs(); !slices.Equal(got, []string{"GOOD"}) {
		t.Fatalf("IDs = %v", got)
	}
	got := map[string]string{}
	for _, p := range r.Problems() {
		got[p.File] = p.Err.Error()
	}
	for name, want := range bad {
		switch msg, ok := got[name]; {
		case want == "" && ok:
			t.Errorf("%s is a problem: %s", name, msg)
		case want != "" && (!ok || !strings.Contains(msg, want) || !strings.Contains(msg, name)):
			t.Errorf("%s: problem %q, want one naming the file and %q", name, msg, want)
		}
	}
	if len(rec.problems) != len(got) {
		t.Errorf("reported %d problems, %d outstanding", len(rec.problems), len(got))
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{
		"ABCDEFGHIJKLMNOPQRSTUVWX": true, "ABC123_DEBUG": true, "a-b_c": true, "1": true,
		"": false, "_a": false, "-a": false, "a b": false, "a:b": false, "a.b": false, "a/b": false,
		"é": false, strings.Repeat("A", 128): true, strings.Repeat("A", 129): false,
	} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestInvalidValues writes bad .dc and .rate_limit_rpm files: a new
// workspace stays out until they are fixed, an existing one keeps its last
// good value, the neighbour is untouched, and each file is named.
func TestInvalidValues(t *testing.T) {
	cases := []struct{ file, content, want string }{
		{".dc", "07", `"07" is not one of 01, 02`},
		{".dc", "", "empty"},
		{".dc", "a-key-pasted-here-by-mistake", "a value of 28 bytes is not one of"},
		{".rate_limit_rpm", "abc", `"abc" is not a finite number`},
		{".rate_limit_rpm", "-5", "is not a finite number"},
		{".rate_limit_rpm", "0", "is not a finite number of requests per minute > 0"},
		{".rate_limit_rpm", "NaN", "is not a finite number"},
		{".rate_limit_rpm", "+Inf", "is not a finite number"},
		{".rate_limit_rpm", "\n", "empty"},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s=%q", c.file, c.content), func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "OLD.key", "old")
			write(t, dir, "OLD.dc", "02")
			write(t, dir, "OLD.rate_limit_rpm", "100")
			write(t, dir, "NEIGHBOUR.key", "n")
			write(t, dir, "NEW.key", "new")
			write(t, dir, "NEW"+c.file, c.content)
			rec := newRecorder()
			r := mustOpen(t, options(dir, rec, nil))
			if got := r.IDs(); !slices.Equal(got, []string{"NEIGHBOUR", "OLD"}) {
				t.Fatalf("IDs = %v: a workspace with a bad file is in", got)
			}
			write(t, dir, "OLD"+c.file, c.content)
			r.poll() // sees the change
			r.poll() // reads it
			w, ok := r.Lookup("OLD")
			if !ok || w.DC != "02" || w.RateLimitRPM != 100 || w.Key() != "old" {
				t.Fatalf("OLD = %v, %v; want its last good values", w, ok)
			}
			if _, ok := r.Lookup("NEIGHBOUR"); !ok {
				t.Fatal("the neighbour is gone")
			}
			ps := r.Problems()
			if len(ps) != 2 {
				t.Fatalf("Problems = %v, want NEW's and OLD's", ps)
			}
			for i, id := range []string{"NEW", "OLD"} {
				msg := ps[i].Err.Error()
				if ps[i].File != id+c.file || ps[i].ID != id || !strings.Contains(msg, id+c.file) || !strings.Contains(msg, c.want) {
					t.Errorf("problem %d = %+v, want one naming %s%s and %q", i, ps[i], id, c.file, c.want)
				}
			}
			noKeyIn(t, fmt.Sprint(ps), "a-key-pasted-here-by-mistake")
		})
	}
}

// TestUnreadableDirKeepsWorkspaces takes the directory away after Open:
// every workspace stays, the directory is a problem until it is back.
func TestUnreadableDirKeepsWorkspaces(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ws")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	write(t, dir, "A.key", "a1")
	rec := newRecorder()
	r := mustOpen(t, options(dir, rec, nil))
	<-rec.changed
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		r.poll()
	}
	wantKey(t, r, "A", "a1")
	ps := r.Problems()
	if len(ps) != 1 || ps[0].File != "" || !errors.Is(ps[0].Err, os.ErrNotExist) || !strings.Contains(ps[0].Err.Error(), "keeping the last good workspaces") {
		t.Fatalf("Problems = %v", ps)
	}
	if len(rec.updates) != 1 || len(rec.problems) != 1 {
		t.Fatalf("updates %v, problems %v; want no update, one problem", rec.updates, rec.problems)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	r.poll()
	if ps := r.Problems(); len(ps) != 0 {
		t.Fatalf("Problems after the directory is back = %v", ps)
	}
	wantKey(t, r, "A", "a1")
}

func TestWorkspaceHidesKey(t *testing.T) {
	w := Workspace{ID: "A", DC: "01", RateLimitRPM: 300, key: "s3cr3t-key"}
	var b strings.Builder
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		fmt.Fprintf(&b, verb+"\n", w)
		fmt.Fprintf(&b, verb+"\n", []Workspace{w})
	}
	slog.New(slog.NewJSONHandler(&b, nil)).Info("x", "w", w)
	slog.New(slog.NewTextHandler(&b, nil)).Info("x", "w", w)
	noKeyIn(t, b.String(), "s3cr3t-key", "73336372337")
	if !strings.Contains(b.String(), "workspace A") || w.Key() != "s3cr3t-key" {
		t.Fatalf("output %q, Key %q", b.String(), w.Key())
	}
}

func TestWhatString(t *testing.T) {
	for w, want := range map[What]string{0: "none", Added: "added", Removed: "removed",
		KeyRotated | DCChanged | LimitsChanged: "key_rotated+dc_changed+limits_changed"} {
		if got := w.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", w, got, want)
		}
	}
}

// runWithA1 opens and runs a registry on a new directory holding A.key
// ("a1"), once its first generation is announced. Call stop at the end.
func runWithA1(t *testing.T) (dir string, rec *recorder, r *Registry, stop func()) {
	t.Helper()
	dir = t.TempDir()
	write(t, dir, "A.key", "a1")
	rec = newRecorder()
	r = mustOpen(t, options(dir, rec, nil))
	<-rec.changed
	return dir, rec, r, run(t, r)
}
