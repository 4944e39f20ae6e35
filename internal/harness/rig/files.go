package rig

import (
	"os"
	"path/filepath"
	"testing"
)

// Dir writes files (name → content) into a new temporary directory of tb
// (mode 0600: they may be keys) and returns it; a flat directory such as
// MOENGAGE_WORKSPACES_DIR.
func Dir(tb testing.TB, files map[string]string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}
