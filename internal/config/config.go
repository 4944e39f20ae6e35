// Package config reads the worker's configuration from the environment and
// the command line. The names and defaults are a contract (DESIGN.md,
// "Configuration"): every variable is also a --flag of the same name in
// kebab case, and flags win over the environment.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Secret holds a credential. Every way of printing it renders "[REDACTED]"
// (or "" when empty); Reveal returns the value.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{s} }

// Reveal returns the secret value.
func (s Secret) Reveal() string { return s.v }

func (s Secret) redacted() string {
	if s.v == "" {
		return ""
	}
	return "[REDACTED]"
}

// String implements fmt.Stringer.
func (s Secret) String() string { return s.redacted() }

// GoString implements fmt.GoStringer.
func (s Secret) GoString() string { return `config.Secret("` + s.redacted() + `")` }

// Format implements fmt.Formatter for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.redacted()) }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.redacted())), nil }

// MarshalText implements encoding.TextMarshaler.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.redacted()), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.redacted()) }

// Config is the worker's configuration. See Vars for each field's variable.
type Config struct {
	KafkaBrokers         []string
	KafkaTopics          []string
	KafkaGroupID         string
	KafkaDLQTopic        string
	KafkaTLS             bool
	KafkaTLSCAFile       string
	KafkaSASLMechanism   string // "", PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
	KafkaSASLUsername    string
	KafkaSASLPassword    Secret
	MoEngageDC           string
	MoEngageBaseURL      string // derived from MoEngageDC when empty
	MoEngageWorkspaceID  string
	MoEngageDataAPIKey   Secret
	CohortsyncPartner    string
	BatchMaxBytes        int
	BatchMaxMembers      int // 0: only the byte cap limits members
	BatchWindow          time.Duration
	RateLimitRPM         float64 // 0: no client-side limit (emulator and benchmarks only)
	MaxInFlight          int
	MaxPendingMembers    int
	RetryInitialInterval time.Duration
	RetryMaxInterval     time.Duration
	RetryMaxElapsed      time.Duration // 0: retry forever
	HTTPAddr             string        // "": no HTTP endpoints
	ShutdownTimeout      time.Duration
	LogLevel             slog.Level
	LogFormat            string // json or text
}

// Var describes one setting, for --help and the README table.
type Var struct {
	Env, Flag, Default, Help string
	Secret                   bool
}

// DataCenters are the MoEngage data centers.
var DataCenters = []string{"01", "02", "03", "04", "05", "06", "101"}

type setting struct {
	Var
	set func(c *Config, v string) error
}

func flagName(env string) string { return strings.ToLower(strings.ReplaceAll(env, "_", "-")) }

func s(env, def, help string, set func(*Config, string) error) setting {
	return setting{Var{Env: env, Flag: flagName(env), Default: def, Help: help}, set}
}

func secret(env, help string, set func(*Config, string) error) setting {
	st := s(env, "", help, set)
	st.Secret = true
	return st
}

func list(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func dur(dst *time.Duration) func(*Config, string) error {
	return func(_ *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("invalid duration %q", v)
		}
		*dst = d
		return nil
	}
}

func integer(v string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return 0, fmt.Errorf("invalid integer %q", v)
	}
	return n, nil
}

func boolean(v string) (bool, error) {
	b, err := strconv.ParseBool(strings.TrimSpace(v))
	if err != nil {
		return false, fmt.Errorf("invalid boolean %q", v)
	}
	return b, nil
}

