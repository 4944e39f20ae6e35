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
	// value is the setting's value in c for Config.LogValue; a secret's is
	// only whether it is set. nil only on *_FILE settings, which are not
	// logged.
	value func(c *Config) slog.Value
}

func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

// str is a string setting: field gets the value as norm leaves it.
func str(env, def, help string, norm func(string) string, field func(*Config) *string) setting {
	return setting{Var: Var{Env: env, Flag: flagName(env), Default: def, Help: help},
		set:   func(c *Config, v string) bool { *field(c) = norm(v); return true },
		value: func(c *Config) slog.Value { return slog.StringValue(*field(c)) }}
}

// listVar is a comma-separated setting (see list), logged comma-joined.
func listVar(env, def, help string, field func(*Config) *[]string) setting {
	return setting{Var: Var{Env: env, Flag: flagName(env), Default: def, Help: help},
		set:   func(c *Config, v string) bool { *field(c) = list(v); return true },
		value: func(c *Config) slog.Value { return slog.StringValue(strings.Join(*field(c), ",")) }}
}

// The normalisations of string settings.
func asIs(v string) string      { return v }
func upperTrim(v string) string { return strings.ToUpper(strings.TrimSpace(v)) }
func lowerTrim(v string) string { return strings.ToLower(strings.TrimSpace(v)) }
func trimURL(v string) string   { return strings.TrimRight(strings.TrimSpace(v), "/") }

func parsed(env, def, kind, help string, set func(*Config, string) bool) setting {
	return setting{Var: Var{Env: env, Flag: flagName(env), Default: def, Help: help}, kind: kind, set: set}
}

// secretVar is a credential: it is logged only as whether it is set.
func secretVar(env, help string, field func(*Config) *Secret) setting {
	return setting{Var: Var{Env: env, Flag: flagName(env), Help: help, Secret: true},
		set:   func(c *Config, v string) bool { *field(c) = NewSecret(v); return true },
		value: func(c *Config) slog.Value { return slog.BoolValue(field(c).Reveal() != "") }}
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
	st.value = func(c *Config) slog.Value { return slog.BoolValue(*field(c)) }
	return st
}

func durationVar(env, def, help string, field func(*Config) *time.Duration) setting {
	st := parsed(env, def, "duration", help, func(c *Config, v string) bool {
		d, err := time.ParseDuration(strings.TrimSpace(v))
		*field(c) = d
		return err == nil
	})
	st.value = func(c *Config) slog.Value { return slog.DurationValue(*field(c)) }
	return st
}

