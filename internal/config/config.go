package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// AttemptTimeout is the worker's timeout of one HTTP attempt to the API
// (sink.DefaultAttemptTimeout, which internal/app's tests pin it to); it has
// no variable. MOENGAGE_MAX_PROCESSING_TIME must be longer.
const AttemptTimeout = 15 * time.Second

// Config is the worker's configuration. Load builds it from the environment
// and flags; code that builds one itself starts from Default and must call
// Validate, which also fills the derived fields. Each field's comment names
// its variable; Vars has the help text and default of each.
type Config struct {
	// KafkaBrokers are the bootstrap servers, host:port each
	// (KAFKA_BROKERS, comma-separated).
	KafkaBrokers []string
	// KafkaTopics are the topics to consume (KAFKA_TOPIC, comma-separated).
	KafkaTopics []string
	// KafkaGroupID is the consumer group (KAFKA_GROUP_ID).
	KafkaGroupID string
	// KafkaSessionTimeout is the consumer-group session timeout
	// (KAFKA_SESSION_TIMEOUT), 6s to 5m: how long a silent replica keeps
	// its partitions.
	KafkaSessionTimeout time.Duration
	// KafkaHeartbeatInterval is the consumer-group heartbeat interval
	// (KAFKA_HEARTBEAT_INTERVAL), under a third of KafkaSessionTimeout.
	KafkaHeartbeatInterval time.Duration
	// KafkaDLQTopic is the dead-letter topic (KAFKA_DLQ_TOPIC). Empty means
	// derived: Validate sets it to the first input topic + ".dlq". It must
	// not be one of the input topics.
	KafkaDLQTopic string
	// KafkaBudgetTopic is the compacted topic the replicas share the rate
	// budget over (KAFKA_BUDGET_TOPIC). Empty means derived: Validate sets
	// it to KafkaGroupID + ".budget".
	KafkaBudgetTopic string
	// KafkaTLS connects to the brokers with TLS (KAFKA_TLS). Validate sets
	// it when KafkaTLSCAFile is set.
	KafkaTLS bool
	// KafkaTLSCAFile is a PEM file of CA certificates to verify the brokers
	// with instead of the system roots (KAFKA_TLS_CA_FILE). Empty: system
	// roots.
	KafkaTLSCAFile string
	// KafkaTLSCertFile and KafkaTLSKeyFile are the PEM client certificate
	// (leaf first, then intermediates) and its private key for mutual TLS
	// (KAFKA_TLS_CERT_FILE, KAFKA_TLS_KEY_FILE): both or neither. Validate
	// sets KafkaTLS when they are set. The worker re-reads them at each
	// handshake, so a rotated Secret is picked up without a restart.
	KafkaTLSCertFile, KafkaTLSKeyFile string
	// KafkaSASLMechanism is "" (no SASL), PLAIN, SCRAM-SHA-256 or
	// SCRAM-SHA-512 (KAFKA_SASL_MECHANISM, any case; stored upper case).
	KafkaSASLMechanism string
	// KafkaSASLUsername is the SASL username (KAFKA_SASL_USERNAME), required
	// with a mechanism.
	KafkaSASLUsername string
	// KafkaSASLPassword is the SASL password (KAFKA_SASL_PASSWORD or
	// KAFKA_SASL_PASSWORD_FILE), required with a mechanism.
	KafkaSASLPassword Secret
	// KafkaSASLAllowInsecure accepts SASL PLAIN without TLS to brokers that
	// are not on the loopback interface (KAFKA_SASL_ALLOW_INSECURE). PLAIN
	// sends the password as it is, so Validate refuses that combination
	// unless this is set; loopback brokers are always accepted.
	KafkaSASLAllowInsecure bool
	// MoEngageDC is the MoEngage data center, one of DataCenters
	// (MOENGAGE_DC); required unless MoEngageBaseURL is set (no default: a
	// wrong region is a data-residency breach).
	MoEngageDC string
	// MoEngageBaseURL is the API's base URL without a trailing slash
	// (MOENGAGE_BASE_URL). Empty means derived: Validate sets it to
	// https://api-{dc}.moengage.com.
	MoEngageBaseURL string
	// MoEngageAllowInsecure accepts an http:// MoEngageBaseURL whose host is
	// not on the loopback interface (MOENGAGE_ALLOW_INSECURE). Every request
	// carries the Data API key, so Validate refuses plain http unless this
	// is set; loopback hosts (127.0.0.0/8, ::1, localhost) are always
	// accepted.
	MoEngageAllowInsecure bool
	// MoEngageMaxProcessingTime bounds how long after a request was sent
	// the API may still process it (MOENGAGE_MAX_PROCESSING_TIME), longer
	// than the attempt timeout (AttemptTimeout): after an attempt whose
	// outcome is unknown, no request that a late copy of it could overtake
	// is sent before then (sink.Config.MaxProcessingTime).
	MoEngageMaxProcessingTime time.Duration
	// MoEngageWorkspaceID is the workspace (app) ID, sent as the Basic-auth
	// username and the MOE-APPKEY header (MOENGAGE_WORKSPACE_ID or
	// MOENGAGE_WORKSPACE_ID_FILE). Required. It is an identifier, not a
	// credential, and is logged.
	MoEngageWorkspaceID string
	// MoEngageDataAPIKey is the Data API key, sent as the Basic-auth password
	// (MOENGAGE_DATA_API_KEY or MOENGAGE_DATA_API_KEY_FILE). Required.
	MoEngageDataAPIKey Secret
	// MoEngageDataAPIKeyFile is the file the key was read from
	// (MOENGAGE_DATA_API_KEY_FILE), or empty. The worker reads it again
	// after a 401 or 403, so that a rotated secret heals without a restart.
	MoEngageDataAPIKeyFile string
	// CohortsyncPartner is the partner used for events that name none
	// (COHORTSYNC_PARTNER). Empty: such events are invalid.
	CohortsyncPartner string
	// BatchMaxBytes caps a request body (BATCH_MAX_BYTES), 512..131072. The
	// default 128000 is under the documented 128 KB whichever way it is read.
	BatchMaxBytes int
	// BatchMaxMembers caps the members of one request (BATCH_MAX_MEMBERS).
	// 0, the default, means derived: only BatchMaxBytes limits a batch.
	BatchMaxMembers int
	// BatchWindow is the longest an open batch waits before it is due
	// (BATCH_WINDOW), > 0.
	BatchWindow time.Duration
	// RateLimitRPM is the fleet-wide request budget per minute
	// (RATE_LIMIT_RPM), >= 0. 0 disables the client-side limit: that is for
	// the emulator and benchmarks only, never for the real API, so Validate
	// refuses it unless MoEngageBaseURL is a loopback host.
	RateLimitRPM float64
	// RateLimitSharing shares the budget by demand among the replicas over
	// KafkaBudgetTopic (RATE_LIMIT_SHARING, default true); false keeps each
	// replica to its static share.
	RateLimitSharing bool
	// MaxInFlight is the number of concurrent requests per replica
	// (MAX_IN_FLIGHT), >= 1.
	MaxInFlight int
	// MaxPendingMembers is the backpressure threshold: member changes read
	// but not yet settled before fetching stops (MAX_PENDING_MEMBERS), >= 1.
	MaxPendingMembers int
	// RetryInitialInterval is the first backoff interval
	// (RETRY_INITIAL_INTERVAL), > 0.
	RetryInitialInterval time.Duration
	// RetryMaxInterval is the longest backoff interval (RETRY_MAX_INTERVAL),
	// >= RetryInitialInterval.
	RetryMaxInterval time.Duration
	// RetryMaxElapsed is how long a batch is retried before the worker gives
	// up (RETRY_MAX_ELAPSED), >= 0. 0, the default, retries forever.
	RetryMaxElapsed time.Duration
	// HTTPAddr is the listen address of /metrics, /healthz and /readyz
	// (HTTP_ADDR). Empty disables the endpoints; since an empty environment
	// variable reads as unset, disable them with --http-addr= .
	HTTPAddr string
	// ShutdownTimeout is the drain budget on SIGTERM/SIGINT
	// (SHUTDOWN_TIMEOUT), > 0.
	ShutdownTimeout time.Duration
	// LogLevel is the slog level (LOG_LEVEL: debug, info, warn or error).
	LogLevel slog.Level
	// LogFormat is the slog handler, json or text (LOG_FORMAT).
	LogFormat string
}

