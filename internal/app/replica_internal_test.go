package app

import (
	"regexp"
	"testing"
)

// TestReplicaIDUniqueWithSameHostAndPid: names drawn for one hostname and
// one pid (containers on the host network, pid 1) differ, and keep host
// and pid readable in front.
func TestReplicaIDUniqueWithSameHostAndPid(t *testing.T) {
	seen := map[string]bool{}
	form := regexp.MustCompile(`^vm-1-[0-9a-f]{16}$`)
	for range 1000 {
		id := newReplicaID("vm", 1)
		if !form.MatchString(id) {
			t.Fatalf("replica name %q is not vm-1-<16 hex digits>", id)
		}
		if seen[id] {
			t.Fatalf("replica name %q drawn twice", id)
		}
		seen[id] = true
	}
	if id := newReplicaID("", 7); !regexp.MustCompile(`^replica-7-[0-9a-f]{16}$`).MatchString(id) {
		t.Errorf("without a hostname: %q", id)
	}
}