func intVar(env, def, help string, field func(*Config) *int) setting {
	st := parsed(env, def, "integer", help, func(c *Config, v string) bool {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		*field(c) = n
		return err == nil
	})
	st.value = func(c *Config) slog.Value { return slog.IntValue(*field(c)) }
	return st
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
	logLevel.value = func(c *Config) slog.Value { return slog.StringValue(c.LogLevel.String()) }
	rpm := parsed("RATE_LIMIT_RPM", "300", "number",
		"fleet-wide requests per minute (0: no client-side limit, accepted only with a loopback MOENGAGE_BASE_URL: the emulator and benchmarks)",
		func(c *Config, v string) bool {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			c.RateLimitRPM = f
			return err == nil && !math.IsNaN(f) && !math.IsInf(f, 0)
		})
	rpm.value = func(c *Config) slog.Value { return slog.Float64Value(c.RateLimitRPM) }

	sharing := parsed("RATE_LIMIT_SHARING", "true", "boolean",
		"share RATE_LIMIT_RPM by demand over KAFKA_BUDGET_TOPIC (false: each replica keeps its static share, partitions ÷ all partitions)",
		func(c *Config, v string) bool {
			b, err := strconv.ParseBool(strings.TrimSpace(v))
			c.RateLimitSharing = b
			return err == nil
		})
	sharing.isBool = true
	sharing.value = func(c *Config) slog.Value { return slog.BoolValue(c.RateLimitSharing) }

	return []setting{
		listVar("KAFKA_BROKERS", "", "required: comma-separated bootstrap servers (no default)",
			func(c *Config) *[]string { return &c.KafkaBrokers }),
		listVar("KAFKA_TOPIC", "cohort-membership-changes", "topic(s) to consume, comma-separated",
			func(c *Config) *[]string { return &c.KafkaTopics }),
		str("KAFKA_GROUP_ID", "", "required: consumer group (no default: a shared one lets a staging deployment join production's group)",
			strings.TrimSpace, func(c *Config) *string { return &c.KafkaGroupID }),
		durationVar("KAFKA_SESSION_TIMEOUT", "10s", "consumer-group session timeout: a replica silent this long loses its partitions, and its share of the budget, to the others (6s to 5m)",
			func(c *Config) *time.Duration { return &c.KafkaSessionTimeout }),
		durationVar("KAFKA_HEARTBEAT_INTERVAL", "3s", "consumer-group heartbeat interval, under a third of KAFKA_SESSION_TIMEOUT",
			func(c *Config) *time.Duration { return &c.KafkaHeartbeatInterval }),
		str("KAFKA_DLQ_TOPIC", "<first topic>.dlq", "dead-letter topic",
			strings.TrimSpace, func(c *Config) *string { return &c.KafkaDLQTopic }),
		str("KAFKA_BUDGET_TOPIC", "<KAFKA_GROUP_ID>.budget", "compacted topic the replicas share RATE_LIMIT_RPM over (created if missing)",
			strings.TrimSpace, func(c *Config) *string { return &c.KafkaBudgetTopic }),
		intVar("PARKING_TOPIC_PARTITIONS", "12", "partitions of the parking topic (KAFKA_GROUP_ID + .parked) when the worker creates it (an existing topic keeps its own)",
			func(c *Config) *int { return &c.ParkingTopicPartitions }),
		intVar("PARKING_TOPIC_REPLICATION", "3", "replication factor of the parking topic when the worker creates it, capped at the number of brokers",
			func(c *Config) *int { return &c.ParkingTopicReplication }),
		durationVar("PARKING_TOPIC_RETENTION", "168h", "retention of the parking topic when the worker creates it: a workspace stuck longer loses its oldest parked changes (at least 1h)",
			func(c *Config) *time.Duration { return &c.ParkingTopicRetention }),
		boolVar("KAFKA_TLS", "connect to Kafka with TLS",
			func(c *Config) *bool { return &c.KafkaTLS }),
		str("KAFKA_TLS_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates (implies TLS)",
			strings.TrimSpace, func(c *Config) *string { return &c.KafkaTLSCAFile }),
		str("KAFKA_TLS_CERT_FILE", "", "PEM file of the client certificate (chain) for mutual TLS, with KAFKA_TLS_KEY_FILE (implies TLS); re-read when it changes",
			strings.TrimSpace, func(c *Config) *string { return &c.KafkaTLSCertFile }),
		str("KAFKA_TLS_KEY_FILE", "", "PEM file of the client certificate's private key (unencrypted PKCS#8, PKCS#1 or EC); re-read when it changes",
			strings.TrimSpace, func(c *Config) *string { return &c.KafkaTLSKeyFile }),
		str("KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM (Amazon MSK IAM: credentials and AWS_REGION from the AWS SDK's default chain; implies TLS) (empty: no SASL)",
			upperTrim, func(c *Config) *string { return &c.KafkaSASLMechanism }),
		str("KAFKA_SASL_USERNAME", "", "SASL username",
			asIs, func(c *Config) *string { return &c.KafkaSASLUsername }),
		secretVar("KAFKA_SASL_PASSWORD", "SASL password (environment only: the flag is refused, since any process can read a command line)",
			func(c *Config) *Secret { return &c.KafkaSASLPassword }),
		fileVar("KAFKA_SASL_PASSWORD", "file holding the SASL password", true),
		boolVar("KAFKA_SASL_ALLOW_INSECURE", "accept SASL PLAIN without TLS to brokers off the loopback interface (the password crosses the network in clear text)",
			func(c *Config) *bool { return &c.KafkaSASLAllowInsecure }),
		str("MOENGAGE_DC", "", "required unless MOENGAGE_BASE_URL is set: MoEngage data center, 01, 02, 03, 04, 05, 06 or 101; the base URL is https://api-{dc}.moengage.com (no default: a wrong one sends the key and uids to another region)",
			strings.TrimSpace, func(c *Config) *string { return &c.MoEngageDC }),
		str("MOENGAGE_BASE_URL", "", "overrides the URL built from the DC (emulator, proxies)",
			trimURL, func(c *Config) *string { return &c.MoEngageBaseURL }),
		boolVar("MOENGAGE_ALLOW_INSECURE", "accept an http:// MOENGAGE_BASE_URL off the loopback interface (the API key crosses the network in clear text)",
			func(c *Config) *bool { return &c.MoEngageAllowInsecure }),
		str("MOENGAGE_WORKSPACE_ID", "", "required unless MOENGAGE_WORKSPACES_DIR is set: the default workspace ID, for events naming none in workspace_id (Basic-auth username and MOE-APPKEY header)",
			strings.TrimSpace, func(c *Config) *string { return &c.MoEngageWorkspaceID }),
		fileVar("MOENGAGE_WORKSPACE_ID", "file holding the workspace ID", false),
		secretVar("MOENGAGE_DATA_API_KEY", "required with MOENGAGE_WORKSPACE_ID, unless MOENGAGE_WORKSPACES_DIR holds <MOENGAGE_WORKSPACE_ID>.key: the default workspace's Data API key (Basic-auth password; environment only: the flag is refused, since any process can read a command line)",
			func(c *Config) *Secret { return &c.MoEngageDataAPIKey }),
		fileVar("MOENGAGE_DATA_API_KEY", "file holding the Data API key", true),
		str("MOENGAGE_WORKSPACES_DIR", "", "registry of workspaces, a flat directory as the kubelet mounts a Secret (or a projected Secret + ConfigMap): <workspace_id>.key = Data API key (required), <workspace_id>.dc, <workspace_id>.rate_limit_rpm (optional; default MOENGAGE_DC / RATE_LIMIT_RPM); changes take effect within 5 s, no restart; each workspace has its own budget",
			strings.TrimSpace, func(c *Config) *string { return &c.MoEngageWorkspacesDir }),
		durationVar("MOENGAGE_MAX_PROCESSING_TIME", "30s", "how long after a request was sent the API may still process it; longer than the 15s attempt timeout (a request left without an answer holds the other action for its cohort this long; a partition taken over without proof of a clean hand-over, e.g. after a crash or at a first start, is read only this long after the assignment)",
			func(c *Config) *time.Duration { return &c.MoEngageMaxProcessingTime }),
		str("COHORTSYNC_PARTNER", "", "partner used when an event has none",
			strings.TrimSpace, func(c *Config) *string { return &c.CohortsyncPartner }),
		intVar("BATCH_MAX_BYTES", "128000", "request body cap in bytes (512 to 131072)",
			func(c *Config) *int { return &c.BatchMaxBytes }),
		intVar("BATCH_MAX_MEMBERS", "0", "optional member cap per request (0: derived from BATCH_MAX_BYTES only)",
			func(c *Config) *int { return &c.BatchMaxMembers }),
		durationVar("BATCH_WINDOW", "5s", "longest an open batch waits before it is due",
			func(c *Config) *time.Duration { return &c.BatchWindow }),
		rpm,
		sharing,
		intVar("MAX_IN_FLIGHT", "4", "concurrent requests per replica, and batches being sent per workspace",
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
			strings.TrimSpace, func(c *Config) *string { return &c.HTTPAddr }),
		durationVar("SHUTDOWN_TIMEOUT", "30s", "drain budget on SIGTERM/SIGINT",
			func(c *Config) *time.Duration { return &c.ShutdownTimeout }),
		logLevel,
		str("LOG_FORMAT", "json", "json or text",
			lowerTrim, func(c *Config) *string { return &c.LogFormat }),
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

// LogValue implements slog.LogValuer: a summary of c for the start-up log
// line, one attribute per variable of settings() (its name in lower case;
// the *_FILE variants, which have no value, are left out). It holds no secret: for each
// credential it says only whether it is set (the name + "_set").
func (c Config) LogValue() slog.Value {
	sts := settings()
	attrs := make([]slog.Attr, 0, len(sts))
	for _, st := range sts {
		if st.value == nil { // a *_FILE variant (TestLogValueFromSettings)
			continue
		}
		key := strings.ToLower(st.Env)
		if st.Secret {
			key += "_set"
		}
		attrs = append(attrs, slog.Attr{Key: key, Value: st.value(&c)})
	}
	return slog.GroupValue(attrs...)
}
