package config_test

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// TestDefaultsMatchDesign checks each default against DESIGN.md's table,
// both as documented (Vars) and as loaded.
func TestDefaultsMatchDesign(t *testing.T) {
	c, err := config.Load(nil, getenv(required()), nil)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]config.Var{}
	for _, v := range config.Vars {
		vars[v.Env] = v
	}
	// design is the "default" column of DESIGN.md; doc is what Vars shows
	// for it, got what Load produced.
	for _, tc := range []struct {
		env, design, doc string
		got, want        any
	}{
		{"KAFKA_BROKERS", "required", "", c.KafkaBrokers, []string{"localhost:9092"}}, // from required()
		{"KAFKA_TOPIC", "cohort-membership-changes", "cohort-membership-changes", c.KafkaTopics, []string{"cohort-membership-changes"}},
		{"KAFKA_GROUP_ID", "required", "", c.KafkaGroupID, "g-test"},
		{"KAFKA_DLQ_TOPIC", "<first topic>.dlq", "<first topic>.dlq", c.KafkaDLQTopic, "cohort-membership-changes.dlq"},
		{"KAFKA_BUDGET_TOPIC", "<KAFKA_GROUP_ID>.budget", "<KAFKA_GROUP_ID>.budget", c.KafkaBudgetTopic, "g-test.budget"},
		{"PARKING_TOPIC_PARTITIONS", "12", "12", c.ParkingTopicPartitions, 12},
		{"PARKING_TOPIC_REPLICATION", "3", "3", c.ParkingTopicReplication, 3},
		{"PARKING_TOPIC_RETENTION", "168h", "168h", c.ParkingTopicRetention, 168 * time.Hour},
		{"KAFKA_TLS", "off", "false", c.KafkaTLS, false},
		{"KAFKA_TLS_CA_FILE", "off", "", c.KafkaTLSCAFile, ""},
		{"KAFKA_SASL_MECHANISM", "off", "", c.KafkaSASLMechanism, ""},
		{"KAFKA_SASL_USERNAME", "off", "", c.KafkaSASLUsername, ""},
		{"KAFKA_SASL_PASSWORD", "off", "", c.KafkaSASLPassword, config.Secret{}},
		{"MOENGAGE_DC", "required unless MOENGAGE_BASE_URL is set", "", c.MoEngageDC, "01"},
		{"MOENGAGE_BASE_URL", "—", "", c.MoEngageBaseURL, "https://api-01.moengage.com"},
		{"COHORTSYNC_PARTNER", "—", "", c.CohortsyncPartner, ""},
		{"BATCH_MAX_BYTES", "128000", "128000", c.BatchMaxBytes, 128000},
		{"BATCH_MAX_MEMBERS", "derived", "0", c.BatchMaxMembers, 0},
		{"BATCH_WINDOW", "5s", "5s", c.BatchWindow, 5 * time.Second},
		{"RATE_LIMIT_RPM", "300", "300", c.RateLimitRPM, 300.0},
		{"RATE_LIMIT_SHARING", "true", "true", c.RateLimitSharing, true},
		{"KAFKA_SESSION_TIMEOUT", "10s", "10s", c.KafkaSessionTimeout, 10 * time.Second},
		{"KAFKA_HEARTBEAT_INTERVAL", "3s", "3s", c.KafkaHeartbeatInterval, 3 * time.Second},
		{"MAX_IN_FLIGHT", "4", "4", c.MaxInFlight, 4},
		{"MAX_PENDING_MEMBERS", "1000000", "1000000", c.MaxPendingMembers, 1000000},
		{"RETRY_INITIAL_INTERVAL", "500ms", "500ms", c.RetryInitialInterval, 500 * time.Millisecond},
		{"RETRY_MAX_INTERVAL", "60s", "60s", c.RetryMaxInterval, 60 * time.Second},
		{"RETRY_MAX_ELAPSED", "0", "0", c.RetryMaxElapsed, time.Duration(0)},
		{"MOENGAGE_MAX_PROCESSING_TIME", "30s", "30s", c.MoEngageMaxProcessingTime, 30 * time.Second},
		{"HTTP_ADDR", ":9090", ":9090", c.HTTPAddr, ":9090"},
		{"SHUTDOWN_TIMEOUT", "30s", "30s", c.ShutdownTimeout, 30 * time.Second},
		{"LOG_LEVEL", "info", "info", c.LogLevel, slog.LevelInfo},
		{"LOG_FORMAT", "json", "json", c.LogFormat, "json"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("loaded %#v, want %#v (DESIGN.md: %s)", tc.got, tc.want, tc.design)
			}
			if v := vars[tc.env]; v.Default != tc.doc {
				t.Errorf("Vars default %q, want %q (DESIGN.md: %s)", v.Default, tc.doc, tc.design)
			}
		})
	}
	for _, env := range []string{"KAFKA_BROKERS", "KAFKA_GROUP_ID", "MOENGAGE_DC", "MOENGAGE_WORKSPACE_ID", "MOENGAGE_DATA_API_KEY"} { // "required"
		if !strings.HasPrefix(vars[env].Help, "required") || vars[env].Default != "" {
			t.Errorf("%s must be documented as required, without a default", env)
		}
	}
}