// DataCenters are the MoEngage data centers MOENGAGE_DC accepts, exactly
// as written in the API host name (cohortsync-api.md §2): "101" is not
// zero-padded, and "1" is not "01".
var DataCenters = []string{"01", "02", "03", "04", "05", "06", "101"}

// SASLMechanisms are the values KAFKA_SASL_MECHANISM accepts besides "".
var SASLMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", AWSMSKIAM}

// AWSMSKIAM is Amazon MSK's IAM access control (KAFKA_SASL_MECHANISM): no
// username or password; the AWS SDK's default credential chain signs each
// connection (checkMSKIAM).
const AWSMSKIAM = "AWS_MSK_IAM"

// Default returns the configuration with every default of Vars applied. It
// has no workspace ID or API key, so it does not validate until those are
// set; the derived fields (KafkaDLQTopic, MoEngageBaseURL) are left empty for
// Validate to fill, so that they follow the topics and DC a caller sets.
func Default() Config {
	var c Config
	for _, st := range settings() {
		if st.set == nil || st.Default == "" || strings.HasPrefix(st.Default, "<") {
			continue
		}
		if !st.set(&c, st.Default) {
			panic("config: bad default for " + st.Env) // a bug in settings, caught by the tests
		}
	}
	return c
}

// Validate checks c and returns one error, on one line, naming the first
// invalid variable; the error never contains a secret. When c is valid it
// also normalises c in place: it fills KafkaDLQTopic, KafkaBudgetTopic and
// MoEngageBaseURL when empty, sets KafkaTLS when KafkaTLSCAFile is set, upper-cases
// KafkaSASLMechanism, lower-cases LogFormat and trims a trailing slash from
// MoEngageBaseURL — hence the pointer receiver. A failed Validate leaves c
// unchanged. It reads KafkaTLSCAFile to check that it holds a PEM
// certificate. Load calls it; code that builds a Config itself must too.
func (c *Config) Validate() error {
	return c.validate(hider{c.KafkaSASLPassword.Reveal(), c.MoEngageDataAPIKey.Reveal()})
}

