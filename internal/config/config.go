package config

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
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
	// ParkingTopicPartitions, ParkingTopicReplication and
	// ParkingTopicRetention are the partitions, replication factor (capped
	// at the broker count) and retention.ms of the parking topic
	// <KafkaGroupID>.parked when the worker creates it
	// (PARKING_TOPIC_PARTITIONS, PARKING_TOPIC_REPLICATION,
	// PARKING_TOPIC_RETENTION; issue 21). An existing topic keeps its own.
	ParkingTopicPartitions  int
	ParkingTopicReplication int
	ParkingTopicRetention   time.Duration
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
	// MoEngageWorkspaceID is the default workspace (app) ID, sent as the
	// Basic-auth username and the MOE-APPKEY header for events that name no
	// workspace (MOENGAGE_WORKSPACE_ID or MOENGAGE_WORKSPACE_ID_FILE).
	// Required unless MoEngageWorkspacesDir is set. It is an identifier, not
	// a credential, and is logged.
	MoEngageWorkspaceID string
	// MoEngageDataAPIKey is the default workspace's Data API key, sent as
	// the Basic-auth password (MOENGAGE_DATA_API_KEY or
	// MOENGAGE_DATA_API_KEY_FILE). Required with MoEngageWorkspaceID,
	// unless MoEngageWorkspacesDir is set: then, when it is empty, the
	// default workspace's key is the registry's <MoEngageWorkspaceID>.key.
	// Refused without MoEngageWorkspaceID (whose key would it be?).
	MoEngageDataAPIKey Secret
	// MoEngageDataAPIKeyFile is the file the key was read from
	// (MOENGAGE_DATA_API_KEY_FILE), or empty. The worker reads it again
	// after a 401 or 403, so that a rotated secret heals without a restart.
	MoEngageDataAPIKeyFile string
	// MoEngageWorkspacesDir is the registry of workspaces
	// (MOENGAGE_WORKSPACES_DIR, internal/workspace): a directory of
	// <workspace_id>.key, .dc and .rate_limit_rpm files, read again without
	// a restart. Empty: one workspace, MoEngageWorkspaceID. Validate checks
	// that it is a directory; the worker lists it at start.
	MoEngageWorkspacesDir string
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
	// MaxInFlight is the number of concurrent requests per replica, and of
	// batches being sent per workspace (MAX_IN_FLIGHT), >= 1.
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
// has no workspace ID (nor registry) or API key, so it does not validate until those are
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
