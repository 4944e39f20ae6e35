package config_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// TestVarsCoverDesign: every DESIGN.md variable and *_FILE variant is in
// Vars, in the DESIGN.md order, with its kebab-case flag, and nothing else
// is.
func TestVarsCoverDesign(t *testing.T) {
	var envs []string
	for _, v := range config.Vars {
		envs = append(envs, v.Env)
		if want := strings.ToLower(strings.ReplaceAll(v.Env, "_", "-")); v.Flag != want {
			t.Errorf("%s: flag %q, want %q", v.Env, v.Flag, want)
		}
		if v.Help == "" {
			t.Errorf("%s has no help", v.Env)
		}
	}
	var withoutFiles []string
	for _, e := range envs {
		if !slices.Contains(fileVars, e) {
			withoutFiles = append(withoutFiles, e)
		}
	}
	if !slices.Equal(withoutFiles, designVars) {
		t.Errorf("Vars (without *_FILE) = %v\nDESIGN.md         = %v", withoutFiles, designVars)
	}
	for _, f := range fileVars {
		i := slices.Index(envs, f)
		if i < 1 || envs[i-1] != strings.TrimSuffix(f, "_FILE") {
			t.Errorf("%s must follow %s in Vars", f, strings.TrimSuffix(f, "_FILE"))
		}
	}
	secret := map[string]bool{"KAFKA_SASL_PASSWORD": true, "KAFKA_SASL_PASSWORD_FILE": true,
		"MOENGAGE_DATA_API_KEY": true, "MOENGAGE_DATA_API_KEY_FILE": true}
	for _, v := range config.Vars {
		if v.Secret != secret[v.Env] {
			t.Errorf("%s: Secret = %v", v.Env, v.Secret)
		}
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var b strings.Builder
	config.Usage(&b)
	out := b.String()
	for _, env := range append(slices.Clone(designVars), fileVars...) {
		if !strings.Contains(out, "("+env) {
			t.Errorf("usage does not list %s", env)
		}
	}
	for _, v := range config.Vars {
		if !strings.Contains(out, "--"+v.Flag+"  (") || !strings.Contains(out, v.Help) {
			t.Errorf("usage does not list --%s with its help", v.Flag)
		}
		if v.Default != "" && !strings.Contains(out, "(default: "+v.Default+")") {
			t.Errorf("usage does not show the default of %s", v.Env)
		}
	}
}

func TestMarkdownTable(t *testing.T) {
	lines := strings.Split(strings.TrimSuffix(config.MarkdownTable(), "\n"), "\n")
	if len(lines) != 2+len(config.Vars) || lines[0] != "| variable | flag | default | meaning |" {
		t.Fatalf("table:\n%s", strings.Join(lines, "\n"))
	}
	for i, v := range config.Vars {
		row := lines[2+i]
		if !strings.HasPrefix(row, "| `"+v.Env+"` | `--"+v.Flag+"` | ") || strings.Count(row, " | ") != 3 {
			t.Errorf("row %d: %s", i, row)
		}
		if v.Default == "" && !strings.Contains(row, " | — | ") {
			t.Errorf("row %d: no default must show as —: %s", i, row)
		}
	}
}

// TestDocTablesMatchCode keeps the configuration tables of the README and
// of DESIGN.md equal to MarkdownTable. UPDATE_README=1 rewrites them.
func TestDocTablesMatchCode(t *testing.T) {
	for _, doc := range []string{"../../README.md", "../../DESIGN.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		const start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
		s := string(b)
		i, j := strings.Index(s, start), strings.Index(s, end)
		if i < 0 || j < i {
			t.Fatalf("%s has no config-table markers", doc)
		}
		if got, want := s[i+len(start):j], config.MarkdownTable(); got != want {
			if os.Getenv("UPDATE_README") != "" {
				if err := os.WriteFile(doc, []byte(s[:i+len(start)]+want+s[j:]), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			t.Errorf("%s configuration table is stale; run UPDATE_README=1 go test ./internal/config/\nwant:\n%s", doc, want)
		}
	}
}
