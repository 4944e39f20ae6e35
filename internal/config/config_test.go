package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// designVars is the configuration table of DESIGN.md: a contract.
var designVars = []string{"KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID", "KAFKA_DLQ_TOPIC", "KAFKA_TLS",
	"KAFKA_TLS_CA_FILE", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "MOENGAGE_DC",
	"MOENGAGE_BASE_URL", "MOENGAGE_WORKSPACE_ID", "MOENGAGE_DATA_API_KEY", "COHORTSYNC_PARTNER", "BATCH_MAX_BYTES",
	"BATCH_MAX_MEMBERS", "BATCH_WINDOW", "RATE_LIMIT_RPM", "MAX_IN_FLIGHT", "MAX_PENDING_MEMBERS",
	"RETRY_INITIAL_INTERVAL", "RETRY_MAX_INTERVAL", "RETRY_MAX_ELAPSED", "HTTP_ADDR", "SHUTDOWN_TIMEOUT",
	"LOG_LEVEL", "LOG_FORMAT"}

const secretValue = "s3cr3t-VALUE-never-printed"

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func required() map[string]string {
	return map[string]string{"MOENGAGE_WORKSPACE_ID": "ws", "MOENGAGE_DATA_API_KEY": secretValue}
}

func TestDefaults(t *testing.T) {
	c, err := config.Load(nil, env(required()), nil)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name      string
		got, want any
	}{
		{"KAFKA_BROKERS", strings.Join(c.KafkaBrokers, ","), "localhost:9092"},
		{"KAFKA_TOPIC", strings.Join(c.KafkaTopics, ","), "cohort-membership-changes"},
		{"KAFKA_GROUP_ID", c.KafkaGroupID, "cohortsync-worker"},
		{"KAFKA_DLQ_TOPIC", c.KafkaDLQTopic, "cohort-membership-changes.dlq"},
		{"KAFKA_TLS", c.KafkaTLS, false},
		{"MOENGAGE_DC", c.MoEngageDC, "01"},
		{"MOENGAGE_BASE_URL", c.MoEngageBaseURL, "https://api-01.moengage.com"},
		{"BATCH_MAX_BYTES", c.BatchMaxBytes, 128000},
		{"BATCH_MAX_MEMBERS", c.BatchMaxMembers, 0},
		{"BATCH_WINDOW", c.BatchWindow, 5 * time.Second},
		{"RATE_LIMIT_RPM", c.RateLimitRPM, 300.0},
		{"MAX_IN_FLIGHT", c.MaxInFlight, 4},
		{"MAX_PENDING_MEMBERS", c.MaxPendingMembers, 1000000},
		{"RETRY_INITIAL_INTERVAL", c.RetryInitialInterval, 500 * time.Millisecond},
		{"RETRY_MAX_INTERVAL", c.RetryMaxInterval, 60 * time.Second},
		{"RETRY_MAX_ELAPSED", c.RetryMaxElapsed, time.Duration(0)},
		{"HTTP_ADDR", c.HTTPAddr, ":9090"},
		{"SHUTDOWN_TIMEOUT", c.ShutdownTimeout, 30 * time.Second},
		{"LOG_LEVEL", c.LogLevel, slog.LevelInfo},
		{"LOG_FORMAT", c.LogFormat, "json"},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s default = %v, want %v", ck.name, ck.got, ck.want)
		}
	}
}