// validate normalises a copy of c and stores it back only when it is valid:
// a failed Validate leaves c as it was, so a derived field never outlives
// the fields it was derived from.
func (c *Config) validate(h hider) error {
	n := *c
	if err := n.check(h); err != nil {
		return err
	}
	*c = n
	return nil
}

// configError is the one-line error Load and Validate return.
func configError(env, format string, a ...any) error {
	return fmt.Errorf("config: %s: %s", env, fmt.Sprintf(format, a...))
}

// hider renders user-supplied values for error messages. A value that
// contains any of its secrets (say, an API key pasted into the wrong
// variable) is not shown at all; others are quoted (so the message stays on
// one line) and cut to a readable length.
type hider []string

// leaks reports whether v contains one of h's secrets. It ignores case and
// the white space around a secret, because values are trimmed and some are
// case-folded (LOG_FORMAT, KAFKA_SASL_MECHANISM) before they are shown.
func (h hider) leaks(v string) bool {
	v = strings.ToLower(v)
	for _, s := range h {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" && strings.Contains(v, s) {
			return true
		}
	}
	return false
}

func (h hider) show(v string) string {
	if h.leaks(v) {
		return "(value not shown: it contains a secret)"
	}
	const max = 100
	if r := []rune(v); len(r) > max {
		v = string(r[:max]) + "…"
	}
	return strconv.Quote(v)
}

// check validates c, normalising it on the way, and returns the first error.
func (c *Config) check(h hider) error {
	if err := c.checkKafka(h); err != nil {
		return err
	}
	if err := c.checkSASL(h); err != nil { // after checkKafka, which may set KafkaTLS
		return err
	}
	if err := c.checkMoEngage(h); err != nil {
		return err
	}
	return c.checkLimits(h)
}

