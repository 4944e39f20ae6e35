package config

import (
	"fmt"
	"io"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"
)

// Var describes one setting, for --help and for the README configuration
// table. Vars lists them all.
type Var struct {
	// Env is the environment variable, e.g. KAFKA_BROKERS.
	Env string
	// Flag is the command-line flag without its dashes: Env in kebab case,
	// e.g. kafka-brokers.
	Flag string
	// Default is the value used when neither the environment nor a flag sets
	// the variable, as text ("" when there is none; "<first topic>.dlq" for
	// the derived dead-letter topic).
	Default string
	// Help says what the setting does, in one line.
	Help string
	// Secret marks a credential (or a file holding one): its value is never
	// shown.
	Secret bool
}

// setting is a Var plus how to parse it into a Config.
type setting struct {
	Var
	// isBool makes the flag a boolean flag: --kafka-tls alone means true.
	isBool bool
	// fileOf, on a *_FILE variable, names the variable whose value the file
	// holds. Such settings have no set func: Load reads the file and feeds
	// the content to the other variable.
	fileOf string
	// kind and hint describe the expected syntax in parse errors:
	// `invalid <kind> "<value>"<hint>`.
	kind, hint string
	// set parses v into c. It reports whether v is well formed; range and
	// cross-field checks belong to Validate, so that configurations built in
	// code are checked too.
	set func(c *Config, v string) bool
}

func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

func str(env, def, help string, set func(*Config, string)) setting {
	return setting{Var: Var{Env: env, Flag: flagName(env), Default: def, Help: help},
		set: func(c *Config, v string) bool { set(c, v); return true }}
}

func parsed(env, def, kind, help string, set func(*Config, string) bool) setting {
	return setting{Var: Var{Env: env, Flag: flagName(env), Default: def, Help: help}, kind: kind, set: set}
}

func secretVar(env, help string, set func(*Config, Secret)) setting {
	st := str(env, "", help, func(c *Config, v string) { set(c, NewSecret(v)) })
	st.Secret = true
	return st
}

func fileVar(target, help string, secret bool) setting {
	env := target + "_FILE"
	return setting{Var: Var{Env: env, Flag: flagName(env), Help: help, Secret: secret}, fileOf: target}
}