func TestEnvAndFlags(t *testing.T) {
	e := required()
	e["KAFKA_BROKERS"] = "a:1, b:2"
	e["KAFKA_TOPIC"] = "t1,t2"
	e["BATCH_WINDOW"] = "2s"
	e["MOENGAGE_DC"] = "101"
	e["KAFKA_SASL_MECHANISM"] = "scram-sha-512"
	e["KAFKA_SASL_USERNAME"] = "u"
	e["KAFKA_SASL_PASSWORD"] = secretValue
	e["LOG_LEVEL"] = "debug"
	c, err := config.Load([]string{"--batch-window", "3s", "--max-in-flight=7"}, env(e), nil)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(c.KafkaBrokers) != "[a:1 b:2]" || fmt.Sprint(c.KafkaTopics) != "[t1 t2]" || c.KafkaDLQTopic != "t1.dlq" {
		t.Fatalf("lists: %v %v %s", c.KafkaBrokers, c.KafkaTopics, c.KafkaDLQTopic)
	}
	if c.BatchWindow != 3*time.Second || c.MaxInFlight != 7 {
		t.Fatal("flags must override the environment")
	}
	if c.MoEngageBaseURL != "https://api-101.moengage.com" {
		t.Fatalf("DC 101 URL %s", c.MoEngageBaseURL)
	}
	if c.KafkaSASLMechanism != "SCRAM-SHA-512" || c.KafkaSASLPassword.Reveal() != secretValue || c.LogLevel != slog.LevelDebug {
		t.Fatalf("%+v", c)
	}
}

func TestInvalid(t *testing.T) {
	cases := map[string]map[string]string{
		"MOENGAGE_WORKSPACE_ID":  {"MOENGAGE_WORKSPACE_ID": ""},
		"MOENGAGE_DATA_API_KEY":  {"MOENGAGE_DATA_API_KEY": ""},
		"BATCH_WINDOW":           {"BATCH_WINDOW": "5x"},
		"BATCH_MAX_BYTES":        {"BATCH_MAX_BYTES": "200000"},
		"BATCH_MAX_MEMBERS":      {"BATCH_MAX_MEMBERS": "-1"},
		"RATE_LIMIT_RPM":         {"RATE_LIMIT_RPM": "NaN"},
		"MAX_IN_FLIGHT":          {"MAX_IN_FLIGHT": "0"},
		"MAX_PENDING_MEMBERS":    {"MAX_PENDING_MEMBERS": "x"},
		"MOENGAGE_DC":            {"MOENGAGE_DC": "07"},
		"MOENGAGE_BASE_URL":      {"MOENGAGE_BASE_URL": "ftp://x"},
		"KAFKA_DLQ_TOPIC":        {"KAFKA_DLQ_TOPIC": "cohort-membership-changes"},
		"KAFKA_SASL_MECHANISM":   {"KAFKA_SASL_MECHANISM": "GSSAPI"},
		"KAFKA_SASL_USERNAME":    {"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_PASSWORD": secretValue},
		"KAFKA_SASL_PASSWORD":    {"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u"},
		"KAFKA_TLS":              {"KAFKA_TLS": "maybe"},
		"KAFKA_TLS_CA_FILE":      {"KAFKA_TLS_CA_FILE": "/nonexistent/ca.pem"},
		"RETRY_MAX_INTERVAL":     {"RETRY_MAX_INTERVAL": "1ms"},
		"RETRY_INITIAL_INTERVAL": {"RETRY_INITIAL_INTERVAL": "0s"},
		"SHUTDOWN_TIMEOUT":       {"SHUTDOWN_TIMEOUT": "-1s"},
		"LOG_FORMAT":             {"LOG_FORMAT": "xml"},
		"LOG_LEVEL":              {"LOG_LEVEL": "loud"},
	}
	for name, over := range cases {
		t.Run(name, func(t *testing.T) {
			e := required()
			for k, v := range over {
				e[k] = v
			}
			_, err := config.Load(nil, env(e), nil)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, name) || strings.Contains(msg, "\n") || strings.Contains(msg, secretValue) {
				t.Fatalf("error %q must be one line naming %s without secrets", msg, name)
			}
		})
	}
}

