package config_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

func TestSecretRendering(t *testing.T) {
	for _, tc := range []struct {
		name  string
		value string
		want  string
	}{
		{"set", apiKey, "[REDACTED]"},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := config.NewSecret(tc.value)
			if s.Reveal() != tc.value {
				t.Fatalf("Reveal() = %q, want %q", s.Reveal(), tc.value)
			}
			holder := struct{ Key config.Secret }{s}
			var logged bytes.Buffer
			slog.New(slog.NewTextHandler(&logged, nil)).Info("m", "k", s)
			text, _ := s.MarshalText()
			js, _ := json.Marshal(s)
			renders := map[string]string{
				"String":      s.String(),
				"GoString":    s.GoString(),
				"MarshalText": string(text),
				"MarshalJSON": string(js),
				"LogValue":    s.LogValue().String(),
				"slog":        logged.String(),
			}
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-3v", "%T"} {
				renders["Sprintf "+verb] = fmt.Sprintf(verb, s)
				renders["Sprintf &"+verb] = fmt.Sprintf(verb, &s)
				renders["Sprintf struct "+verb] = fmt.Sprintf(verb, holder)
			}
			for what, got := range renders {
				if tc.value != "" && bytes.Contains([]byte(got), []byte(tc.value)) {
					t.Errorf("%s shows the secret: %q", what, got)
				}
			}
			for _, what := range []string{"String", "GoString", "MarshalText", "LogValue", "Sprintf %v", "Sprintf %#v", "Sprintf %q", "Sprintf %x"} {
				if renders[what] != tc.want {
					t.Errorf("%s = %q, want %q", what, renders[what], tc.want)
				}
			}
			if want := fmt.Sprintf("%q", tc.want); renders["MarshalJSON"] != want {
				t.Errorf("MarshalJSON = %s, want %s", renders["MarshalJSON"], want)
			}
		})
	}
}

func TestSecretComparable(t *testing.T) {
	if config.NewSecret("a") != config.NewSecret("a") || config.NewSecret("a") == config.NewSecret("b") {
		t.Fatal("secrets must compare by value")
	}
	if (config.Secret{}) != config.NewSecret("") {
		t.Fatal("the zero Secret must be the empty secret")
	}
}
