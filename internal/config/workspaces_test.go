package config_test

import (
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// TestWorkspacesDir (issue 21): with MOENGAGE_WORKSPACES_DIR the default
// workspace and its key become optional; without it both stay required; a
// key without a default workspace is refused (whose key would it be?).
func TestWorkspacesDir(t *testing.T) {
	dir := t.TempDir()
	noWS := func(over map[string]string) map[string]string {
		e := with(required(), over)
		for k, v := range over {
			if v == "" {
				delete(e, k)
			}
		}
		return e
	}
	for _, tc := range []struct {
		name    string
		env     map[string]string
		wantErr string // "" valid; else a substring, and the error must name it
	}{
		{"registry alone", noWS(map[string]string{"MOENGAGE_WORKSPACES_DIR": dir, "MOENGAGE_WORKSPACE_ID": "", "MOENGAGE_DATA_API_KEY": ""}), ""},
		{"registry and a default keyed there", noWS(map[string]string{"MOENGAGE_WORKSPACES_DIR": dir, "MOENGAGE_DATA_API_KEY": ""}), ""},
		{"registry and a default with its own key", noWS(map[string]string{"MOENGAGE_WORKSPACES_DIR": dir}), ""},
		{"no registry, no default", noWS(map[string]string{"MOENGAGE_WORKSPACE_ID": ""}), "MOENGAGE_WORKSPACE_ID"},
		{"no registry, a default without key", noWS(map[string]string{"MOENGAGE_DATA_API_KEY": ""}), "MOENGAGE_DATA_API_KEY"},
		{"registry and a key without a default", noWS(map[string]string{"MOENGAGE_WORKSPACES_DIR": dir, "MOENGAGE_WORKSPACE_ID": ""}), "MOENGAGE_DATA_API_KEY"},
		{"registry that is a file", noWS(map[string]string{"MOENGAGE_WORKSPACES_DIR": writeFile(t, "ws.key", "k")}), "MOENGAGE_WORKSPACES_DIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(nil, getenv(tc.env), nil)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.MoEngageWorkspacesDir != dir || c.MoEngageWorkspaceID != tc.env["MOENGAGE_WORKSPACE_ID"] {
					t.Errorf("loaded dir %q, workspace %q", c.MoEngageWorkspacesDir, c.MoEngageWorkspaceID)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.HasPrefix(err.Error(), "config: "+tc.wantErr+":") {
				t.Errorf("error %q does not start with config: %s", err, tc.wantErr)
			}
			checkErr(t, err.Error(), tc.wantErr)
		})
	}
}

// TestBaseURLOverride: MOENGAGE_BASE_URL overrides the registry's data
// centers only when it is not MOENGAGE_DC's own URL (which Validate derives
// when it is unset, so a loaded configuration always has one).
func TestBaseURLOverride(t *testing.T) {
	for _, tc := range []struct{ dc, url, want string }{
		{"01", "", ""},
		{"01", "https://api-01.moengage.com/", ""},
		{"01", "http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"", "http://127.0.0.1:8080/", "http://127.0.0.1:8080"},
	} {
		c, err := config.Load(nil, getenv(with(required(), map[string]string{"MOENGAGE_DC": tc.dc, "MOENGAGE_BASE_URL": tc.url})), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.BaseURLOverride(); got != tc.want {
			t.Errorf("MOENGAGE_DC %q, MOENGAGE_BASE_URL %q: override %q, want %q", tc.dc, tc.url, got, tc.want)
		}
	}
}