// TestDefaultIsLoadWithoutEnvironment: Default is what Load builds from an
// empty environment, minus the required credentials and the derived fields.
func TestDefaultIsLoadWithoutEnvironment(t *testing.T) {
	c, err := config.Load(nil, getenv(required()), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.MoEngageWorkspaceID, c.MoEngageDataAPIKey = "", config.Secret{}
	c.KafkaBrokers, c.KafkaGroupID, c.MoEngageDC = nil, "", ""
	c.KafkaDLQTopic, c.KafkaBudgetTopic, c.MoEngageBaseURL = "", "", ""
	if d := config.Default(); !reflect.DeepEqual(c, d) {
		t.Fatalf("Default() = %+v\nLoad      = %+v", d, c)
	}
}

// fields reads the Config field of each variable.
var fields = map[string]func(config.Config) any{
	"KAFKA_BROKERS":             func(c config.Config) any { return c.KafkaBrokers },
	"KAFKA_TOPIC":               func(c config.Config) any { return c.KafkaTopics },
	"KAFKA_GROUP_ID":            func(c config.Config) any { return c.KafkaGroupID },
	"KAFKA_DLQ_TOPIC":           func(c config.Config) any { return c.KafkaDLQTopic },
	"KAFKA_TLS":                 func(c config.Config) any { return c.KafkaTLS },
	"KAFKA_TLS_CA_FILE":         func(c config.Config) any { return c.KafkaTLSCAFile },
	"KAFKA_TLS_CERT_FILE":       func(c config.Config) any { return c.KafkaTLSCertFile },
	"KAFKA_TLS_KEY_FILE":        func(c config.Config) any { return c.KafkaTLSKeyFile },
	"KAFKA_SASL_MECHANISM":      func(c config.Config) any { return c.KafkaSASLMechanism },
	"KAFKA_SASL_USERNAME":       func(c config.Config) any { return c.KafkaSASLUsername },
	"KAFKA_SASL_PASSWORD":       func(c config.Config) any { return c.KafkaSASLPassword.Reveal() },
	"MOENGAGE_DC":               func(c config.Config) any { return c.MoEngageDC },
	"MOENGAGE_BASE_URL":         func(c config.Config) any { return c.MoEngageBaseURL },
	"MOENGAGE_ALLOW_INSECURE":   func(c config.Config) any { return c.MoEngageAllowInsecure },
	"KAFKA_SASL_ALLOW_INSECURE": func(c config.Config) any { return c.KafkaSASLAllowInsecure },
	"MOENGAGE_WORKSPACE_ID":     func(c config.Config) any { return c.MoEngageWorkspaceID },
	"MOENGAGE_DATA_API_KEY":     func(c config.Config) any { return c.MoEngageDataAPIKey.Reveal() },
	"MOENGAGE_WORKSPACES_DIR":   func(c config.Config) any { return c.MoEngageWorkspacesDir },
	"COHORTSYNC_PARTNER":        func(c config.Config) any { return c.CohortsyncPartner },
	"BATCH_MAX_BYTES":           func(c config.Config) any { return c.BatchMaxBytes },
	"BATCH_MAX_MEMBERS":         func(c config.Config) any { return c.BatchMaxMembers },
	"BATCH_WINDOW":              func(c config.Config) any { return c.BatchWindow },
	"RATE_LIMIT_RPM":            func(c config.Config) any { return c.RateLimitRPM },
	"RATE_LIMIT_SHARING":        func(c config.Config) any { return c.RateLimitSharing },
	"KAFKA_SESSION_TIMEOUT":     func(c config.Config) any { return c.KafkaSessionTimeout },
	"KAFKA_HEARTBEAT_INTERVAL":  func(c config.Config) any { return c.KafkaHeartbeatInterval },
	"KAFKA_BUDGET_TOPIC":        func(c config.Config) any { return c.KafkaBudgetTopic },
	"PARKING_TOPIC_PARTITIONS":  func(c config.Config) any { return c.ParkingTopicPartitions },
	"PARKING_TOPIC_REPLICATION": func(c config.Config) any { return c.ParkingTopicReplication },
	"PARKING_TOPIC_RETENTION":   func(c config.Config) any { return c.ParkingTopicRetention },
	"MAX_IN_FLIGHT":             func(c config.Config) any { return c.MaxInFlight },
	"MAX_PENDING_MEMBERS":       func(c config.Config) any { return c.MaxPendingMembers },
	"RETRY_INITIAL_INTERVAL":    func(c config.Config) any { return c.RetryInitialInterval },
	"RETRY_MAX_INTERVAL":        func(c config.Config) any { return c.RetryMaxInterval },
	"RETRY_MAX_ELAPSED":         func(c config.Config) any { return c.RetryMaxElapsed },
	"HTTP_ADDR":                 func(c config.Config) any { return c.HTTPAddr },
	"SHUTDOWN_TIMEOUT":          func(c config.Config) any { return c.ShutdownTimeout },
	"LOG_LEVEL":                 func(c config.Config) any { return c.LogLevel },
	"LOG_FORMAT":                func(c config.Config) any { return c.LogFormat },

	"MOENGAGE_MAX_PROCESSING_TIME": func(c config.Config) any { return c.MoEngageMaxProcessingTime },
}

type parseCase struct {
	env   string
	value string            // set in the environment or as the flag
	other string            // another valid value, for the environment when the flag must win
	extra map[string]string // other variables the case needs
	want  any
}

func parseCases(t *testing.T) []parseCase {
	ca := writeFile(t, "ca.pem", caPEM(t))
	ca2 := writeFile(t, "ca2.pem", caPEM(t))
	c1, k1 := clientPair(t, "alice")
	c2, k2 := clientPair(t, "alice")
	cert, key := writeFile(t, "c1.pem", c1), writeFile(t, "k1.pem", k1)
	cert2, key2 := writeFile(t, "c2.pem", c2), writeFile(t, "k2.pem", k2)
	wsDir := t.TempDir()
	sasl := func(drop string) map[string]string {
		m := map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": saslPassword}
		delete(m, drop)
		return m
	}
	return []parseCase{
		{env: "KAFKA_BROKERS", value: " a:1 , b:2,,", other: "c:3", want: []string{"a:1", "b:2"}},
		{env: "KAFKA_BROKERS", value: "[::1]:9092", other: "c:3", want: []string{"[::1]:9092"}},
		{env: "KAFKA_TOPIC", value: "t1, t2", other: "x", want: []string{"t1", "t2"}},
		{env: "KAFKA_GROUP_ID", value: "g1", other: "g2", want: "g1"},
		{env: "KAFKA_DLQ_TOPIC", value: "dead", other: "dead2", want: "dead"},
		{env: "KAFKA_BUDGET_TOPIC", value: "budget", other: "budget2", want: "budget"},
		{env: "PARKING_TOPIC_PARTITIONS", value: "24", other: "6", want: 24},
		{env: "PARKING_TOPIC_REPLICATION", value: "1", other: "3", want: 1},
		{env: "PARKING_TOPIC_RETENTION", value: "720h", other: "24h", want: 720 * time.Hour},
		{env: "RATE_LIMIT_SHARING", value: "false", other: "true", want: false},
		{env: "KAFKA_SESSION_TIMEOUT", value: "12s", other: "20s", want: 12 * time.Second},
		{env: "KAFKA_HEARTBEAT_INTERVAL", value: "1s", other: "2s", want: time.Second},
		{env: "RATE_LIMIT_SHARING", value: "true", other: "false", want: true},
		{env: "KAFKA_TLS", value: "true", other: "false", want: true},
		{env: "KAFKA_TLS", value: "false", other: "true", want: false},
		{env: "KAFKA_TLS", value: "1", other: "0", want: true},
		{env: "KAFKA_TLS_CA_FILE", value: ca, other: ca2, want: ca},
		{env: "KAFKA_TLS_CERT_FILE", value: cert, other: cert2, extra: map[string]string{"KAFKA_TLS_KEY_FILE": key}, want: cert},
		{env: "KAFKA_TLS_KEY_FILE", value: key, other: key2, extra: map[string]string{"KAFKA_TLS_CERT_FILE": cert}, want: key},
		{env: "KAFKA_SASL_MECHANISM", value: "scram-sha-256", other: "PLAIN", extra: sasl("KAFKA_SASL_MECHANISM"), want: "SCRAM-SHA-256"},
		{env: "KAFKA_SASL_MECHANISM", value: "Scram-Sha-512", other: "PLAIN", extra: sasl("KAFKA_SASL_MECHANISM"), want: "SCRAM-SHA-512"},
		{env: "KAFKA_SASL_MECHANISM", value: "plain", other: "SCRAM-SHA-256", extra: sasl("KAFKA_SASL_MECHANISM"), want: "PLAIN"},
		{env: "KAFKA_SASL_MECHANISM", value: "aws_msk_iam", other: "PLAIN", want: "AWS_MSK_IAM"},
		{env: "KAFKA_SASL_USERNAME", value: "bob", other: "carol", extra: sasl("KAFKA_SASL_USERNAME"), want: "bob"},
		{env: "KAFKA_SASL_PASSWORD", value: saslPassword, other: "other-pw", extra: sasl("KAFKA_SASL_PASSWORD"), want: saslPassword},
		{env: "KAFKA_SASL_ALLOW_INSECURE", value: "true", other: "false", want: true},
		{env: "MOENGAGE_DC", value: "101", other: "02", want: "101"},
		{env: "MOENGAGE_DC", value: " 06 ", other: "02", want: "06"},
		{env: "MOENGAGE_BASE_URL", value: "http://127.0.0.1:8080/", other: "https://proxy", want: "http://127.0.0.1:8080"},
		{env: "MOENGAGE_BASE_URL", value: "https://proxy.internal/moengage", other: "https://proxy", want: "https://proxy.internal/moengage"},
		{env: "MOENGAGE_ALLOW_INSECURE", value: "1", other: "false", want: true},
		{env: "MOENGAGE_WORKSPACE_ID", value: " ws2 ", other: "ws3", want: "ws2"},
		{env: "MOENGAGE_DATA_API_KEY", value: apiKey, other: "other-key", want: apiKey},
		{env: "MOENGAGE_WORKSPACES_DIR", value: " " + wsDir + " ", other: t.TempDir(), want: wsDir},
		{env: "COHORTSYNC_PARTNER", value: "6HNBXFm7ZS", other: "p2", want: "6HNBXFm7ZS"},
		{env: "BATCH_MAX_BYTES", value: "512", other: "1000", want: 512},
		{env: "BATCH_MAX_BYTES", value: "131072", other: "1000", want: 131072},
		{env: "BATCH_MAX_MEMBERS", value: "100", other: "5", want: 100},
		{env: "BATCH_WINDOW", value: "250ms", other: "1s", want: 250 * time.Millisecond},
		{env: "RATE_LIMIT_RPM", value: "0", other: "60", want: 0.0, extra: map[string]string{"MOENGAGE_BASE_URL": "http://127.0.0.1:8080"}}, // the emulator
		{env: "RATE_LIMIT_RPM", value: "12.5", other: "60", want: 12.5},
		{env: "MAX_IN_FLIGHT", value: "1", other: "8", want: 1},
		{env: "MAX_PENDING_MEMBERS", value: "10", other: "20", want: 10},
		{env: "RETRY_INITIAL_INTERVAL", value: "1s", other: "2s", want: time.Second},
		{env: "RETRY_MAX_INTERVAL", value: "500ms", other: "2m", want: 500 * time.Millisecond},
		{env: "RETRY_MAX_ELAPSED", value: "15m", other: "1h", want: 15 * time.Minute},
		{env: "MOENGAGE_MAX_PROCESSING_TIME", value: "16s", other: "1m", want: 16 * time.Second},
		{env: "HTTP_ADDR", value: "127.0.0.1:0", other: ":8080", want: "127.0.0.1:0"},
		{env: "SHUTDOWN_TIMEOUT", value: "1m", other: "10s", want: time.Minute},
		{env: "LOG_LEVEL", value: "DEBUG", other: "error", want: slog.LevelDebug},
		{env: "LOG_LEVEL", value: "warn", other: "error", want: slog.LevelWarn},
		{env: "LOG_LEVEL", value: "error", other: "debug", want: slog.LevelError},
		{env: "LOG_FORMAT", value: "TEXT", other: "json", want: "text"},
	}
}

// TestParse sets each variable in the environment, as a flag, and in both
// with a different environment value (the flag must win).
func TestParse(t *testing.T) {
	seen := map[string]bool{}
	for _, tc := range parseCases(t) {
		seen[tc.env] = true
		flagArg := "--" + strings.ToLower(strings.ReplaceAll(tc.env, "_", "-")) + "=" + tc.value
		for _, mode := range []struct {
			name string
			env  map[string]string
			args []string
		}{
			{"env", with(required(), with(tc.extra, map[string]string{tc.env: tc.value})), nil},
			{"flag", with(required(), tc.extra), []string{flagArg}},
			{"flag-overrides-env", with(required(), with(tc.extra, map[string]string{tc.env: tc.other})), []string{flagArg}},
		} {
			t.Run(tc.env+"="+tc.value+"/"+mode.name, func(t *testing.T) {
				c, err := config.Load(mode.args, getenv(mode.env), nil)
				if mode.args != nil && secretEnv[tc.env] {
					// Secrets are refused as flags (TestSecretFlagsRefused).
					if err == nil || !strings.Contains(err.Error(), tc.env+"_FILE") {
						t.Fatalf("secret flag --%s: err = %v, want a refusal pointing to %s_FILE", tc.env, err, tc.env)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if got := fields[tc.env](c); !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("%s = %#v, want %#v", tc.env, got, tc.want)
				}
			})
		}
	}
	for env := range fields {
		if !seen[env] {
			t.Errorf("no parse case for %s", env)
		}
	}
}

func TestFlagForms(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		env2 string
		want any
	}{
		{"separate value", nil, []string{"--batch-window", "3s"}, "BATCH_WINDOW", 3 * time.Second},
		{"single dash", nil, []string{"-max-in-flight=7"}, "MAX_IN_FLIGHT", 7},
		{"bool alone", nil, []string{"--kafka-tls"}, "KAFKA_TLS", true},
		{"bool false overrides env", map[string]string{"KAFKA_TLS": "true"}, []string{"--kafka-tls=false"}, "KAFKA_TLS", false},
		{"last flag wins", nil, []string{"--max-in-flight=2", "--max-in-flight=3"}, "MAX_IN_FLIGHT", 3},
		{"empty flag disables HTTP", nil, []string{"--http-addr="}, "HTTP_ADDR", ""},
		{"empty env is unset", map[string]string{"HTTP_ADDR": ""}, nil, "HTTP_ADDR", ":9090"},
		{"CA file implies TLS", map[string]string{"KAFKA_TLS_CA_FILE": "CA"}, nil, "KAFKA_TLS", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := with(required(), tc.env)
			if e["KAFKA_TLS_CA_FILE"] == "CA" {
				e["KAFKA_TLS_CA_FILE"] = writeFile(t, "ca.pem", caPEM(t))
			}
			c, err := config.Load(tc.args, getenv(e), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := fields[tc.env2](c); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("%s = %#v, want %#v", tc.env2, got, tc.want)
			}
		})
	}
}

