package memlimit

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// tree writes files (path relative to the root → contents) under a fresh
// directory and returns it.
func tree(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

func TestFromCgroup(t *testing.T) {
	cases := []struct {
		name   string
		files  map[string]string
		proc   string
		want   int64
		wantOK bool
	}{
		{"v2 container (namespaced: path /)", map[string]string{"memory.max": "536870912\n"}, "0::/\n", 512 << 20, true},
		{"v2 no limit", map[string]string{"memory.max": "max\n"}, "0::/\n", 0, false},
		{"v2 nested, parent smaller", map[string]string{
			"kubepods/memory.max":         "268435456\n",
			"kubepods/pod1/memory.max":    "max\n",
			"kubepods/pod1/c1/memory.max": "1073741824\n",
		}, "0::/kubepods/pod1/c1\n", 256 << 20, true},
		{"v2 path not mounted here: falls back to the parents", map[string]string{"memory.max": "104857600"}, "0::/elsewhere/c1\n", 100 << 20, true},
		{"v1", map[string]string{"memory/docker/abc/memory.limit_in_bytes": "402653184\n",
			"memory/memory.limit_in_bytes": "9223372036854771712\n"},
			"12:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n1:name=systemd:/docker/abc\n", 384 << 20, true},
		{"v1 unlimited", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, "4:memory:/\n", 0, false},
		{"hybrid: v1 unlimited, v2 under unified limited", map[string]string{
			"memory/memory.limit_in_bytes": "9223372036854771712\n",
			"unified/svc/memory.max":       "209715200\n",
		}, "4:memory:/\n0::/svc\n", 200 << 20, true},
		{"no cgroup files", nil, "0::/\n", 0, false},
		{"garbage", map[string]string{"memory.max": "lots"}, "0::/\n", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := FromCgroup(tree(t, c.files), []byte(c.proc))
			if got != c.want || ok != c.wantOK {
				t.Fatalf("FromCgroup = %d, %v; want %d, %v", got, ok, c.want, c.wantOK)
			}
		})
	}
}

func TestApply(t *testing.T) {
	root := tree(t, map[string]string{"memory.max": "1000000000\n"})
	proc := func() ([]byte, error) { return []byte("0::/\n"), nil }
	var set []int64
	setter := func(n int64) int64 {
		set = append(set, n)
		return 777 // what the runtime holds (GOMEMLIMIT's value)
	}

	r, err := Apply(func(string) string { return "" }, root, proc, setter)
	if err != nil || r.Source != "cgroup" || r.Cgroup != 1e9 || r.Limit != 9e8 || len(set) != 1 || set[0] != 9e8 {
		t.Fatalf("from the cgroup: %+v, %v, set %v", r, err, set)
	}

	set = nil
	env := func(k string) string {
		if k == "GOMEMLIMIT" {
			return "300MiB"
		}
		return ""
	}
	r, err = Apply(env, root, proc, setter)
	if err != nil || r.Source != "GOMEMLIMIT" || r.Limit != 777 || len(set) != 1 || set[0] != -1 {
		t.Fatalf("explicit GOMEMLIMIT must win (only read, never set): %+v, %v, set %v", r, err, set)
	}

	set = nil
	r, err = Apply(func(string) string { return "" }, root,
		func() ([]byte, error) { return nil, os.ErrNotExist }, setter)
	if err != nil || r.Source != "none" || len(set) != 0 {
		t.Fatalf("no /proc: %+v, %v, set %v", r, err, set)
	}
	_, err = Apply(func(string) string { return "" }, root,
		func() ([]byte, error) { return nil, errors.New("EACCES") }, setter)
	if err == nil {
		t.Fatal("an unreadable /proc/self/cgroup must be reported")
	}
}
