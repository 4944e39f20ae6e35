package config_test

import (
	"strings"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// TestCleartextCredentialsRefused: an http:// MOENGAGE_BASE_URL and SASL
// PLAIN without TLS are refused, naming the variable and its opt-in, unless
// the host is on the loopback interface or the opt-in is set (issue 10 §5).
func TestCleartextCredentialsRefused(t *testing.T) {
	plain := map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": saslPassword}
	ca := writeFile(t, "ca.pem", caPEM(t))
	for _, tc := range []struct {
		name    string
		env     map[string]string
		errVars []string // nil: accepted
	}{
		{name: "http remote", env: map[string]string{"MOENGAGE_BASE_URL": "http://emulator:8080"},
			errVars: []string{"MOENGAGE_BASE_URL", "MOENGAGE_ALLOW_INSECURE=true", "http://emulator:8080"}},
		{name: "http remote IP", env: map[string]string{"MOENGAGE_BASE_URL": "http://10.0.0.7"},
			errVars: []string{"MOENGAGE_BASE_URL", "MOENGAGE_ALLOW_INSECURE"}},
		{name: "http upper-case scheme", env: map[string]string{"MOENGAGE_BASE_URL": "HTTP://api.example.com"},
			errVars: []string{"MOENGAGE_BASE_URL", "MOENGAGE_ALLOW_INSECURE"}},
		{name: "http name that only starts like loopback", env: map[string]string{"MOENGAGE_BASE_URL": "http://127.0.0.1.evil.example"},
			errVars: []string{"MOENGAGE_BASE_URL"}},
		{name: "http remote opted in", env: map[string]string{"MOENGAGE_BASE_URL": "http://emulator:8080", "MOENGAGE_ALLOW_INSECURE": "true"}},
		{name: "http 127.0.0.1", env: map[string]string{"MOENGAGE_BASE_URL": "http://127.0.0.1:8080"}},
		{name: "http 127.1.2.3", env: map[string]string{"MOENGAGE_BASE_URL": "http://127.1.2.3:8080"}},
		{name: "http ::1", env: map[string]string{"MOENGAGE_BASE_URL": "http://[::1]:8080/x"}},
		{name: "http localhost", env: map[string]string{"MOENGAGE_BASE_URL": "http://LocalHost:8080"}},
		{name: "https remote", env: map[string]string{"MOENGAGE_BASE_URL": "https://proxy.internal"}},

		{name: "PLAIN remote no TLS", env: with(plain, map[string]string{"KAFKA_BROKERS": "kafka:9092"}),
			errVars: []string{"KAFKA_SASL_MECHANISM", "KAFKA_SASL_ALLOW_INSECURE=true", "KAFKA_TLS"}},
		{name: "PLAIN one remote broker of two", env: with(plain, map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092,kafka:9092"}),
			errVars: []string{"KAFKA_SASL_MECHANISM"}},
		{name: "PLAIN remote opted in", env: with(plain, map[string]string{"KAFKA_BROKERS": "kafka:9092", "KAFKA_SASL_ALLOW_INSECURE": "true"})},
		{name: "PLAIN remote TLS", env: with(plain, map[string]string{"KAFKA_BROKERS": "kafka:9092", "KAFKA_TLS": "true"})},
		{name: "PLAIN remote CA file", env: with(plain, map[string]string{"KAFKA_BROKERS": "kafka:9092", "KAFKA_TLS_CA_FILE": ca})},
		{name: "PLAIN loopback", env: with(plain, map[string]string{"KAFKA_BROKERS": "127.0.0.1:9092,[::1]:9093,localhost:9094"})},
		{name: "SCRAM remote no TLS", env: with(plain, map[string]string{"KAFKA_BROKERS": "kafka:9092", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(nil, getenv(with(required(), tc.env)), nil)
			if tc.errVars == nil {
				if err != nil {
					t.Fatal(err)
				}
				// Validate, run again on the result, agrees.
				if err := c.Validate(); err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			checkErr(t, err.Error(), "")
			for _, s := range tc.errVars {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not name %s", err, s)
				}
			}
		})
	}

	// A Config built in code is checked too.
	c := config.Default()
	c.KafkaBrokers, c.KafkaGroupID = []string{"localhost:9092"}, "g"
	c.MoEngageWorkspaceID, c.MoEngageDataAPIKey = "ws", config.NewSecret(apiKey)
	c.MoEngageBaseURL = "http://emulator:8080"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "MOENGAGE_BASE_URL") {
		t.Fatalf("Validate of an http base URL: %v", err)
	}
	c.MoEngageAllowInsecure = true
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate with the opt-in: %v", err)
	}
}

// TestSecretFlagsRefused: --kafka-sasl-password and --moengage-data-api-key
// put a credential in argv; Load refuses them with a message naming the
// variable and its *_FILE form, and never echoes the value. The *_FILE
// flags stay accepted.
func TestSecretFlagsRefused(t *testing.T) {
	for _, args := range [][]string{
		{"--moengage-data-api-key=" + apiKey},
		{"--moengage-data-api-key", apiKey},
		{"-moengage-data-api-key=" + apiKey},
		{"--kafka-sasl-password=" + saslPassword},
		{"--kafka-sasl-password", saslPassword, "--kafka-sasl-mechanism=PLAIN", "--kafka-sasl-username=alice"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			_, err := config.Load(args, getenv(required()), nil)
			if err == nil {
				t.Fatal("accepted a secret as a flag")
			}
			checkErr(t, err.Error(), "")
			env := "MOENGAGE_DATA_API_KEY"
			if strings.Contains(args[0], "sasl") {
				env = "KAFKA_SASL_PASSWORD"
			}
			for _, s := range []string{"config: " + env + ":", env + "_FILE", "environment"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not contain %q", err, s)
				}
			}
		})
	}
	keyFile := writeFile(t, "key", apiKey+"\n")
	c, err := config.Load([]string{"--moengage-data-api-key-file=" + keyFile}, getenv(with(required(), map[string]string{"MOENGAGE_DATA_API_KEY": ""})), nil)
	if err != nil || c.MoEngageDataAPIKey.Reveal() != apiKey {
		t.Fatalf("--moengage-data-api-key-file: %v", err)
	}
}