type invalidCase struct {
	env   string            // the variable the error must name
	over  map[string]string // changes to the valid environment ("" unsets)
	args  []string          // flags
	exact string            // when set, the whole message
	has   string            // when set, a part of the message
}

func invalidCases(t *testing.T) []invalidCase {
	notPEM := writeFile(t, "not.pem", "not a certificate\n")
	one := func(env, v string) invalidCase { return invalidCase{env: env, over: map[string]string{env: v}} }
	return []invalidCase{
		one("KAFKA_BROKERS", " , "),
		one("KAFKA_BROKERS", "localhost"),
		one("KAFKA_BROKERS", "kafka://b:9092"),
		one("KAFKA_TOPIC", ","),
		one("KAFKA_TOPIC", "has space"),
		one("KAFKA_TOPIC", "a,a"),
		one("KAFKA_GROUP_ID", "  "),
		one("KAFKA_DLQ_TOPIC", "cohort-membership-changes"),
		{env: "KAFKA_DLQ_TOPIC", over: map[string]string{"KAFKA_TOPIC": "a,b", "KAFKA_DLQ_TOPIC": "b"}},
		{env: "KAFKA_DLQ_TOPIC", over: map[string]string{"KAFKA_TOPIC": "x,x.dlq"}}, // the derived name collides
		one("KAFKA_DLQ_TOPIC", "bad/name"),
		one("KAFKA_BUDGET_TOPIC", "bad/name"),
		one("PARKING_TOPIC_PARTITIONS", "0"),
		one("PARKING_TOPIC_PARTITIONS", "twelve"),
		one("PARKING_TOPIC_REPLICATION", "0"),
		one("PARKING_TOPIC_RETENTION", "30m"),
		one("PARKING_TOPIC_RETENTION", "7d"),
		one("KAFKA_SESSION_TIMEOUT", "5s"),
		one("KAFKA_SESSION_TIMEOUT", "6m"),
		one("KAFKA_HEARTBEAT_INTERVAL", "4s"),
		one("KAFKA_HEARTBEAT_INTERVAL", "0s"),
		{env: "KAFKA_BUDGET_TOPIC", over: map[string]string{"KAFKA_TOPIC": "a,b", "KAFKA_BUDGET_TOPIC": "b"}},
		{env: "KAFKA_BUDGET_TOPIC", over: map[string]string{"KAFKA_BUDGET_TOPIC": "t.dlq", "KAFKA_DLQ_TOPIC": "t.dlq"}},
		{env: "RATE_LIMIT_SHARING", over: map[string]string{"RATE_LIMIT_SHARING": "maybe"}, exact: `config: RATE_LIMIT_SHARING: invalid boolean "maybe"`},
		{env: "KAFKA_TLS", over: map[string]string{"KAFKA_TLS": "maybe"}, exact: `config: KAFKA_TLS: invalid boolean "maybe"`},
		{env: "KAFKA_TLS", args: []string{"--kafka-tls=yes"}},
		one("KAFKA_TLS_CA_FILE", "/nonexistent/ca.pem"),
		one("KAFKA_TLS_CA_FILE", notPEM),
		one("KAFKA_TLS_CA_FILE", t.TempDir()),
		one("KAFKA_SASL_MECHANISM", "GSSAPI"),
		one("KAFKA_SASL_MECHANISM", ""), // username and password without a mechanism
		one("KAFKA_SASL_USERNAME", ""),
		one("KAFKA_SASL_PASSWORD", ""),
		one("KAFKA_SASL_ALLOW_INSECURE", "sure"),
		{env: "KAFKA_SASL_MECHANISM", over: map[string]string{"KAFKA_BROKERS": "kafka:9092"}}, // PLAIN in clear to a remote broker
		one("MOENGAGE_ALLOW_INSECURE", "yes please"),
		one("MOENGAGE_BASE_URL", "http://emulator:8080"), // plain http off the loopback interface
		one("MOENGAGE_DC", "1"),
		one("MOENGAGE_DC", "001"),
		one("MOENGAGE_DC", "07"),
		one("MOENGAGE_DC", "0101"),
		one("MOENGAGE_DC", "dc-01"),
		{env: "MOENGAGE_DC", args: []string{"--moengage-dc="}},
		one("MOENGAGE_BASE_URL", "ftp://x"),
		one("MOENGAGE_BASE_URL", "http://"),
		one("MOENGAGE_BASE_URL", "api-01.moengage.com"),
		one("MOENGAGE_BASE_URL", "https://u:pw@host"),
		one("MOENGAGE_BASE_URL", "http://h/?x=1"),
		one("MOENGAGE_BASE_URL", "http://h/#frag"),
		one("MOENGAGE_BASE_URL", "http://[::1"),
		{env: "MOENGAGE_WORKSPACE_ID", over: map[string]string{"MOENGAGE_WORKSPACE_ID": ""}, has: "required (the workspace to send to) unless MOENGAGE_WORKSPACES_DIR"},
		one("MOENGAGE_WORKSPACE_ID", "ws:1"),
		one("MOENGAGE_WORKSPACE_ID", "w s"),
		one("MOENGAGE_WORKSPACE_ID", "ws\x00"),
		{env: "MOENGAGE_DATA_API_KEY", over: map[string]string{"MOENGAGE_DATA_API_KEY": ""}, has: "required with MOENGAGE_WORKSPACE_ID"},
		one("BATCH_MAX_BYTES", "511"),
		one("BATCH_MAX_BYTES", "131073"),
		{env: "BATCH_MAX_BYTES", over: map[string]string{"BATCH_MAX_BYTES": "128KB"}, exact: `config: BATCH_MAX_BYTES: invalid integer "128KB"`},
		one("BATCH_MAX_MEMBERS", "-1"),
		one("BATCH_MAX_MEMBERS", "many"),
		{env: "BATCH_WINDOW", over: map[string]string{"BATCH_WINDOW": "5x"}, exact: `config: BATCH_WINDOW: invalid duration "5x"`},
		{env: "BATCH_WINDOW", args: []string{"--batch-window=soon"}, exact: `config: BATCH_WINDOW: invalid duration "soon"`},
		one("BATCH_WINDOW", "5"),
		one("BATCH_WINDOW", "0s"),
		one("BATCH_WINDOW", "-1s"),
		one("RATE_LIMIT_RPM", "-1"),
		one("RATE_LIMIT_RPM", "NaN"),
		one("RATE_LIMIT_RPM", "+Inf"),
		one("RATE_LIMIT_RPM", "lots"),
		one("MAX_IN_FLIGHT", "0"),
		one("MAX_IN_FLIGHT", "1.5"),
		one("MAX_PENDING_MEMBERS", "0"),
		one("MAX_PENDING_MEMBERS", "1e6"),
		one("RETRY_INITIAL_INTERVAL", "0"),
		one("RETRY_INITIAL_INTERVAL", "fast"),
		one("RETRY_MAX_INTERVAL", "100ms"),
		one("RETRY_MAX_ELAPSED", "-1s"),
		one("MOENGAGE_MAX_PROCESSING_TIME", "15s"),
		one("MOENGAGE_MAX_PROCESSING_TIME", "0"),
		one("HTTP_ADDR", "localhost"),
		one("SHUTDOWN_TIMEOUT", "0s"),
		one("LOG_LEVEL", "loud"),
		one("LOG_LEVEL", "info+2"),
		one("LOG_FORMAT", "xml"),
		{env: "MOENGAGE_DATA_API_KEY_FILE", over: map[string]string{"MOENGAGE_DATA_API_KEY": "", "MOENGAGE_DATA_API_KEY_FILE": "/nonexistent/key"}, has: `cannot read "/nonexistent/key": no such file`},
		{env: "KAFKA_TLS_CERT_FILE", over: map[string]string{"KAFKA_TLS_KEY_FILE": "/nonexistent/user.key"}, has: "required with KAFKA_TLS_KEY_FILE"},
		{env: "KAFKA_TLS_KEY_FILE", over: map[string]string{"KAFKA_TLS_CERT_FILE": "/nonexistent/user.crt"}, has: "required with KAFKA_TLS_CERT_FILE"},
		{env: "KAFKA_TLS_CERT_FILE", over: map[string]string{"KAFKA_TLS_CERT_FILE": "/nonexistent/user.crt", "KAFKA_TLS_KEY_FILE": "/nonexistent/user.key"}, has: "cannot read"},
		{env: "KAFKA_SASL_PASSWORD_FILE", over: map[string]string{"KAFKA_SASL_PASSWORD": "", "KAFKA_SASL_PASSWORD_FILE": "/nonexistent/pw"}, has: "/nonexistent/pw"},
		{env: "MOENGAGE_WORKSPACE_ID_FILE", over: map[string]string{"MOENGAGE_WORKSPACE_ID": "", "MOENGAGE_WORKSPACE_ID_FILE": "/nonexistent/ws"}, has: "/nonexistent/ws"},
		{env: "MOENGAGE_WORKSPACES_DIR", over: map[string]string{"MOENGAGE_WORKSPACES_DIR": "/nonexistent/workspaces"}, has: `cannot read "/nonexistent/workspaces": no such file`},
		{env: "MOENGAGE_WORKSPACES_DIR", over: map[string]string{"MOENGAGE_WORKSPACES_DIR": notPEM}, has: "is not a directory"},
		// A key without a workspace: whose would it be?
		{env: "MOENGAGE_DATA_API_KEY", over: map[string]string{"MOENGAGE_WORKSPACE_ID": "", "MOENGAGE_WORKSPACES_DIR": t.TempDir()}, has: "MOENGAGE_WORKSPACE_ID is not"},
	}
}

