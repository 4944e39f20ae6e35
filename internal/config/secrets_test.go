package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// TestSecretsNeverRendered: a loaded Config with both secrets set, rendered
// every way the worker (or a careless caller) might, shows neither.
func TestSecretsNeverRendered(t *testing.T) {
	c, err := config.Load(nil, getenv(full()), nil)
	if err != nil {
		t.Fatal(err)
	}
	var jsonLog, textLog bytes.Buffer
	slog.New(slog.NewJSONHandler(&jsonLog, nil)).Info("start", "config", c, "ptr", &c, "key", c.MoEngageDataAPIKey)
	slog.New(slog.NewTextHandler(&textLog, nil)).Info("start", "config", c, "password", c.KafkaSASLPassword)
	js, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	renders := map[string]string{
		"json log":   jsonLog.String(),
		"text log":   textLog.String(),
		"json":       string(js),
		"LogValue":   c.LogValue().Resolve().String(),
		"Sprint":     fmt.Sprint(c),
		"Sprintln":   fmt.Sprintln(c, &c),
		"Errorf %v":  fmt.Errorf("wrapped: %v", c).Error(),
		"Errorf %+v": fmt.Errorf("wrapped: %+v", c).Error(),
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
		renders[verb] = fmt.Sprintf(verb, c)
		renders["&"+verb] = fmt.Sprintf(verb, &c)
	}
	for what, out := range renders {
		if leaks(out) {
			t.Errorf("%s shows a secret: %s", what, out)
		}
	}
	if !strings.Contains(renders["%+v"], "[REDACTED]") {
		t.Errorf("%%+v should show that the secrets are set: %s", renders["%+v"])
	}
}

// TestSecretsNotInUsage: --help with secrets set in the environment and as
// flags prints the flags without values.
func TestSecretsNotInUsage(t *testing.T) {
	var out strings.Builder
	args := []string{"--kafka-sasl-password=" + saslPassword, "--moengage-data-api-key", apiKey, "--help"}
	if _, err := config.Load(args, getenv(full()), &out); err == nil {
		t.Fatal("--help must return flag.ErrHelp")
	}
	if leaks(out.String()) {
		t.Fatalf("usage shows a secret:\n%s", out.String())
	}
	for _, v := range config.Vars {
		if v.Secret && !strings.Contains(out.String(), "--"+v.Flag+"  ("+v.Env+", secret)") {
			t.Errorf("usage does not list secret flag --%s", v.Flag)
		}
	}
}

// TestSecretsNeverInErrors: with both secrets set, make every other
// variable invalid in turn — from the environment and as a flag, and with a
// secret pasted into the wrong variable — and scan the errors.
func TestSecretsNeverInErrors(t *testing.T) {
	bad := []string{"", " ", "-1", "0", "x", "5x", "NaN", "ftp://x", "a,a", "has space", "\n", apiKey, saslPassword,
		"pre-" + apiKey + "-post", strings.ToUpper(apiKey), " " + saslPassword + " ", "http://u:" + saslPassword + "@h", "http://" + apiKey + "@h/%zz"}
	for _, v := range config.Vars {
		if v.Secret || strings.HasSuffix(v.Env, "_FILE") {
			continue
		}
		for _, value := range bad {
			e := with(full(), map[string]string{v.Env: value})
			for _, mode := range []struct {
				name string
				env  map[string]string
				args []string
			}{
				{"env", e, nil},
				{"flag", full(), []string{"--" + v.Flag + "=" + value}},
			} {
				_, err := config.Load(mode.args, getenv(mode.env), nil)
				if err == nil {
					continue
				}
				if leaks(err.Error()) {
					t.Errorf("%s=%q (%s): error %q contains a secret", v.Env, value, mode.name, err)
				}
				if strings.ContainsAny(err.Error(), "\r\n") {
					t.Errorf("%s=%q (%s): error %q is not one line", v.Env, value, mode.name, err)
				}
			}
		}
	}
}

func TestLogValue(t *testing.T) {
	c, err := config.Load(nil, getenv(full()), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range c.LogValue().Group() {
		got[a.Key] = a.Value.String()
	}
	for k, want := range map[string]string{
		"kafka_brokers": "localhost:9092", "kafka_topic": "cohort-membership-changes",
		"kafka_dlq_topic": "cohort-membership-changes.dlq", "kafka_sasl_mechanism": "PLAIN",
		"kafka_sasl_username": "alice", "kafka_sasl_password_set": "true",
		"moengage_base_url": "https://api-01.moengage.com", "moengage_workspace_id": "ws",
		"moengage_data_api_key_set": "true", "batch_window": "5s", "rate_limit_rpm": "300",
		"log_level": "INFO", "log_format": "json",
	} {
		if got[k] != want {
			t.Errorf("LogValue %s = %q, want %q", k, got[k], want)
		}
	}
}
