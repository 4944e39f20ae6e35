package workspace_test

import (
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/workspace"
)

// TestOneOfDataCenters checks the validator the worker builds from
// MOENGAGE_DC's list accepts exactly that list.
func TestOneOfDataCenters(t *testing.T) {
	valid := workspace.OneOf(config.DataCenters)
	for _, dc := range config.DataCenters {
		if err := valid(dc); err != nil {
			t.Errorf("%s: %v", dc, err)
		}
	}
	for _, dc := range []string{"", "1", "07", "100", "us"} {
		if err := valid(dc); err == nil || !strings.Contains(err.Error(), "is not one of "+strings.Join(config.DataCenters, ", ")) {
			t.Errorf("%q: error %v", dc, err)
		}
	}
}
