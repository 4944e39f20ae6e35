package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	"unicode"
)

// This file holds Validate's checks (check and the check* methods it
// calls, tls.go's aside) and the helpers they share with Load: the topic
// and URL syntax, the loopback tests, bounded file reads.

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
	switch {
	case c.ParkingTopicPartitions < 1 || c.ParkingTopicPartitions > 10000:
		return configError("PARKING_TOPIC_PARTITIONS", "%d is outside 1..10000", c.ParkingTopicPartitions)
	case c.ParkingTopicReplication < 1 || c.ParkingTopicReplication > 32767:
		return configError("PARKING_TOPIC_REPLICATION", "%d is outside 1..32767", c.ParkingTopicReplication)
	case c.ParkingTopicRetention < time.Hour:
		return configError("PARKING_TOPIC_RETENTION", "%s is less than 1h (parked changes older than this are lost)", c.ParkingTopicRetention)
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
		c.MoEngageBaseURL = BaseURLFor(c.MoEngageDC)
	}
	if err := checkBaseURL(c.MoEngageBaseURL, h); err != nil {
		return err
	}
	if u, _ := url.Parse(c.MoEngageBaseURL); u.Scheme == "http" && !c.MoEngageAllowInsecure && !isLoopback(u.Hostname()) {
		return configError("MOENGAGE_BASE_URL", "%s is plain http: every request would carry MOENGAGE_DATA_API_KEY in clear text; "+
			"use https, or accept the risk with MOENGAGE_ALLOW_INSECURE=true (loopback hosts need neither)", h.show(c.MoEngageBaseURL))
	}
	return c.checkWorkspaces(h)
}

// checkWorkspaces checks the default workspace, its key and the registry
// (MOENGAGE_WORKSPACES_DIR): with a registry the default and its key are
// optional, and the key may come from the registry's <id>.key.
func (c *Config) checkWorkspaces(h hider) error {
	dir, id, key := c.MoEngageWorkspacesDir, c.MoEngageWorkspaceID, c.MoEngageDataAPIKey.Reveal()
	if dir != "" {
		if fi, err := os.Stat(dir); err != nil {
			return configError("MOENGAGE_WORKSPACES_DIR", "cannot read %s: %s", h.show(dir), pathErr(err))
		} else if !fi.IsDir() {
			return configError("MOENGAGE_WORKSPACES_DIR", "%s is not a directory (the registry: <workspace_id>.key files)", h.show(dir))
		}
	}
	switch {
	case id == "" && dir == "":
		return configError("MOENGAGE_WORKSPACE_ID", "required (the workspace to send to) unless MOENGAGE_WORKSPACES_DIR names a registry of workspaces")
	case id == "" && key != "":
		return configError("MOENGAGE_DATA_API_KEY", "is set but MOENGAGE_WORKSPACE_ID is not: it is the default workspace's key; "+
			"set MOENGAGE_WORKSPACE_ID too, or leave it unset and put each workspace's key in MOENGAGE_WORKSPACES_DIR")
	case strings.ContainsFunc(id, func(r rune) bool { return r == ':' || unicode.IsSpace(r) || unicode.IsControl(r) }):
		// Basic auth cannot carry a username with a colon, and the ID is
		// also a header value.
		return configError("MOENGAGE_WORKSPACE_ID", "%s must not contain a colon, white space or control characters", h.show(id))
	case id != "" && key == "" && dir == "":
		return configError("MOENGAGE_DATA_API_KEY", "required with MOENGAGE_WORKSPACE_ID (or MOENGAGE_DATA_API_KEY_FILE; "+
			"with MOENGAGE_WORKSPACES_DIR the key may instead be the registry's <MOENGAGE_WORKSPACE_ID>.key)")
	}
	return nil
}

// BaseURLFor is the Cohort Sync API's base URL in data center dc:
// https://api-{dc}.moengage.com (cohortsync-api.md §2).
func BaseURLFor(dc string) string { return "https://api-" + dc + ".moengage.com" }

// BaseURLOverride returns MOENGAGE_BASE_URL when it overrides the data
// centers (for every workspace of the registry), or "" when the base URL is
// MOENGAGE_DC's (derived by Validate, or set to the same URL): then each
// workspace goes to its own data center's URL.
func (c *Config) BaseURLOverride() string {
	u := strings.TrimRight(c.MoEngageBaseURL, "/")
	if c.MoEngageDC != "" && u == BaseURLFor(c.MoEngageDC) {
		return ""
	}
	return u
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
