package config_test

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// fuzzable are the variables FuzzLoad sets: all but the secrets (whose
// values are the fixed strings to look for) and the files (a fuzzed path
// such as /dev/stdin could block).
var fuzzable = func() []string {
	var out []string
	for _, v := range config.Vars {
		if !v.Secret && !strings.HasSuffix(v.Env, "_FILE") {
			out = append(out, v.Env)
		}
	}
	return out
}()

// FuzzLoad: whatever the environment and flags, Load does not panic, its
// error is one line that holds no secret (even when the input pastes one
// into another variable), and a configuration it accepts renders no secret.
func FuzzLoad(f *testing.F) {
	at := func(env string) uint8 { return uint8(slices.Index(fuzzable, env)) }
	f.Add(at("KAFKA_BROKERS"), "a:1,b:2", at("BATCH_WINDOW"), "5x", at("MOENGAGE_DC"), "101", "--batch-window=1s")
	f.Add(at("KAFKA_TOPIC"), "t1,t1", at("MOENGAGE_BASE_URL"), "http://u:p@h", at("RATE_LIMIT_RPM"), "NaN", "")
	f.Add(at("KAFKA_DLQ_TOPIC"), "x.dlq", at("KAFKA_SASL_MECHANISM"), "scram-sha-256", at("LOG_LEVEL"), "info+1", "--kafka-tls")
	f.Add(at("BATCH_WINDOW"), apiKey, at("MOENGAGE_DC"), saslPassword, at("KAFKA_GROUP_ID"), "\n", "---moengage-data-api-key="+apiKey)
	// One misplaced secret per seed, so that no earlier error masks it.
	f.Add(at("BATCH_WINDOW"), apiKey, at("BATCH_WINDOW"), apiKey, at("BATCH_WINDOW"), apiKey, "")
	f.Add(at("MOENGAGE_DC"), saslPassword, at("MOENGAGE_DC"), saslPassword, at("MOENGAGE_DC"), saslPassword, "")
	f.Add(at("LOG_FORMAT"), "json", at("LOG_FORMAT"), "json", at("LOG_FORMAT"), "json", "--log-format=x"+apiKey)
	f.Add(at("MOENGAGE_BASE_URL"), "http://"+apiKey+"@h/%zz", at("HTTP_ADDR"), "x"+saslPassword, at("LOG_FORMAT"), "", "--log-format="+apiKey)
	f.Fuzz(func(t *testing.T, i1 uint8, v1 string, i2 uint8, v2 string, i3 uint8, v3 string, args string) {
		e := full()
		e[fuzzable[int(i1)%len(fuzzable)]] = v1
		e[fuzzable[int(i2)%len(fuzzable)]] = v2
		e[fuzzable[int(i3)%len(fuzzable)]] = v3
		var argv []string
		if args != "" && !strings.Contains(args, "file") {
			argv = strings.Split(args, "\x00")
		}
		c, err := config.Load(argv, getenv(e), io.Discard)
		var out string
		if err != nil {
			out = err.Error()
			if strings.ContainsAny(out, "\r\n") {
				t.Errorf("error %q is not one line", out)
			}
		} else if !leaks(v1 + v2 + v3 + args) {
			// An accepted configuration shows no secret, unless the input
			// itself put one into a variable that is not secret.
			var b strings.Builder
			slog.New(slog.NewJSONHandler(&b, nil)).Info("start", "config", c)
			out = fmt.Sprintf("%v %+v %#v", c, c, c) + b.String()
		}
		if leaks(out) {
			t.Fatalf("secret in %q", out)
		}
	})
}