// checkKafka checks the brokers, topics and group, derives the dead-letter
// topic and sets KafkaTLS when there is a CA file.
func (c *Config) checkKafka(h hider) error {
	if len(c.KafkaBrokers) == 0 {
		return configError("KAFKA_BROKERS", "required: at least one host:port (there is no default)")
	}
	for _, b := range c.KafkaBrokers {
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			return configError("KAFKA_BROKERS", "%s is not host:port", h.show(b))
		}
	}
	if len(c.KafkaTopics) == 0 {
		return configError("KAFKA_TOPIC", "at least one topic is required")
	}
	for i, t := range c.KafkaTopics {
		if !validTopic(t) {
			return configError("KAFKA_TOPIC", "%s is not a valid Kafka topic name", h.show(t))
		}
		if slices.Contains(c.KafkaTopics[:i], t) {
			return configError("KAFKA_TOPIC", "%s is listed twice", h.show(t))
		}
	}
	if c.KafkaGroupID == "" {
		return configError("KAFKA_GROUP_ID", "required (there is no default: a shared one would let a staging deployment join production's group and commit its offsets)")
	}
	if c.KafkaDLQTopic == "" {
		c.KafkaDLQTopic = c.KafkaTopics[0] + ".dlq"
	}
	if !validTopic(c.KafkaDLQTopic) {
		return configError("KAFKA_DLQ_TOPIC", "%s is not a valid Kafka topic name", h.show(c.KafkaDLQTopic))
	}
	if slices.Contains(c.KafkaTopics, c.KafkaDLQTopic) {
		return configError("KAFKA_DLQ_TOPIC", "%s is also an input topic (KAFKA_TOPIC)", h.show(c.KafkaDLQTopic))
	}
	if err := c.checkGroupTimes(); err != nil {
		return err
	}
	if c.KafkaBudgetTopic == "" {
		c.KafkaBudgetTopic = c.KafkaGroupID + ".budget"
	}
	switch {
	case !validTopic(c.KafkaBudgetTopic):
		return configError("KAFKA_BUDGET_TOPIC", "%s is not a valid Kafka topic name", h.show(c.KafkaBudgetTopic))
	case slices.Contains(c.KafkaTopics, c.KafkaBudgetTopic):
		return configError("KAFKA_BUDGET_TOPIC", "%s is also an input topic (KAFKA_TOPIC)", h.show(c.KafkaBudgetTopic))
	case c.KafkaBudgetTopic == c.KafkaDLQTopic:
		return configError("KAFKA_BUDGET_TOPIC", "%s is also the dead-letter topic (KAFKA_DLQ_TOPIC)", h.show(c.KafkaBudgetTopic))
	}
	if c.KafkaTLSCAFile != "" {
		if err := checkCAFile(c.KafkaTLSCAFile, h); err != nil {
			return err
		}
		c.KafkaTLS = true
	}
	return c.checkClientCert(h) // tls.go
}

// checkGroupTimes checks the session timeout and the heartbeat interval
// against each other and the brokers' default bounds.
func (c *Config) checkGroupTimes() error {
	switch {
	case c.KafkaSessionTimeout < 6*time.Second || c.KafkaSessionTimeout > 5*time.Minute:
		return configError("KAFKA_SESSION_TIMEOUT", "%s is not between 6s and 5m (brokers refuse shorter ones by default)", c.KafkaSessionTimeout)
	case c.KafkaHeartbeatInterval <= 0 || 3*c.KafkaHeartbeatInterval >= c.KafkaSessionTimeout:
		return configError("KAFKA_HEARTBEAT_INTERVAL", "%s is not positive and under a third of KAFKA_SESSION_TIMEOUT (%s)", c.KafkaHeartbeatInterval, c.KafkaSessionTimeout)
	}
	return nil
}