// settings lists every variable in the DESIGN.md order. The *_FILE variants
// follow the variable they provide.
func settings() []setting {
	return []setting{
		s("KAFKA_BROKERS", "localhost:9092", "comma-separated bootstrap servers", func(c *Config, v string) error {
			c.KafkaBrokers = list(v)
			return nil
		}),
		s("KAFKA_TOPIC", "cohort-membership-changes", "topic(s) to consume, comma-separated", func(c *Config, v string) error {
			c.KafkaTopics = list(v)
			return nil
		}),
		s("KAFKA_GROUP_ID", "cohortsync-worker", "consumer group", func(c *Config, v string) error { c.KafkaGroupID = v; return nil }),
		s("KAFKA_DLQ_TOPIC", "<first topic>.dlq", "dead-letter topic", func(c *Config, v string) error { c.KafkaDLQTopic = v; return nil }),
		s("KAFKA_TLS", "false", "connect to Kafka with TLS", func(c *Config, v string) (err error) { c.KafkaTLS, err = boolean(v); return }),
		s("KAFKA_TLS_CA_FILE", "", "PEM file of the CA that signed the brokers' certificates (implies TLS)", func(c *Config, v string) error { c.KafkaTLSCAFile = v; return nil }),
		s("KAFKA_SASL_MECHANISM", "", "SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (empty: no SASL)", func(c *Config, v string) error {
			c.KafkaSASLMechanism = strings.ToUpper(strings.TrimSpace(v))
			return nil
		}),
		s("KAFKA_SASL_USERNAME", "", "SASL username", func(c *Config, v string) error { c.KafkaSASLUsername = v; return nil }),
		secret("KAFKA_SASL_PASSWORD", "SASL password", func(c *Config, v string) error { c.KafkaSASLPassword = NewSecret(v); return nil }),
		secret("KAFKA_SASL_PASSWORD_FILE", "file holding the SASL password", nil),
		s("MOENGAGE_DC", "01", "MoEngage data center: 01, 02, 03, 04, 05, 06 or 101; the base URL is https://api-{dc}.moengage.com", func(c *Config, v string) error { c.MoEngageDC = strings.TrimSpace(v); return nil }),
		s("MOENGAGE_BASE_URL", "", "overrides the URL built from the DC (emulator, proxies)", func(c *Config, v string) error {
			c.MoEngageBaseURL = strings.TrimRight(strings.TrimSpace(v), "/")
			return nil
		}),
		s("MOENGAGE_WORKSPACE_ID", "", "required: workspace ID (Basic-auth username and MOE-APPKEY header)", func(c *Config, v string) error { c.MoEngageWorkspaceID = strings.TrimSpace(v); return nil }),
		s("MOENGAGE_WORKSPACE_ID_FILE", "", "file holding the workspace ID", nil),
		secret("MOENGAGE_DATA_API_KEY", "required: Data API key (Basic-auth password)", func(c *Config, v string) error { c.MoEngageDataAPIKey = NewSecret(v); return nil }),
		secret("MOENGAGE_DATA_API_KEY_FILE", "file holding the Data API key", nil),
		s("COHORTSYNC_PARTNER", "", "partner used when an event has none", func(c *Config, v string) error { c.CohortsyncPartner = v; return nil }),
		s("BATCH_MAX_BYTES", "128000", "request body cap in bytes (512 to 131072)", func(c *Config, v string) (err error) { c.BatchMaxBytes, err = integer(v); return }),
		s("BATCH_MAX_MEMBERS", "0", "optional member cap per request (0: derived from BATCH_MAX_BYTES only)", func(c *Config, v string) (err error) { c.BatchMaxMembers, err = integer(v); return }),
		s("BATCH_WINDOW", "5s", "longest an open batch waits before it is due", func(c *Config, v string) error { return dur(&c.BatchWindow)(c, v) }),
		s("RATE_LIMIT_RPM", "300", "fleet-wide requests per minute (0: no client-side limit; for the emulator and benchmarks only)", func(c *Config, v string) error {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("invalid number %q", v)
			}
			c.RateLimitRPM = f
			return nil
		}),
		s("MAX_IN_FLIGHT", "4", "concurrent requests per replica", func(c *Config, v string) (err error) { c.MaxInFlight, err = integer(v); return }),
		s("MAX_PENDING_MEMBERS", "1000000", "backpressure threshold: unsettled member changes before fetching stops", func(c *Config, v string) (err error) { c.MaxPendingMembers, err = integer(v); return }),
		s("RETRY_INITIAL_INTERVAL", "500ms", "first backoff interval for retryable failures", func(c *Config, v string) error { return dur(&c.RetryInitialInterval)(c, v) }),
		s("RETRY_MAX_INTERVAL", "60s", "longest backoff interval", func(c *Config, v string) error { return dur(&c.RetryMaxInterval)(c, v) }),
		s("RETRY_MAX_ELAPSED", "0", "give up a batch after this long (0: retry forever; giving up stops the worker, nothing is lost)", func(c *Config, v string) error { return dur(&c.RetryMaxElapsed)(c, v) }),
		s("HTTP_ADDR", ":9090", "address of /metrics, /healthz, /readyz (empty: disabled)", func(c *Config, v string) error { c.HTTPAddr = v; return nil }),
		s("SHUTDOWN_TIMEOUT", "30s", "drain budget on SIGTERM/SIGINT", func(c *Config, v string) error { return dur(&c.ShutdownTimeout)(c, v) }),
		s("LOG_LEVEL", "info", "debug, info, warn or error", func(c *Config, v string) error {
			return c.LogLevel.UnmarshalText([]byte(strings.TrimSpace(v)))
		}),
		s("LOG_FORMAT", "json", "json or text", func(c *Config, v string) error { c.LogFormat = strings.ToLower(strings.TrimSpace(v)); return nil }),
	}
}

