// Package preflight is `cohortsync-worker check`: it proves, before a
// rollout, that a configuration will work, printing one line per check with
// what it proved or why it failed.
//
// It owns the checks and their report: the configuration (the same
// validation as at start, plus variables with the worker's prefixes that the
// worker does not know); Kafka (bootstrap and advertised brokers reachable
// with the configured TLS and SASL, the input topics and the dead-letter
// topic, the consumer group, and the operations the worker needs on each);
// and the Cohort Sync API (DNS, TLS, and the credentials as far as the
// contract allows). With MOENGAGE_WORKSPACES_DIR it also checks the
// registry as the worker reads it (every problem, named by its file, fails;
// --offline checks only this, files and no network) and probes each of its
// workspaces the way it probes the default: one request each, with that
// workspace's key and data center. It does not own the configuration's rules (package
// config), the worker's Kafka client or its API client: it builds the Kafka
// dialer from the same settings as the worker (kafkaconn.New).
//
// Nothing a check does changes anything. On Kafka it only reads metadata,
// topic configurations and the group's description: it joins no group,
// commits no offset, creates no topic (metadata requests say so) and writes
// no record. On the API it sends one request, with the configured key,
// whose body, {}, names no segment (see APIProbe), per workspace; never a
// request with another key. With --offline (Options.Offline) it checks the configuration
// only and touches no network.
//
// Exit codes: 0 when every check passed (a check that could not be verified
// is reported, and does not fail), 1 when a check failed, 2 when the
// configuration is bad (invalid, or an unknown variable).
package preflight