func TestFileVariants(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key")
	if err := os.WriteFile(key, []byte(secretValue+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := map[string]string{"MOENGAGE_WORKSPACE_ID": "ws", "MOENGAGE_DATA_API_KEY_FILE": key}
	c, err := config.Load(nil, env(e), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.MoEngageDataAPIKey.Reveal() != secretValue {
		t.Fatalf("key %q", c.MoEngageDataAPIKey.Reveal())
	}
	e["MOENGAGE_DATA_API_KEY"] = "x"
	if _, err := config.Load(nil, env(e), nil); err == nil || !strings.Contains(err.Error(), "MOENGAGE_DATA_API_KEY_FILE") {
		t.Fatalf("both set: %v", err)
	}
	delete(e, "MOENGAGE_DATA_API_KEY")
	e["MOENGAGE_DATA_API_KEY_FILE"] = filepath.Join(dir, "missing")
	_, err = config.Load(nil, env(e), nil)
	if err == nil || !strings.Contains(err.Error(), "MOENGAGE_DATA_API_KEY_FILE") {
		t.Fatalf("unreadable file: %v", err)
	}
}

func TestSecretsNeverPrinted(t *testing.T) {
	e := required()
	e["KAFKA_SASL_MECHANISM"], e["KAFKA_SASL_USERNAME"], e["KAFKA_SASL_PASSWORD"] = "PLAIN", "u", secretValue
	c, err := config.Load(nil, env(e), nil)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("start", "config", c)
	j, _ := json.Marshal(c)
	out := strings.Join([]string{buf.String(), string(j), fmt.Sprintf("%v %+v %#v %s", c, c, c, c.MoEngageDataAPIKey)}, "\n")
	if strings.Contains(out, secretValue) {
		t.Fatalf("secret printed: %s", out)
	}
	var usage bytes.Buffer
	if _, err := config.Load([]string{"--help"}, env(e), &usage); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	if strings.Contains(usage.String(), secretValue) {
		t.Fatal("secret in usage")
	}
	for _, v := range designVars {
		if !strings.Contains(usage.String(), v) {
			t.Errorf("--help does not list %s", v)
		}
	}
}

func TestVarsCoverDesign(t *testing.T) {
	have := map[string]bool{}
	for _, v := range config.Vars {
		have[v.Env] = true
		if v.Flag != strings.ToLower(strings.ReplaceAll(v.Env, "_", "-")) {
			t.Errorf("%s flag %s", v.Env, v.Flag)
		}
	}
	for _, v := range designVars {
		if !have[v] {
			t.Errorf("%s missing from Vars", v)
		}
	}
}

func TestREADMETableMatchesCode(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	const start, end = "<!-- config-table:start -->\n", "<!-- config-table:end -->"
	s := string(b)
	i, j := strings.Index(s, start), strings.Index(s, end)
	if i < 0 || j < i {
		t.Fatal("README has no config-table markers")
	}
	if got, want := s[i+len(start):j], config.MarkdownTable(); got != want {
		if os.Getenv("UPDATE_README") != "" {
			if err := os.WriteFile("../../README.md", []byte(s[:i+len(start)]+want+s[j:]), 0o644); err != nil {
				t.Fatal(err)
			}
			return
		}
		t.Fatalf("README configuration table is stale; run UPDATE_README=1 go test ./internal/config/\nwant:\n%s", want)
	}
}

func FuzzLoad(f *testing.F) {
	f.Add("5s", "128000", "300", "01", "x")
	f.Add("", "-1", "NaN", "101", "\n")
	f.Fuzz(func(t *testing.T, window, maxBytes, rpm, dc, other string) {
		e := required()
		e["BATCH_WINDOW"], e["BATCH_MAX_BYTES"], e["RATE_LIMIT_RPM"], e["MOENGAGE_DC"], e["KAFKA_GROUP_ID"] = window, maxBytes, rpm, dc, other
		_, err := config.Load(nil, env(e), nil)
		if err != nil && strings.Contains(err.Error(), secretValue) {
			t.Fatalf("secret in %q", err)
		}
	})
}
