package config

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// sampleInput is a well-formed value of st that differs from the zero
// Config's and that no normalisation (trimming, case) changes.
func sampleInput(st setting) string {
	switch st.kind {
	case "duration":
		return "13s"
	case "integer":
		return "13"
	case "boolean":
		return "true"
	case "number":
		return "13.5"
	case "log level":
		return "warn"
	}
	if st.Secret {
		return "S3CRET-never-logged"
	}
	return "0013"
}

func logAttrs(c Config) map[string]slog.Value {
	out := map[string]slog.Value{}
	for _, a := range c.LogValue().Group() {
		out[a.Key] = a.Value
	}
	return out
}

// TestLogValueFromSettings: LogValue has one attribute per variable of
// settings() but the *_FILE variants, named after it, and setting a
// variable changes its attribute and no other. A setting left out of the
// log value, or logging another's field, fails here.
func TestLogValueFromSettings(t *testing.T) {
	zero := logAttrs(Config{})
	want := 0
	for _, st := range settings() {
		key := strings.ToLower(st.Env)
		if st.Secret {
			key += "_set"
		}
		if st.fileOf != "" {
			if _, ok := zero[key]; ok || st.value != nil {
				t.Errorf("%s is logged: a *_FILE variable is not", st.Env)
			}
			continue
		}
		want++
		if _, ok := zero[key]; !ok {
			t.Errorf("%s is missing from LogValue (key %q)", st.Env, key)
			continue
		}
		var c Config
		if !st.set(&c, sampleInput(st)) {
			t.Fatalf("%s refuses %q", st.Env, sampleInput(st))
		}
		for k, v := range logAttrs(c) {
			switch changed := !v.Equal(zero[k]); {
			case k == key && !changed:
				t.Errorf("%s=%q: LogValue %s is still %v", st.Env, sampleInput(st), k, v)
			case k != key && changed:
				t.Errorf("%s=%q changes LogValue %s to %v", st.Env, sampleInput(st), k, v)
			}
		}
	}
	if len(zero) != want {
		t.Errorf("LogValue has %d attributes, want %d (one per variable but the *_FILE ones)", len(zero), want)
	}
}

// TestLogValueNoSecret: each credential is logged only as whether it is
// set: a bool, true once set, and its value appears in no rendering.
func TestLogValueNoSecret(t *testing.T) {
	var c Config
	var secrets []string
	for _, st := range settings() {
		if st.Secret && st.fileOf == "" {
			v := "S3CRET-" + st.Env
			st.set(&c, v)
			secrets = append(secrets, v)
			if a := logAttrs(c)[strings.ToLower(st.Env)+"_set"]; a.Kind() != slog.KindBool || !a.Bool() {
				t.Errorf("%s is logged as %v, want true", st.Env, a)
			}
		}
	}
	if len(secrets) < 2 {
		t.Fatalf("found %d secret settings, want the API key and the SASL password", len(secrets))
	}
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("start", "config", c)
	slog.New(slog.NewTextHandler(&out, nil)).Info("start", "config", c)
	out.WriteString(c.LogValue().String())
	for _, s := range secrets {
		if strings.Contains(out.String(), s) {
			t.Errorf("the log shows %s: %s", s, out.String())
		}
	}
}