// list splits a comma-separated value, dropping blanks around and between
// the commas.
func list(v string) []string {
	var out []string
	for p := range strings.SplitSeq(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func boolVar(env, help string, field func(*Config) *bool) setting {
	st := parsed(env, "false", "boolean", help, func(c *Config, v string) bool {
		b, err := strconv.ParseBool(strings.TrimSpace(v))
		*field(c) = b
		return err == nil
	})
	st.isBool = true
	return st
}

func durationVar(env, def, help string, field func(*Config) *time.Duration) setting {
	return parsed(env, def, "duration", help, func(c *Config, v string) bool {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		*field(c) = d
		return err == nil
	})
}

func intVar(env, def, help string, field func(*Config) *int) setting {
	return parsed(env, def, "integer", help, func(c *Config, v string) bool {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		*field(c) = n
		return err == nil
	})
}

// parseLevel accepts exactly the four slog level names, in any case.
// (slog.Level.UnmarshalText also accepts offsets such as "info+2", which
// the contract does not name.)
func parseLevel(v string) (slog.Level, bool) {
	switch strings.ToLower(strings.TrimSpace(v)) {
	case "debug":
		return slog.LevelDebug, true
	case "info":
		return slog.LevelInfo, true
	case "warn":
		return slog.LevelWarn, true
	case "error":
		return slog.LevelError, true
	}
	return 0, false
}

// settings lists every variable in the DESIGN.md order; each *_FILE variant
// follows the variable it provides. The Help texts are rendered into the
// README by MarkdownTable, so changing one means regenerating the README
// table (UPDATE_README=1 go test ./internal/config/).
func settings() []setting {
	logLevel := parsed("LOG_LEVEL", "info", "log level", "debug, info, warn or error", func(c *Config, v string) bool {
		l, ok := parseLevel(v)
		c.LogLevel = l
		return ok
	})
	logLevel.hint = " (want debug, info, warn or error)"
	rpm := parsed("RATE_LIMIT_RPM", "300", "number",
		"fleet-wide requests per minute (0: no client-side limit, accepted only with a loopback MOENGAGE_BASE_URL: the emulator and benchmarks)",
		func(c *Config, v string) bool {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			c.RateLimitRPM = f
			return err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
		})

	sharing := parsed("RATE_LIMIT_SHARING", "true", "boolean",
		"share RATE_LIMIT_RPM by demand over KAFKA_BUDGET_TOPIC (false: each replica keeps its static share, partitions ÷ all partitions)",
		func(c *Config, v string) bool {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			c.RateLimitSharing = b
			return err == nil
		})
	sharing.isBool = true

	return []setting{
		str("KAFKA_BROKERS", "", "required: comma-separated bootstrap servers (no default)",
			func(c *Config, v string) { c.KafkaBrokers = list(v) }),
		str("KAFKA_TOPIC", "cohort-membership-changes", "topic(s) to consume, comma-separated",
			func(c *Config, v string) { c.KafkaTopics = list(v) }),
		str("KAFKA_GROUP_ID", "", "required: consumer group (no default: a shared one lets a staging deployment join production's group)",
			func(c *Config, v string) { c.KafkaGroupID = strings.TrimSpace(v) }),
		durationVar("KAFKA_SESSION_TIMEOUT", "10s", "consumer-group session timeout: a replica silent this long loses its partitions, and its share of the budget, to the others (6s to 5m)",
			func(c *Config) *time.Duration { return &c.KafkaSessionTimeout }),
		durationVar("KAFKA_HEARTBEAT_INTERVAL", "3s", "consumer-group heartbeat interval, under a third of KAFKA_SESSION_TIMEOUT",
			func(c *Config) *time.Duration { return &c.KafkaHeartbeatInterval }),
		str("KAFKA_DLQ_TOPIC", "<first topic>.dlq", "dead-letter topic",
			func(c *Config, v string) { c.KafkaDLQTopic = strings.TrimSpace(v) }),
		str("KAFKA_BUDGET_TOPIC", "<KAFKA_GROUP_ID>.budget", "compacted topic the replicas share RATE_LIMIT_RPM over (created if missing)",
			func(c *Config, v string) { c.KafkaBudgetTopic = strings.TrimSpace(v) }),
		boolVar("KAFKA_TLS", "connect to Kafka with TLS",
			func(c *Config) *bool { return &c.KafkaTLS }),
		str("KAFKA_TLS_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates (implies TLS)",
			func(c *Config, v string) { c.KafkaTLSCAFile = strings.TrimSpace(v) }),
		str("KAFKA_TLS_CERT_FILE", "", "PEM file of the client certificate (chain) for mutual TLS, with KAFKA_TLS_KEY_FILE (implies TLS); re-read when it changes",
			func(c *Config, v string) { c.KafkaTLSCertFile = strings.TrimSpace(v) }),
		str("KAFKA_TLS_KEY_FILE", "", "PEM file of the client certificate's private key (unencrypted PKCS#8, PKCS#1 or EC); re-read when it changes",
			func(c *Config, v string) { c.KafkaTLSKeyFile = strings.TrimSpace(v) }),
		str("KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM (Amazon MSK IAM: credentials and AWS_REGION from the AWS SDK's default chain; implies TLS) (empty: no SASL)",
			func(c *Config, v string) { c.KafkaSASLMechanism = strings.ToUpper(strings.TrimSpace(v)) }),
		str("KAFKA_SASL_USERNAME", "", "SASL username",
			func(c *Config, v string) { c.KafkaSASLUsername = v }),
		secretVar("KAFKA_SASL_PASSWORD", "SASL password (environment only: the flag is refused, since any process can read a command line)",
			func(c *Config, s Secret) { c.KafkaSASLPassword = s }),
		fileVar("KAFKA_SASL_PASSWORD", "file holding the SASL password", true),
		boolVar("KAFKA_SASL_ALLOW_INSECURE", "accept SASL PLAIN without TLS to brokers off the loopback interface (the password crosses the network in clear text)",
			func(c *Config) *bool { return &c.KafkaSASLAllowInsecure }),
		str("MOENGAGE_DC", "", "required unless MOENGAGE_BASE_URL is set: MoEngage data center, 01, 02, 03, 04, 05, 06 or 101; the base URL is https://api-{dc}.moengage.com (no default: a wrong one sends the key and uids to another region)",
			func(c *Config, v string) { c.MoEngageDC = strings.TrimSpace(v) }),
		str("MOENGAGE_BASE_URL", "", "overrides the URL built from the DC (emulator, proxies)",
			func(c *Config, v string) { c.MoEngageBaseURL = strings.TrimRight(strings.TrimSpace(v), "/") }),
		boolVar("MOENGAGE_ALLOW_INSECURE", "accept an http:// MOENGAGE_BASE_URL off the loopback interface (the API key crosses the network in clear text)",
			func(c *Config) *bool { return &c.MoEngageAllowInsecure }),
		str("MOENGAGE_WORKSPACE_ID", "", "required: workspace ID (Basic-auth username and MOE-APPKEY header)",
			func(c *Config, v string) { c.MoEngageWorkspaceID = strings.TrimSpace(v) }),
		fileVar("MOENGAGE_WORKSPACE_ID", "file holding the workspace ID", false),
		secretVar("MOENGAGE_DATA_API_KEY", "required: Data API key (Basic-auth password; environment only: the flag is refused, since any process can read a command line)",
			func(c *Config, s Secret) { c.MoEngageDataAPIKey = s }),
		fileVar("MOENGAGE_DATA_API_KEY", "file holding the Data API key", true),
		durationVar("MOENGAGE_MAX_PROCESSING_TIME", "30s", "how long after a request was sent the API may still process it; longer than the 15s attempt timeout (a request left without an answer holds the other action for its cohort this long; a partition taken over without proof of a clean hand-over, e.g. after a crash or at a first start, is read only this long after the assignment)",
			func(c *Config) *time.Duration { return &c.MoEngageMaxProcessingTime }),
		str("COHORTSYNC_PARTNER", "", "partner used when an event has none",
			func(c *Config, v string) { c.CohortsyncPartner = strings.TrimSpace(v) }),
		intVar("BATCH_MAX_BYTES", "128000", "request body cap in bytes (512 to 131072)",
			func(c *Config) *int { return &c.BatchMaxBytes }),
		intVar("BATCH_MAX_MEMBERS", "0", "optional member cap per request (0: derived from BATCH_MAX_BYTES only)",
			func(c *Config) *int { return &c.BatchMaxMembers }),
		durationVar("BATCH_WINDOW", "5s", "longest an open batch waits before it is due",
			func(c *Config) *time.Duration { return &c.BatchWindow }),
		rpm,
		sharing,
		intVar("MAX_IN_FLIGHT", "4", "concurrent requests per replica",
			func(c *Config) *int { return &c.MaxInFlight }),
		intVar("MAX_PENDING_MEMBERS", "1000000", "backpressure threshold: unsettled member changes before fetching stops",
			func(c *Config) *int { return &c.MaxPendingMembers }),
		durationVar("RETRY_INITIAL_INTERVAL", "500ms", "first backoff interval for retryable failures",
			func(c *Config) *time.Duration { return &c.RetryInitialInterval }),
		durationVar("RETRY_MAX_INTERVAL", "60s", "longest backoff interval",
			func(c *Config) *time.Duration { return &c.RetryMaxInterval }),
		durationVar("RETRY_MAX_ELAPSED", "0", "give up a batch after this long (0: retry forever; giving up stops the worker, nothing is lost)",
			func(c *Config) *time.Duration { return &c.RetryMaxElapsed }),
		str("HTTP_ADDR", ":9090", "address of /metrics, /healthz, /readyz (empty: disabled)",
			func(c *Config, v string) { c.HTTPAddr = strings.TrimSpace(v) }),
		durationVar("SHUTDOWN_TIMEOUT", "30s", "drain budget on SIGTERM/SIGINT",
			func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
		logLevel,
		str("LOG_FORMAT", "json", "json or text",
			func(c *Config, v string) { c.LogFormat = strings.ToLower(strings.TrimSpace(v)) }),
	}
}

// Vars lists every setting in the DESIGN.md order, including the *_FILE
// variants (each right after the variable it provides). It drives Usage,
// MarkdownTable and the tests that check the README and the deployment
// manifests; Load does not read it, so changing it changes nothing.
var Vars = func() []Var {
	sts := settings()
	out := make([]Var, len(sts))
	for i, st := range sts {
		out[i] = st.Var
	}
	return out
}()

// Usage writes the help text: every variable with its flag, environment
// name, meaning and default. Secrets are listed without any value.
func Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: cohortsync-worker [flags]\n\n")
	fmt.Fprintf(w, "Every setting is an environment variable and a flag of the same name in kebab case;\n")
	fmt.Fprintf(w, "flags override the environment. A *_FILE variable reads the value of the variable\n")
	fmt.Fprintf(w, "it names from a file (trailing newlines removed); set one of the two, not both.\n")
	fmt.Fprintf(w, "The secrets are refused as flags: set them in the environment or use their *_FILE form.\n\n")
	for _, v := range Vars {
		def := v.Default
		if v.Secret || def == "" {
			def = "none"
		}
		env := v.Env
		if v.Secret {
			env += ", secret"
		}
		fmt.Fprintf(w, "  --%s  (%s)\n\t%s (default: %s)\n", v.Flag, env, v.Help, def)
	}
	fmt.Fprintf(w, "\n  --version\n\tprint the version and exit\n")
}

// MarkdownTable renders the README's configuration table from Vars: one
// row per variable with its flag, default ("—" when none) and meaning. The
// README holds it between <!-- config-table:start --> and
// <!-- config-table:end -->, and a test fails when the two differ.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| variable | flag | default | meaning |\n| --- | --- | --- | --- |\n")
	for _, v := range Vars {
		def := "—"
		if v.Default != "" {
			def = "`" + v.Default + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | %s | %s |\n", v.Env, v.Flag, def, strings.ReplaceAll(v.Help, "|", `\|`))
	}
	return b.String()
}