// checkSASL checks the SASL mechanism and its credentials, and refuses
// PLAIN in clear text to brokers off the loopback interface.
func (c *Config) checkSASL(h hider) error {
	c.KafkaSASLMechanism = strings.ToUpper(c.KafkaSASLMechanism)
	switch {
	case c.KafkaSASLMechanism == "":
		if c.KafkaSASLUsername != "" || c.KafkaSASLPassword.Reveal() != "" {
			return configError("KAFKA_SASL_MECHANISM", "required when KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD is set (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
		}
	case !slices.Contains(SASLMechanisms, c.KafkaSASLMechanism):
		return configError("KAFKA_SASL_MECHANISM", "%s is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or AWS_MSK_IAM", h.show(c.KafkaSASLMechanism))
	case c.KafkaSASLMechanism == AWSMSKIAM:
		return c.checkMSKIAM() // tls.go
	case c.KafkaSASLUsername == "":
		return configError("KAFKA_SASL_USERNAME", "required with KAFKA_SASL_MECHANISM=%s", c.KafkaSASLMechanism)
	case c.KafkaSASLPassword.Reveal() == "":
		return configError("KAFKA_SASL_PASSWORD", "required with KAFKA_SASL_MECHANISM=%s (or KAFKA_SASL_PASSWORD_FILE)", c.KafkaSASLMechanism)
	case c.KafkaSASLMechanism == "PLAIN" && !c.KafkaTLS && !c.KafkaSASLAllowInsecure && !allLoopback(c.KafkaBrokers):
		return configError("KAFKA_SASL_MECHANISM", "PLAIN without TLS would send KAFKA_SASL_PASSWORD in clear text to the brokers; "+
			"set KAFKA_TLS=true (or KAFKA_TLS_CA_FILE), use SCRAM-SHA-256 or SCRAM-SHA-512, or accept the risk with KAFKA_SASL_ALLOW_INSECURE=true")
	}
	return nil
}

// checkMoEngage checks the data center, the base URL (deriving it from the
// data center when empty) and the credentials.
func (c *Config) checkMoEngage(h hider) error {
	c.MoEngageBaseURL = strings.TrimRight(c.MoEngageBaseURL, "/")
	switch {
	case c.MoEngageDC == "" && c.MoEngageBaseURL == "":
		return configError("MOENGAGE_DC", "required unless MOENGAGE_BASE_URL is set: one of %s, the data center of the workspace "+
			"(there is no default: a wrong one sends the key and the uids to another region)", strings.Join(DataCenters, ", "))
	case c.MoEngageDC != "" && !slices.Contains(DataCenters, c.MoEngageDC):
		return configError("MOENGAGE_DC", "%s is not one of %s", h.show(c.MoEngageDC), strings.Join(DataCenters, ", "))
	}
	if c.MoEngageBaseURL == "" {
		c.MoEngageBaseURL = "https://api-" + c.MoEngageDC + ".moengage.com"
	}
	if err := checkBaseURL(c.MoEngageBaseURL, h); err != nil {
		return err
	}
	if u, _ := url.Parse(c.MoEngageBaseURL); u.Scheme == "http" && !c.MoEngageAllowInsecure && !isLoopback(u.Hostname()) {
		return configError("MOENGAGE_BASE_URL", "%s is plain http: every request would carry MOENGAGE_DATA_API_KEY in clear text; "+
			"use https, or accept the risk with MOENGAGE_ALLOW_INSECURE=true (loopback hosts need neither)", h.show(c.MoEngageBaseURL))
	}
	if c.MoEngageWorkspaceID == "" {
		return errors.New("config: MOENGAGE_WORKSPACE_ID is required")
	}
	if strings.ContainsFunc(c.MoEngageWorkspaceID, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }) {
		// Basic auth cannot carry a username with a colon, and the ID is
		// also a header value.
		return configError("MOENGAGE_WORKSPACE_ID", "%s must not contain a colon, white space or control characters", h.show(c.MoEngageWorkspaceID))
	}
	if c.MoEngageDataAPIKey.Reveal() == "" {
		return errors.New("config: MOENGAGE_DATA_API_KEY is required")
	}
	return nil
}