// Vars lists every setting in the DESIGN.md order.
var Vars = func() []Var {
	var out []Var
	for _, st := range settings() {
		out = append(out, st.Var)
	}
	return out
}()

// fileVars maps a *_FILE variable to the variable it provides.
var fileVars = map[string]string{
	"KAFKA_SASL_PASSWORD_FILE":   "KAFKA_SASL_PASSWORD",
	"MOENGAGE_WORKSPACE_ID_FILE": "MOENGAGE_WORKSPACE_ID",
	"MOENGAGE_DATA_API_KEY_FILE": "MOENGAGE_DATA_API_KEY",
}

// Default returns the configuration with every default applied and no
// credentials.
func Default() Config {
	var c Config
	for _, st := range settings() {
		if st.set == nil || st.Default == "" || strings.HasPrefix(st.Default, "<") {
			continue
		}
		if err := st.set(&c, st.Default); err != nil {
			panic("config: bad default for " + st.Env + ": " + err.Error())
		}
	}
	return c
}

// Usage writes the help text: every variable with its flag and default.
func Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: cohortsync-worker [flags]\n\n")
	fmt.Fprintf(w, "Every setting is an environment variable and a flag; flags win.\n\n")
	for _, v := range Vars {
		def := v.Default
		if v.Secret || def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s  (%s)\n\t%s (default: %s)\n", v.Flag, v.Env, v.Help, def)
	}
	fmt.Fprintf(w, "\n  --version\n\tprint the version and exit\n")
}

// MarkdownTable renders the README's configuration table from Vars.
func MarkdownTable() string {
	var b strings.Builder
	b.WriteString("| variable | flag | default | meaning |\n| --- | --- | --- | --- |\n")
	for _, v := range Vars {
		def := v.Default
		if def == "" {
			def = "—"
		} else {
			def = "`" + def + "`"
		}
		fmt.Fprintf(&b, "| `%s` | `--%s` | %s | %s |\n", v.Env, v.Flag, def, strings.ReplaceAll(v.Help, "|", `\|`))
	}
	return b.String()
}