// TestInvalid: each invalid value fails with one line that names the
// variable and holds no secret, although both secrets are set.
func TestInvalid(t *testing.T) {
	named := map[string]bool{}
	for _, tc := range invalidCases(t) {
		named[tc.env] = true
		t.Run(fmt.Sprintf("%s/%q%q", tc.env, tc.over[tc.env], tc.args), func(t *testing.T) {
			_, err := config.Load(tc.args, getenv(with(full(), tc.over)), nil)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if tc.exact != "" && msg != tc.exact {
				t.Errorf("error %q, want %q", msg, tc.exact)
			}
			if !strings.Contains(msg, tc.has) {
				t.Errorf("error %q does not say %q", msg, tc.has)
			}
			checkErr(t, msg, tc.env)
		})
	}
	for _, env := range designVars {
		if !named[env] && env != "COHORTSYNC_PARTNER" { // any partner is valid
			t.Errorf("no invalid case for %s", env)
		}
	}
}

func checkErr(t *testing.T, msg, env string) {
	t.Helper()
	if !strings.HasPrefix(msg, "config: ") || strings.ContainsAny(msg, "\r\n") {
		t.Errorf("error %q is not one line starting with config:", msg)
	}
	if env != "" && !strings.Contains(msg, env) {
		t.Errorf("error %q does not name %s", msg, env)
	}
	if leaks(msg) {
		t.Errorf("error %q contains a secret", msg)
	}
}