// checkLimits checks batching, the rate, retries and the process settings.
func (c *Config) checkLimits(h hider) error {
	switch {
	case c.BatchMaxBytes < 512 || c.BatchMaxBytes > 131072:
		return configError("BATCH_MAX_BYTES", "%d is outside 512..131072 (the API caps bodies at 128 KB)", c.BatchMaxBytes)
	case c.BatchMaxMembers < 0:
		return configError("BATCH_MAX_MEMBERS", "%d is negative (0: no member cap)", c.BatchMaxMembers)
	case c.BatchWindow <= 0:
		return configError("BATCH_WINDOW", "%s is not positive", c.BatchWindow)
	case c.RateLimitRPM < 0 || math.IsNaN(c.RateLimitRPM) || math.IsInf(c.RateLimitRPM, 0):
		return configError("RATE_LIMIT_RPM", "%v is not a finite number >= 0", c.RateLimitRPM)
	case c.RateLimitRPM == 0 && !loopbackURL(c.MoEngageBaseURL):
		return configError("RATE_LIMIT_RPM", "0 (no client-side limit) is accepted only with a loopback MOENGAGE_BASE_URL (the emulator, benchmarks), not %s: "+
			"set the workspace's budget (300 by default)", h.show(c.MoEngageBaseURL))
	case c.MaxInFlight < 1:
		return configError("MAX_IN_FLIGHT", "%d is less than 1", c.MaxInFlight)
	case c.MaxPendingMembers < 1:
		return configError("MAX_PENDING_MEMBERS", "%d is less than 1", c.MaxPendingMembers)
	case c.RetryInitialInterval <= 0:
		return configError("RETRY_INITIAL_INTERVAL", "%s is not positive", c.RetryInitialInterval)
	case c.RetryMaxInterval < c.RetryInitialInterval:
		return configError("RETRY_MAX_INTERVAL", "%s is less than RETRY_INITIAL_INTERVAL (%s)", c.RetryMaxInterval, c.RetryInitialInterval)
	case c.MoEngageMaxProcessingTime <= AttemptTimeout:
		return configError("MOENGAGE_MAX_PROCESSING_TIME", "%s is not longer than the %s attempt timeout", c.MoEngageMaxProcessingTime, AttemptTimeout)
	case c.RetryMaxElapsed < 0:
		return configError("RETRY_MAX_ELAPSED", "%s is negative (0: retry forever)", c.RetryMaxElapsed)
	case c.ShutdownTimeout <= 0:
		return configError("SHUTDOWN_TIMEOUT", "%s is not positive", c.ShutdownTimeout)
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return configError("HTTP_ADDR", "%s is not [host]:port", h.show(c.HTTPAddr))
		}
	}
	c.LogFormat = strings.ToLower(c.LogFormat)
	if c.LogFormat != "json" && c.LogFormat != "text" {
		return configError("LOG_FORMAT", "%s is not json or text", h.show(c.LogFormat))
	}
	return nil
}

