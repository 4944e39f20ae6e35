package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

func TestHelpListsEveryVariable(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, &out, &errOut); code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	for _, v := range config.Vars {
		if !strings.Contains(out.String(), v.Env) || !strings.Contains(out.String(), "--"+v.Flag) {
			t.Errorf("--help does not list %s (--%s)", v.Env, v.Flag)
		}
		if !v.Secret && v.Default != "" && !strings.Contains(out.String(), v.Default) {
			t.Errorf("--help does not show the default %q of %s", v.Default, v.Env)
		}
	}
}

func TestMissingWorkspaceFailsAtOnce(t *testing.T) {
	var out, errOut bytes.Buffer
	env := map[string]string{"MOENGAGE_DATA_API_KEY": "k-abcdef-secret"}
	code := run(nil, func(k string) string { return env[k] }, &out, &errOut)
	if code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	msg := strings.TrimSpace(errOut.String())
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "MOENGAGE_WORKSPACE_ID") {
		t.Fatalf("want one line naming MOENGAGE_WORKSPACE_ID, got %q", msg)
	}
	if strings.Contains(msg, "k-abcdef-secret") {
		t.Fatal("the key was printed")
	}
}

func TestInvalidFlag(t *testing.T) {
	var out, errOut bytes.Buffer
	env := map[string]string{"MOENGAGE_WORKSPACE_ID": "w", "MOENGAGE_DATA_API_KEY": "k"}
	if code := run([]string{"--batch-window=soon"}, func(k string) string { return env[k] }, &out, &errOut); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(errOut.String(), "BATCH_WINDOW") {
		t.Fatalf("error %q does not name BATCH_WINDOW", errOut.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, func(string) string { return "" }, &out, &errOut); code != 0 || !strings.Contains(out.String(), version) {
		t.Fatalf("exit %d, %q", code, out.String())
	}
}
