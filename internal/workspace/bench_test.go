package workspace

import (
	"fmt"
	"testing"
)

const benchWorkspaces = 1000

// payload returns the files of n workspaces: each has a key, a data center
// and a budget (3 files each), the key of version v.
func payload(n, v int) map[string]string {
	p := make(map[string]string, 3*n)
	for i := range n {
		id := fmt.Sprintf("WS%022d", i) // 24 characters, like a MoEngage ID
		p[id+".key"] = fmt.Sprintf("key-%d-%032d\n", v, i)
		p[id+".dc"] = "0" + fmt.Sprint(1+i%6)
		p[id+".rate_limit_rpm"] = "300"
	}
	return p
}

func plainDir(b *testing.B) string {
	dir := b.TempDir()
	for name, content := range payload(benchWorkspaces, 0) {
		write(b, dir, name, content)
	}
	return dir
}

func kubeletDir(b *testing.B) (string, *kubelet) {
	dir := b.TempDir()
	k := &kubelet{t: b, dir: dir}
	k.publish(payload(benchWorkspaces, 0))
	return dir, k
}

// BenchmarkReload is a full load of 1,000 workspaces (3,000 files): Open,
// or a poll that finds a new version the kubelet published.
func BenchmarkReload(b *testing.B) {
	b.Run("open/plain", func(b *testing.B) {
		o := options(plainDir(b), nil, nil)
		b.ReportAllocs()
		for b.Loop() {
			if r := mustOpen(b, o); r.Snapshot().Len() != benchWorkspaces {
				b.Fatal(r.IDs())
			}
		}
	})
	b.Run("open/kubelet", func(b *testing.B) {
		dir, _ := kubeletDir(b)
		o := options(dir, nil, nil)
		b.ReportAllocs()
		for b.Loop() {
			if r := mustOpen(b, o); r.Snapshot().Len() != benchWorkspaces {
				b.Fatal(r.IDs())
			}
		}
	})
	b.Run("swap/kubelet", func(b *testing.B) {
		dir, k := kubeletDir(b)
		r := mustOpen(b, options(dir, nil, nil))
		b.ReportAllocs()
		v := 0
		for b.Loop() {
			b.StopTimer()
			v++
			k.publish(payload(benchWorkspaces, v)) // every key rotated
			gen := r.Generation()
			b.StartTimer()
			r.poll()
			if r.Generation() != gen+1 {
				b.Fatal("no new generation")
			}
		}
	})
}

// BenchmarkPollNoChange is one poll of 1,000 unchanged workspaces.
func BenchmarkPollNoChange(b *testing.B) {
	b.Run("plain", func(b *testing.B) {
		r := mustOpen(b, options(plainDir(b), nil, nil))
		r.poll() // the confirmation reads
		b.ReportAllocs()
		for b.Loop() {
			r.poll()
		}
		if r.Generation() != 1 {
			b.Fatal("a change")
		}
	})
	b.Run("kubelet", func(b *testing.B) {
		dir, _ := kubeletDir(b)
		r := mustOpen(b, options(dir, nil, nil))
		b.ReportAllocs()
		for b.Loop() {
			r.poll()
		}
		if r.Generation() != 1 {
			b.Fatal("a change")
		}
	})
}

// BenchmarkKeyFunc is the sink's per-request key lookup.
func BenchmarkKeyFunc(b *testing.B) {
	dir, _ := kubeletDir(b)
	r := mustOpen(b, options(dir, nil, nil))
	key := r.KeyFunc(fmt.Sprintf("WS%022d", 500))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := key(); err != nil {
			b.Fatal(err)
		}
	}
}