// Load builds the configuration: defaults, then the environment, then the
// command-line flags. -h or --help writes Usage to usage and returns
// flag.ErrHelp. Errors are one line naming the variable and never contain a
// secret.
func Load(args []string, getenv func(string) string, usage io.Writer) (Config, error) {
	if usage == nil {
		usage = io.Discard
	}
	values := map[string]string{}
	set := map[string]bool{}
	sts := settings()
	for _, st := range sts {
		if v := getenv(st.Env); v != "" {
			values[st.Env], set[st.Env] = v, true
		}
	}
	fs := flag.NewFlagSet("cohortsync-worker", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, st := range sts {
		fs.Func(st.Flag, st.Help, func(v string) error {
			values[st.Env], set[st.Env] = v, true
			return nil
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			Usage(usage)
			return Config{}, flag.ErrHelp
		}
		return Config{}, fmt.Errorf("config: %s", firstLine(err.Error()))
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	for fileVar, target := range fileVars {
		if !set[fileVar] {
			continue
		}
		if set[target] {
			return Config{}, fmt.Errorf("config: set either %s or %s, not both", target, fileVar)
		}
		path := values[fileVar]
		b, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config: %s: cannot read %s: %v", fileVar, path, errors.Unwrap(err))
		}
		values[target], set[target] = strings.TrimRight(string(b), "\r\n"), true
	}
	c := Default()
	for _, st := range sts {
		if st.set == nil || !set[st.Env] {
			continue
		}
		if err := st.set(&c, values[st.Env]); err != nil {
			if st.Secret {
				return Config{}, fmt.Errorf("config: %s: invalid value", st.Env)
			}
			return Config{}, fmt.Errorf("config: %s: %s", st.Env, firstLine(err.Error()))
		}
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// Validate checks c and fills the derived values (DLQ topic, base URL). It
// returns one error naming the first invalid variable.
func (c *Config) Validate() error {
	bad := func(env, format string, a ...any) error {
		return fmt.Errorf("config: %s: %s", env, fmt.Sprintf(format, a...))
	}
	switch {
	case len(c.KafkaBrokers) == 0:
		return bad("KAFKA_BROKERS", "at least one broker is required")
	case len(c.KafkaTopics) == 0:
		return bad("KAFKA_TOPIC", "at least one topic is required")
	case c.KafkaGroupID == "":
		return bad("KAFKA_GROUP_ID", "must not be empty")
	}
	if c.KafkaDLQTopic == "" {
		c.KafkaDLQTopic = c.KafkaTopics[0] + ".dlq"
	}
	if slices.Contains(c.KafkaTopics, c.KafkaDLQTopic) {
		return bad("KAFKA_DLQ_TOPIC", "%q is also an input topic", c.KafkaDLQTopic)
	}
	if c.KafkaTLSCAFile != "" {
		if _, err := os.Stat(c.KafkaTLSCAFile); err != nil {
			return bad("KAFKA_TLS_CA_FILE", "cannot read %s", c.KafkaTLSCAFile)
		}
		c.KafkaTLS = true
	}
	switch c.KafkaSASLMechanism {
	case "":
	case "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		if c.KafkaSASLUsername == "" {
			return bad("KAFKA_SASL_USERNAME", "required with KAFKA_SASL_MECHANISM=%s", c.KafkaSASLMechanism)
		}
		if c.KafkaSASLPassword.Reveal() == "" {
			return bad("KAFKA_SASL_PASSWORD", "required with KAFKA_SASL_MECHANISM=%s", c.KafkaSASLMechanism)
		}
	default:
		return bad("KAFKA_SASL_MECHANISM", "%q is not PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", c.KafkaSASLMechanism)
	}
	if !slices.Contains(DataCenters, c.MoEngageDC) {
		return bad("MOENGAGE_DC", "%q is not one of %s", c.MoEngageDC, strings.Join(DataCenters, ", "))
	}
	if c.MoEngageBaseURL == "" {
		c.MoEngageBaseURL = "https://api-" + c.MoEngageDC + ".moengage.com"
	}
	if u, err := url.Parse(c.MoEngageBaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return bad("MOENGAGE_BASE_URL", "%q is not an http(s) URL", c.MoEngageBaseURL)
	}
	switch {
	case c.MoEngageWorkspaceID == "":
		return bad("MOENGAGE_WORKSPACE_ID", "is required")
	case c.MoEngageDataAPIKey.Reveal() == "":
		return bad("MOENGAGE_DATA_API_KEY", "is required (or MOENGAGE_DATA_API_KEY_FILE)")
	case c.BatchMaxBytes < 512 || c.BatchMaxBytes > 131072:
		return bad("BATCH_MAX_BYTES", "%d is outside 512..131072 (the API caps bodies at 128 KB)", c.BatchMaxBytes)
	case c.BatchMaxMembers < 0:
		return bad("BATCH_MAX_MEMBERS", "must not be negative")
	case c.BatchWindow <= 0:
		return bad("BATCH_WINDOW", "must be positive")
	case c.RateLimitRPM < 0:
		return bad("RATE_LIMIT_RPM", "must not be negative")
	case c.MaxInFlight < 1:
		return bad("MAX_IN_FLIGHT", "must be at least 1")
	case c.MaxPendingMembers < 1:
		return bad("MAX_PENDING_MEMBERS", "must be at least 1")
	case c.RetryInitialInterval <= 0:
		return bad("RETRY_INITIAL_INTERVAL", "must be positive")
	case c.RetryMaxInterval < c.RetryInitialInterval:
		return bad("RETRY_MAX_INTERVAL", "must be at least RETRY_INITIAL_INTERVAL")
	case c.RetryMaxElapsed < 0:
		return bad("RETRY_MAX_ELAPSED", "must not be negative")
	case c.ShutdownTimeout <= 0:
		return bad("SHUTDOWN_TIMEOUT", "must be positive")
	case c.LogFormat != "json" && c.LogFormat != "text":
		return bad("LOG_FORMAT", "%q is not json or text", c.LogFormat)
	}
	return nil
}

// LogValue is a safe summary for the start-up log line.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kafka_brokers", strings.Join(c.KafkaBrokers, ",")),
		slog.String("kafka_topic", strings.Join(c.KafkaTopics, ",")),
		slog.String("kafka_group_id", c.KafkaGroupID),
		slog.String("kafka_dlq_topic", c.KafkaDLQTopic),
		slog.Bool("kafka_tls", c.KafkaTLS),
		slog.String("kafka_sasl_mechanism", c.KafkaSASLMechanism),
		slog.String("moengage_base_url", c.MoEngageBaseURL),
		slog.String("moengage_workspace_id", c.MoEngageWorkspaceID),
		slog.Int("batch_max_bytes", c.BatchMaxBytes),
		slog.Int("batch_max_members", c.BatchMaxMembers),
		slog.Duration("batch_window", c.BatchWindow),
		slog.Float64("rate_limit_rpm", c.RateLimitRPM),
		slog.Int("max_in_flight", c.MaxInFlight),
		slog.Int("max_pending_members", c.MaxPendingMembers),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
	)
}