func TestHelp(t *testing.T) {
	var want strings.Builder
	config.Usage(&want)
	for _, arg := range []string{"-h", "--help", "-help"} {
		t.Run(arg, func(t *testing.T) {
			var out strings.Builder
			_, err := config.Load([]string{"--batch-window=1s", arg}, getenv(nil), &out)
			if !errors.Is(err, flag.ErrHelp) {
				t.Fatalf("err = %v, want flag.ErrHelp", err)
			}
			if out.String() != want.String() {
				t.Fatalf("help output differs from Usage:\n%s", out.String())
			}
		})
	}
	if _, err := config.Load([]string{"-h"}, nil, nil); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("nil getenv and usage: %v", err)
	}
}

func TestBadCommandLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-such-flag=1"}, "no-such-flag"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--batch-window"}, "batch-window"},
		{[]string{"---moengage-data-api-key=" + apiKey}, "bad flag syntax"},
		{[]string{"--kafka-tls", apiKey}, "unexpected argument"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := config.Load(tc.args, getenv(full()), nil)
			if err == nil {
				t.Fatal("accepted")
			}
			checkErr(t, err.Error(), "")
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestDataCenters(t *testing.T) {
	want := map[string]string{
		"01": "https://api-01.moengage.com", "02": "https://api-02.moengage.com",
		"03": "https://api-03.moengage.com", "04": "https://api-04.moengage.com",
		"05": "https://api-05.moengage.com", "06": "https://api-06.moengage.com",
		"101": "https://api-101.moengage.com", // not zero-padded
	}
	if len(config.DataCenters) != len(want) {
		t.Fatalf("DataCenters = %v", config.DataCenters)
	}
	for _, dc := range config.DataCenters {
		t.Run(dc, func(t *testing.T) {
			c, err := config.Load(nil, getenv(with(required(), map[string]string{"MOENGAGE_DC": dc})), nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.MoEngageDC != dc || c.MoEngageBaseURL != want[dc] {
				t.Fatalf("DC %s: %s %s", dc, c.MoEngageDC, c.MoEngageBaseURL)
			}
		})
	}
	// An explicit base URL wins over the DC, which is still validated.
	c, err := config.Load([]string{"--moengage-dc=101", "--moengage-base-url=http://emulator:8080/", "--moengage-allow-insecure"}, getenv(required()), nil)
	if err != nil || c.MoEngageBaseURL != "http://emulator:8080" || c.MoEngageDC != "101" {
		t.Fatalf("override: %v %q", err, c.MoEngageBaseURL)
	}
	_, err = config.Load([]string{"--moengage-dc=7", "--moengage-base-url=http://emulator:8080"}, getenv(required()), nil)
	if err == nil || !strings.Contains(err.Error(), "MOENGAGE_DC") {
		t.Fatalf("bad DC with a base URL: %v", err)
	}
}

func TestDLQTopic(t *testing.T) {
	for _, tc := range []struct {
		topic, dlq, want string
	}{
		{"", "", "cohort-membership-changes.dlq"},
		{"in", "", "in.dlq"},
		{"a,b", "", "a.dlq"},
		{"a,b", "dead", "dead"},
		{"a", "a.dlq", "a.dlq"},
	} {
		t.Run(tc.topic+"/"+tc.dlq, func(t *testing.T) {
			e := with(required(), map[string]string{"KAFKA_TOPIC": tc.topic, "KAFKA_DLQ_TOPIC": tc.dlq})
			c, err := config.Load(nil, getenv(e), nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.KafkaDLQTopic != tc.want {
				t.Fatalf("DLQ %q, want %q", c.KafkaDLQTopic, tc.want)
			}
		})
	}
}

func TestFileVariants(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, "key", apiKey+"\n")
	crlfFile := writeFile(t, "key-crlf", apiKey+"\r\n\r\n")
	spacedFile := writeFile(t, "key-spaced", " "+apiKey+" \n")
	wsFile := writeFile(t, "ws", " ws-from-file \n")
	pwFile := writeFile(t, "pw", saslPassword)
	emptyFile := writeFile(t, "empty", "\n")
	bigFile := writeFile(t, "big", strings.Repeat("x", 1<<20))
	sasl := map[string]string{"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "alice"}
	noKey := required()
	delete(noKey, "MOENGAGE_DATA_API_KEY")

	for _, tc := range []struct {
		name    string
		env     map[string]string
		args    []string
		check   func(config.Config) bool
		errVars []string // when set, Load fails naming these
	}{
		{name: "key file", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": keyFile}),
			check: func(c config.Config) bool {
				return c.MoEngageDataAPIKey.Reveal() == apiKey && c.MoEngageDataAPIKeyFile == keyFile
			}},
		{name: "key from env has no file to re-read", env: required(),
			check: func(c config.Config) bool { return c.MoEngageDataAPIKeyFile == "" }},
		{name: "key file CRLF", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": crlfFile}),
			check: func(c config.Config) bool { return c.MoEngageDataAPIKey.Reveal() == apiKey }},
		{name: "only trailing newlines trimmed", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": spacedFile}),
			check: func(c config.Config) bool { return c.MoEngageDataAPIKey.Reveal() == " "+apiKey+" " }},
		{name: "key file flag", env: noKey, args: []string{"--moengage-data-api-key-file", keyFile},
			check: func(c config.Config) bool { return c.MoEngageDataAPIKey.Reveal() == apiKey }},
		{name: "workspace file", env: with(required(), map[string]string{"MOENGAGE_WORKSPACE_ID": "", "MOENGAGE_WORKSPACE_ID_FILE": wsFile}),
			check: func(c config.Config) bool { return c.MoEngageWorkspaceID == "ws-from-file" }},
		{name: "SASL password file", env: with(required(), with(sasl, map[string]string{"KAFKA_SASL_PASSWORD_FILE": pwFile})),
			check: func(c config.Config) bool { return c.KafkaSASLPassword.Reveal() == saslPassword }},
		{name: "flag file replaces env value", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY": "env-key"}),
			args:  []string{"--moengage-data-api-key-file=" + keyFile},
			check: func(c config.Config) bool { return c.MoEngageDataAPIKey.Reveal() == apiKey }},
		{name: "flag value refused even over an env file", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": "/nonexistent"}),
			args:    []string{"--moengage-data-api-key=flag-key"},
			errVars: []string{"MOENGAGE_DATA_API_KEY", "MOENGAGE_DATA_API_KEY_FILE"}},
		{name: "both in env", env: with(required(), map[string]string{"MOENGAGE_DATA_API_KEY_FILE": keyFile}),
			errVars: []string{"MOENGAGE_DATA_API_KEY", "MOENGAGE_DATA_API_KEY_FILE"}},
		{name: "both as flags", env: noKey, args: []string{"--moengage-data-api-key=" + apiKey, "--moengage-data-api-key-file=" + keyFile},
			errVars: []string{"MOENGAGE_DATA_API_KEY", "MOENGAGE_DATA_API_KEY_FILE"}},
		{name: "both workspace", env: with(required(), map[string]string{"MOENGAGE_WORKSPACE_ID_FILE": wsFile}),
			errVars: []string{"MOENGAGE_WORKSPACE_ID", "MOENGAGE_WORKSPACE_ID_FILE"}},
		{name: "both SASL password", env: with(full(), map[string]string{"KAFKA_SASL_PASSWORD_FILE": pwFile}),
			errVars: []string{"KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"}},
		{name: "missing file", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": dir + "/missing"}),
			errVars: []string{"MOENGAGE_DATA_API_KEY_FILE", dir + "/missing", "no such file"}},
		{name: "directory", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": dir}),
			errVars: []string{"MOENGAGE_DATA_API_KEY_FILE", dir}},
		{name: "empty file", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": emptyFile}),
			errVars: []string{"MOENGAGE_DATA_API_KEY_FILE", emptyFile, "empty"}},
		{name: "huge file", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": bigFile}),
			errVars: []string{"MOENGAGE_DATA_API_KEY_FILE", bigFile}},
		{name: "file content never in a later error", env: with(noKey, map[string]string{"MOENGAGE_DATA_API_KEY_FILE": keyFile, "LOG_FORMAT": apiKey}),
			errVars: []string{"LOG_FORMAT"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := config.Load(tc.args, getenv(tc.env), nil)
			if tc.errVars != nil {
				if err == nil {
					t.Fatal("accepted")
				}
				checkErr(t, err.Error(), "")
				for _, s := range tc.errVars {
					if !strings.Contains(err.Error(), s) {
						t.Errorf("error %q does not name %s", err, s)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected result %+v", c)
			}
		})
	}
}

// TestValidateInCode covers configurations built in code from Default, as
// the bench, the demo and the app tests build them.
func TestValidateInCode(t *testing.T) {
	c := config.Default()
	if err := c.Validate(); err == nil || !strings.HasPrefix(err.Error(), "config: KAFKA_BROKERS: required") {
		t.Fatalf("Default().Validate() = %v", err)
	}
	c.KafkaBrokers = []string{"localhost:9092"}
	c.KafkaGroupID = "g"
	c.MoEngageWorkspaceID = "ws"
	c.MoEngageDataAPIKey = config.NewSecret(apiKey)
	c.KafkaTopics = []string{"in"}
	c.MoEngageDC = "101"
	c.KafkaSASLMechanism = "scram-sha-512"
	c.KafkaSASLUsername = "alice"
	c.KafkaSASLPassword = config.NewSecret(saslPassword)
	c.LogFormat = "TEXT"
	c.MoEngageBaseURL = ""
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.KafkaDLQTopic != "in.dlq" || c.MoEngageBaseURL != "https://api-101.moengage.com" ||
		c.KafkaSASLMechanism != "SCRAM-SHA-512" || c.LogFormat != "text" {
		t.Fatalf("not normalised: %+v", c)
	}

	for _, tc := range []struct {
		env    string
		mutate func(*config.Config)
	}{
		{"RATE_LIMIT_RPM", func(c *config.Config) { c.RateLimitRPM = -0.5 }},
		{"KAFKA_BROKERS", func(c *config.Config) { c.KafkaBrokers = nil }},
		{"MOENGAGE_BASE_URL", func(c *config.Config) { c.MoEngageBaseURL = "mailto:x@y" }},
		{"KAFKA_DLQ_TOPIC", func(c *config.Config) { c.KafkaDLQTopic = "in" }},
		{"LOG_FORMAT", func(c *config.Config) { c.LogFormat = apiKey }},
		{"MOENGAGE_DC", func(c *config.Config) { c.MoEngageDC = saslPassword }},
	} {
		t.Run(tc.env, func(t *testing.T) {
			bad := c
			tc.mutate(&bad)
			err := bad.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			checkErr(t, err.Error(), tc.env)
		})
	}
}

func TestCAFile(t *testing.T) {
	ca := writeFile(t, "ca.pem", "# comment\n"+caPEM(t))
	c, err := config.Load([]string{"--kafka-tls-ca-file=" + ca}, getenv(required()), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.KafkaTLS || c.KafkaTLSCAFile != ca {
		t.Fatalf("TLS %v, CA %q", c.KafkaTLS, c.KafkaTLSCAFile)
	}
	key := writeFile(t, "key.pem", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
	_, err = config.Load([]string{"--kafka-tls-ca-file=" + key}, getenv(required()), nil)
	if err == nil || !strings.Contains(err.Error(), "KAFKA_TLS_CA_FILE") || !strings.Contains(err.Error(), key) ||
		strings.Contains(err.Error(), "PRIVATE") {
		t.Fatalf("a PEM file without a certificate: %v", err)
	}
}

// TestNoDangerousDefaults (issue 19 §4): the brokers, the group and the data
// center have no default (the DC is not needed when MOENGAGE_BASE_URL names
// the endpoint), and no client-side limit (RATE_LIMIT_RPM=0) is refused
// against anything but a loopback API.
func TestNoDangerousDefaults(t *testing.T) {
	for _, env := range []string{"KAFKA_BROKERS", "KAFKA_GROUP_ID", "MOENGAGE_DC"} {
		t.Run("without "+env, func(t *testing.T) {
			_, err := config.Load(nil, getenv(with(required(), map[string]string{env: ""})), nil)
			if err == nil {
				t.Fatalf("accepted without %s", env)
			}
			checkErr(t, err.Error(), env)
			if !strings.Contains(err.Error(), "required") {
				t.Errorf("error %q does not say %s is required", err, env)
			}
		})
	}
	t.Run("base URL instead of DC", func(t *testing.T) {
		c, err := config.Load(nil, getenv(with(required(), map[string]string{"MOENGAGE_DC": "", "MOENGAGE_BASE_URL": "https://proxy.example:8443"})), nil)
		if err != nil || c.MoEngageBaseURL != "https://proxy.example:8443" {
			t.Fatalf("a base URL without a DC: %v %q", err, c.MoEngageBaseURL)
		}
	})
	for _, tc := range []struct {
		over map[string]string
		ok   bool
	}{
		{map[string]string{}, false}, // the real API, from MOENGAGE_DC
		{map[string]string{"MOENGAGE_BASE_URL": "https://api-02.moengage.com"}, false},
		{map[string]string{"MOENGAGE_BASE_URL": "http://emulator:8080", "MOENGAGE_ALLOW_INSECURE": "true"}, false},
		{map[string]string{"MOENGAGE_BASE_URL": "http://127.0.0.1:8080"}, true},
		{map[string]string{"MOENGAGE_BASE_URL": "http://localhost:8080"}, true},
		{map[string]string{"MOENGAGE_BASE_URL": "http://[::1]:8080"}, true},
	} {
		t.Run(fmt.Sprint("RATE_LIMIT_RPM=0 ", tc.over), func(t *testing.T) {
			_, err := config.Load(nil, getenv(with(required(), with(tc.over, map[string]string{"RATE_LIMIT_RPM": "0"}))), nil)
			if tc.ok {
				if err != nil {
					t.Fatalf("refused against a loopback API: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted no client-side limit against a non-loopback API")
			}
			checkErr(t, err.Error(), "RATE_LIMIT_RPM")
		})
	}
	c := config.Default() // in code, too
	c.KafkaBrokers, c.KafkaGroupID, c.MoEngageDC = []string{"b:9092"}, "g", "03"
	c.MoEngageWorkspaceID, c.MoEngageDataAPIKey = "ws", config.NewSecret(apiKey)
	c.RateLimitRPM = 0
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "RATE_LIMIT_RPM") {
		t.Fatalf("Validate of RATE_LIMIT_RPM=0 against api-03: %v", err)
	}
}
