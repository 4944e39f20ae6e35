package replay

import (
	"os/exec"
	"strings"
	"testing"
)

// TestToolsDoNotImportTheWorker (issue 20): the tools (dlq replay, check)
// reach the dead-letter format through internal/deadletter and the cluster
// through internal/kafkaconn, not through the worker's consumer or its
// wiring (internal/app).
func TestToolsDoNotImportTheWorker(t *testing.T) {
	const mod = "github.com/cohortsync/cohortsync-worker/"
	out, err := exec.Command("go", "list", "-deps", mod+"internal/replay", mod+"internal/preflight").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if p == mod+"consumer" || p == mod+"internal/app" {
			t.Errorf("internal/replay or internal/preflight imports %s", p)
		}
	}
}