// validTopic reports whether t is a legal Kafka topic name.
func validTopic(t string) bool {
	if t == "" || t == "." || t == ".." || len(t) > 249 {
		return false
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// maxCAFile bounds how much of KAFKA_TLS_CA_FILE is read: a CA bundle is a
// few hundred KB at most, and a wrong path (a device, a log) must not hang or
// exhaust the process.
const maxCAFile = 4 << 20

func checkCAFile(path string, h hider) error {
	b, err := readLimited(path, maxCAFile)
	if err != nil {
		return configError("KAFKA_TLS_CA_FILE", "cannot read %s: %s", h.show(path), err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		return configError("KAFKA_TLS_CA_FILE", "%s holds no PEM certificate", h.show(path))
	}
	return nil
}

// readLimited reads at most max bytes of the file at path; a larger file is
// an error. Errors name neither the path nor the content (callers add the
// path).
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, pathErr(err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, pathErr(err)
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("larger than %d bytes", max)
	}
	return b, nil
}

// pathErr drops the operation and path that *fs.PathError adds, leaving
// the reason ("no such file or directory").
func pathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func checkBaseURL(raw string, h hider) error {
	u, err := url.Parse(raw)
	switch {
	case err != nil && strings.Contains(raw, "@"):
		// Never echo it: what precedes the @ may be a password.
		return configError("MOENGAGE_BASE_URL", "is not a URL")
	case err != nil:
		return configError("MOENGAGE_BASE_URL", "%s is not a URL", h.show(raw))
	case u.User != nil:
		// Never echo it: the user info may hold a password.
		return configError("MOENGAGE_BASE_URL", "must not hold credentials (they come from MOENGAGE_WORKSPACE_ID and MOENGAGE_DATA_API_KEY)")
	case u.Scheme != "http" && u.Scheme != "https":
		return configError("MOENGAGE_BASE_URL", "%s is not an http(s) URL", h.show(raw))
	case u.Host == "":
		return configError("MOENGAGE_BASE_URL", "%s has no host", h.show(raw))
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return configError("MOENGAGE_BASE_URL", "%s must not have a query or fragment", h.show(raw))
	}
	return nil
}

// isLoopback reports whether host (a name or an IP, without port or
// brackets) is on the loopback interface: localhost (or a name under
// .localhost), 127.0.0.0/8 or ::1. Other names are not resolved: a name
// is trusted only for what it says, not for what DNS answers today.
func isLoopback(host string) bool {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// loopbackURL reports whether raw is a URL whose host is on the loopback
// interface.
func loopbackURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && isLoopback(u.Hostname())
}

// allLoopback reports whether every host:port in brokers is on the
// loopback interface.
func allLoopback(brokers []string) bool {
	for _, b := range brokers {
		host, _, err := net.SplitHostPort(b)
		if err != nil || !isLoopback(host) {
			return false
		}
	}
	return len(brokers) > 0
}

// LogValue implements slog.LogValuer: a summary of c for the start-up log
// line. It holds no secret: for each credential it says only whether it is
// set.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("kafka_brokers", strings.Join(c.KafkaBrokers, ",")),
		slog.String("kafka_topic", strings.Join(c.KafkaTopics, ",")),
		slog.String("kafka_group_id", c.KafkaGroupID),
		slog.Duration("kafka_session_timeout", c.KafkaSessionTimeout),
		slog.Duration("kafka_heartbeat_interval", c.KafkaHeartbeatInterval),
		slog.String("kafka_dlq_topic", c.KafkaDLQTopic),
		slog.String("kafka_budget_topic", c.KafkaBudgetTopic),
		slog.Bool("kafka_tls", c.KafkaTLS),
		slog.String("kafka_tls_ca_file", c.KafkaTLSCAFile),
		slog.String("kafka_tls_cert_file", c.KafkaTLSCertFile),
		slog.String("kafka_tls_key_file", c.KafkaTLSKeyFile),
		slog.String("kafka_sasl_mechanism", c.KafkaSASLMechanism),
		slog.String("kafka_sasl_username", c.KafkaSASLUsername),
		slog.Bool("kafka_sasl_password_set", c.KafkaSASLPassword.Reveal() != ""),
		slog.Bool("kafka_sasl_allow_insecure", c.KafkaSASLAllowInsecure),
		slog.String("moengage_dc", c.MoEngageDC),
		slog.String("moengage_base_url", c.MoEngageBaseURL),
		slog.Bool("moengage_allow_insecure", c.MoEngageAllowInsecure),
		slog.String("moengage_workspace_id", c.MoEngageWorkspaceID),
		slog.Bool("moengage_data_api_key_set", c.MoEngageDataAPIKey.Reveal() != ""),
		slog.String("cohortsync_partner", c.CohortsyncPartner),
		slog.Int("batch_max_bytes", c.BatchMaxBytes),
		slog.Int("batch_max_members", c.BatchMaxMembers),
		slog.Duration("batch_window", c.BatchWindow),
		slog.Float64("rate_limit_rpm", c.RateLimitRPM),
		slog.Bool("rate_limit_sharing", c.RateLimitSharing),
		slog.Int("max_in_flight", c.MaxInFlight),
		slog.Int("max_pending_members", c.MaxPendingMembers),
		slog.Duration("retry_initial_interval", c.RetryInitialInterval),
		slog.Duration("retry_max_interval", c.RetryMaxInterval),
		slog.Duration("retry_max_elapsed", c.RetryMaxElapsed),
		slog.Duration("moengage_max_processing_time", c.MoEngageMaxProcessingTime),
		slog.String("http_addr", c.HTTPAddr),
		slog.Duration("shutdown_timeout", c.ShutdownTimeout),
		slog.String("log_level", c.LogLevel.String()),
		slog.String("log_format", c.LogFormat),
	)
}
