package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

func TestHelpListsEveryVariable(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--help"}, func(string) string { return "" }, nil, &out, &errOut); code != 0 {
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
	env := map[string]string{"KAFKA_BROKERS": "b:9092", "KAFKA_GROUP_ID": "g", "MOENGAGE_DC": "01", "MOENGAGE_DATA_API_KEY": "k-abcdef-secret"}
	code := run(nil, func(k string) string { return env[k] }, nil, &out, &errOut)
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
	if code := run([]string{"--batch-window=soon"}, func(k string) string { return env[k] }, nil, &out, &errOut); code != 2 {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(errOut.String(), "BATCH_WINDOW") {
		t.Fatalf("error %q does not name BATCH_WINDOW", errOut.String())
	}
}

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"--version"}, func(string) string { return "" }, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), version) {
		t.Fatalf("exit %d, %q", code, out.String())
	}
}

func TestVersionAnywhere(t *testing.T) {
	for _, args := range [][]string{
		{"--version"}, {"-version"}, {"version"},
		{"--kafka-brokers=k:9092", "--version"},
		{"check", "--output=json", "--version"},
		{"dlq", "replay", "--dry-run", "-version"},
	} {
		var out, errOut bytes.Buffer
		if code := run(args, func(string) string { return "" }, nil, &out, &errOut); code != 0 || out.String() != "cohortsync-worker "+version+"\n" {
			t.Errorf("%q: exit %d, stdout %q, stderr %q", args, code, out.String(), errOut.String())
		}
	}
	// After "--" it is not a flag, and "version" is a subcommand only first.
	for _, args := range [][]string{{"--", "--version"}, {"--kafka-brokers=k:9092", "version"}} {
		var out, errOut bytes.Buffer
		if code := run(args, func(string) string { return "" }, nil, &out, &errOut); code == 0 {
			t.Errorf("%q: exit 0, stdout %q", args, out.String())
		}
	}
}

// TestLogDurationsAreHuman: durations, also inside the start-up config
// group, are logged as "30s", never as nanoseconds.
func TestLogDurationsAreHuman(t *testing.T) {
	cfg, err := config.Load(nil, func(k string) string {
		return map[string]string{"KAFKA_BROKERS": "b:9092", "KAFKA_GROUP_ID": "g", "MOENGAGE_DC": "01",
			"MOENGAGE_WORKSPACE_ID": "w", "MOENGAGE_DATA_API_KEY": "k"}[k]
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"json", "text"} {
		var b bytes.Buffer
		log := newLogger(&b, slog.LevelInfo, format)
		log.Info("starting", "config", cfg, "delay", 1500*time.Millisecond)
		got := b.String()
		for _, want := range []string{"1.5s", "30s", "500ms", "1m0s"} {
			if !strings.Contains(got, want) {
				t.Errorf("%s: %q missing in %s", format, want, got)
			}
		}
		if strings.Contains(got, "30000000000") || strings.Contains(got, "1500000000") {
			t.Errorf("%s: nanoseconds in %s", format, got)
		}
	}
}

func TestCheckHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"check", "--help"}, func(string) string { return "" }, nil, &out, &errOut); code != 0 ||
		!strings.Contains(out.String(), "cohortsync-worker check") {
		t.Fatalf("exit %d: %q %q", code, out.String(), errOut.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, func(string) string { return "" }, nil, &out, &errOut); code != 0 || !strings.Contains(out.String(), "  check\n") {
		t.Fatalf("worker --help does not list check: %q", out.String())
	}
}

// TestCheckBadConfig: an invalid variable is exit 2, reported as the
// config check, with the other checks skipped and nothing dialled.
func TestCheckBadConfig(t *testing.T) {
	env := map[string]string{"MOENGAGE_WORKSPACE_ID": "w", "MOENGAGE_DATA_API_KEY": "k-abcdef-secret", "BATCH_WINDOW": "soon"}
	var out, errOut bytes.Buffer
	code := run([]string{"check"}, func(k string) string { return env[k] }, nil, &out, &errOut)
	if code != 2 {
		t.Fatalf("exit %d, want 2: %s %s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "FAIL  config  config: BATCH_WINDOW") || !strings.Contains(out.String(), "skip  kafka") {
		t.Fatalf("report:\n%s", out.String())
	}
	if strings.Contains(out.String(), "k-abcdef-secret") {
		t.Fatal("the key was printed")
	}
}

// TestCheckOffline: `check --offline` reaches preflight through the
// command line and needs no network: the brokers and API named here do not
// exist, and it passes.
func TestCheckOffline(t *testing.T) {
	env := map[string]string{"KAFKA_BROKERS": "kafka.invalid:9092", "KAFKA_GROUP_ID": "g", "MOENGAGE_DC": "02",
		"MOENGAGE_WORKSPACE_ID": "w", "MOENGAGE_DATA_API_KEY": "k-abcdef-secret"}
	var out, errOut bytes.Buffer
	code := run([]string{"check", "--offline"}, func(k string) string { return env[k] }, nil, &out, &errOut)
	if code != 0 || !strings.Contains(out.String(), "ok    config") || !strings.Contains(out.String(), "skip  api") {
		t.Fatalf("exit %d:\n%s%s", code, out.String(), errOut.String())
	}
}
