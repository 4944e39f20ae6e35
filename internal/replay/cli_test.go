package replay

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// runMain runs Main with env over the variables that have no default
// (KAFKA_BROKERS, KAFKA_GROUP_ID); an empty value in env unsets one.
func runMain(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	base := map[string]string{"KAFKA_BROKERS": "127.0.0.1:1", "KAFKA_GROUP_ID": "cohortsync-worker"}
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return base[k]
	}
	code = Main(ctx, args, getenv, &out, &errOut)
	return code, out.String(), errOut.String()
}

func TestHelpListsTheFlags(t *testing.T) {
	code, out, _ := runMain(t, nil, "replay", "--help")
	if code != ExitOK {
		t.Fatalf("exit %d", code)
	}
	for _, f := range []string{"--dry-run", "--reason", "--to-topic", "--limit", "--from-offset", "--since", "--group"} {
		if !strings.Contains(out, "  "+f+"\n") && !strings.Contains(out, "  "+f+" <") {
			t.Errorf("--help does not list %s:\n%s", f, out)
		}
	}
	for _, v := range kafkaVars() {
		if !strings.Contains(out, "--"+v.Flag+"  ("+v.Env+")") {
			t.Errorf("--help does not list --%s (%s)", v.Flag, v.Env)
		}
	}
	if strings.Contains(out, "MOENGAGE") || strings.Contains(out, "--batch-") {
		t.Error("--help lists settings the replay does not read")
	}
	for _, r := range []string{"forbidden_character", "api_rejected"} {
		if !strings.Contains(out, r) {
			t.Errorf("--help does not name the reason %s", r)
		}
	}
	if code, out, _ := runMain(t, nil, "--help"); code != ExitOK || !strings.Contains(out, "replay") {
		t.Errorf("dlq --help: exit %d, %q", code, out)
	}
}

func TestBadUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "subcommand"},
		{[]string{"purge"}, nil, `unknown subcommand "purge"`},
		{[]string{"replay", "--since", "yesterday"}, nil, "RFC 3339"},
		{[]string{"replay", "--reason", "forbidden_character,bogus"}, nil, `unknown reason "bogus"`},
		{[]string{"replay", "--limit", "-1"}, nil, "--limit"},
		{[]string{"replay", "--limit", "ten"}, nil, "limit"},
		{[]string{"replay", "--from-offset", "-3"}, nil, "from-offset"},
		{[]string{"replay", "--from-offset", "3", "--since", "2026-11-28T10:00:00Z"}, nil, "exclusive"},
		{[]string{"replay", "--group", "cohortsync-worker"}, nil, "KAFKA_GROUP_ID"},
		{[]string{"replay", "--group", "workers"}, map[string]string{"KAFKA_GROUP_ID": "workers"}, "KAFKA_GROUP_ID"},
		{[]string{"replay", "--to-topic", "cohort-membership-changes.dlq"}, nil, "dead-letter topic"},
		{[]string{"replay", "--to-topic", "t.dlq"}, map[string]string{"KAFKA_TOPIC": "t"}, "dead-letter topic"},
		{[]string{"replay", "--kafka-sasl-mechanism", "GSSAPI"}, nil, "KAFKA_SASL_MECHANISM"},
		{[]string{"replay"}, map[string]string{"KAFKA_TLS": "maybe"}, "KAFKA_TLS"},
		{[]string{"replay", "--kafka-tls=maybe"}, nil, "KAFKA_TLS"},
		{[]string{"replay", "--kafka-tls-ca-file", "/nonexistent/ca.pem"}, nil, "KAFKA_TLS_CA_FILE"},
		{[]string{"replay", "--kafka-sasl-mechanism", "PLAIN", "--kafka-sasl-username", "u"}, nil, "KAFKA_SASL_PASSWORD"},
		{[]string{"replay", "--batch-window", "1s"}, nil, "batch-window"},
		{[]string{"replay", "now"}, nil, `unexpected argument "now"`},
		{[]string{"replay"}, map[string]string{"KAFKA_GROUP_ID": ""}, "KAFKA_GROUP_ID: required"}, // issue 19: no default group
		{[]string{"replay"}, map[string]string{"KAFKA_BROKERS": ""}, "KAFKA_BROKERS: required"},
	} {
		code, out, errOut := runMain(t, tc.env, tc.args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", tc.args, code, ExitUsage, errOut)
			continue
		}
		msg := strings.TrimSpace(errOut)
		if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, tc.want) {
			t.Errorf("%v: want one line containing %q, got %q", tc.args, tc.want, msg)
		}
		if out != "" {
			t.Errorf("%v: wrote %q to stdout", tc.args, out)
		}
	}
}

// TestOnlyKafkaSettingsMatter: missing or broken MoEngage settings do not
// stop the replay; it fails later, at runtime, on the unreachable broker
// (exit 1), and never prints the SASL password.
func TestOnlyKafkaSettingsMatter(t *testing.T) {
	env := map[string]string{
		"KAFKA_BROKERS":              "127.0.0.1:1",
		"KAFKA_SASL_MECHANISM":       "PLAIN",
		"KAFKA_SASL_USERNAME":        "u",
		"KAFKA_SASL_PASSWORD":        "pw-7e1f0c",
		"MOENGAGE_DC":                "bogus",
		"MOENGAGE_DATA_API_KEY_FILE": "/nonexistent/key",
		"BATCH_WINDOW":               "soon",
	}
	code, out, errOut := runMain(t, env, "replay", "--dry-run")
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d: %s", code, ExitFailure, errOut)
	}
	if strings.Contains(errOut, "MOENGAGE") || strings.Contains(errOut, "BATCH_WINDOW") {
		t.Errorf("stderr names a setting the replay does not use: %s", errOut)
	}
	if strings.Contains(out+errOut, "pw-7e1f0c") {
		t.Error("the SASL password was printed")
	}
	if strings.TrimSpace(out) != "read=0 replayed=0 skipped=0" {
		t.Errorf("stdout %q, want the summary line", out)
	}
	if !strings.Contains(errOut, "cohort-membership-changes.dlq with group cohortsync-worker-dlq-replay") {
		t.Errorf("stderr does not name the default topic and group: %s", errOut)
	}
}

// TestBooleanKafkaFlag: --kafka-tls takes no value, as for the worker.
func TestBooleanKafkaFlag(t *testing.T) {
	code, _, errOut := runMain(t, map[string]string{"KAFKA_BROKERS": "127.0.0.1:1"}, "replay", "--kafka-tls", "--dry-run")
	if code != ExitFailure {
		t.Fatalf("exit %d, want %d (a runtime failure on the unreachable broker): %s", code, ExitFailure, errOut)
	}
}
