package preflight

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/describegroups"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaconn"
)

// clientID is the Kafka client id of every connection the check opens, so
// that broker logs and quotas tell it from the worker.
const clientID = "cohortsync-worker-check"

// checkKafka runs the Kafka checks: kafka.brokers, one kafka.topic per input
// topic, kafka.dlq, kafka.parking, kafka.group and kafka.acls. It only reads: metadata
// (with automatic topic creation off), topic configurations and the group's
// description.
func checkKafka(ctx context.Context, cfg config.Config, to time.Duration) []Result {
	_, tr, err := kafkaconn.New(cfg, nil)
	if err != nil {
		return []Result{{Check: "kafka.brokers", Status: Fail, Detail: oneLine(err.Error(), 300)}}
	}
	tr.DialTimeout = to
	tr.ClientID = clientID
	defer tr.CloseIdleConnections()
	security := describeSecurity(cfg)
	if expired := expiredClientCert(cfg, time.Now()); expired != "" {
		return append([]Result{{Check: "kafka.brokers", Status: Fail, Detail: expired}},
			skipRest("the client certificate has expired")...)
	}
	topics := append(slices.Clone(cfg.KafkaTopics), cfg.KafkaDLQTopic, parkingTopic(cfg).Topic)

	// The bootstrap brokers, through kafka-go's client with the worker's
	// dialer settings: the path the worker takes.
	var reached []string
	var failed []string
	for _, b := range cfg.KafkaBrokers {
		cctx, cancel := context.WithTimeout(ctx, to)
		c := &kafka.Client{Addr: kafka.TCP(b), Transport: tr, Timeout: to}
		_, err := c.Metadata(cctx, &kafka.MetadataRequest{Topics: topics})
		cancel()
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %s", b, kafkaErr(err)))
			continue
		}
		reached = append(reached, b)
	}
	if len(reached) == 0 {
		return append([]Result{{Check: "kafka.brokers", Status: Fail,
			Detail: fmt.Sprintf("no bootstrap broker reachable with %s: %s", security, strings.Join(failed, "; "))}},
			skipRest("no broker reachable")...)
	}

	// Metadata with the operations this principal may perform on each
	// topic, on a connection of our own: kafka-go's client answers metadata
	// from its cache, which has no authorized operations.
	md, err := rawMetadata(ctx, reached[0], tr.TLS, tr.SASL, to, topics)
	if err != nil {
		return append([]Result{{Check: "kafka.brokers", Status: Fail,
			Detail: fmt.Sprintf("%s answered, but its metadata could not be read: %s", reached[0], kafkaErr(err))}},
			skipRest("no metadata")...)
	}
	// The advertised brokers: the worker fetches from each partition's
	// leader at the address the cluster advertises, which may differ from
	// the bootstrap address (advertised.listeners).
	var advertised, advFailed []string
	for _, b := range md.Brokers {
		addr := net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		advertised = append(advertised, addr)
		pc, err := dialRaw(ctx, addr, tr.TLS, tr.SASL, to)
		if err != nil {
			advFailed = append(advFailed, fmt.Sprintf("%s (broker %d): %s", addr, b.NodeID, kafkaErr(err)))
			continue
		}
		pc.Close()
	}
	var out []Result
	brokers := Result{Check: "kafka.brokers", Status: OK,
		Detail: fmt.Sprintf("connected with %s to %d of %d bootstrap brokers; cluster %s advertises %d: %s, all reachable",
			security, len(reached), len(cfg.KafkaBrokers), md.ClusterID, len(advertised), strings.Join(advertised, ", "))}
	switch {
	case len(advFailed) > 0:
		brokers.Status = Fail
		brokers.Detail = fmt.Sprintf("bootstrap reachable with %s, but advertised brokers are not (the worker reads from them; check advertised.listeners): %s",
			security, strings.Join(advFailed, "; "))
	case len(failed) > 0:
		brokers.Status = Warn
		brokers.Detail += "; unreachable bootstrap brokers: " + strings.Join(failed, "; ")
	}
	out = append(out, brokers)

	byName := map[string]metadataAPI.ResponseTopic{}
	for _, t := range md.Topics {
		byName[t.Name] = t
	}
	cl := &kafka.Client{Addr: kafka.TCP(reached...), Transport: tr, Timeout: to}
	maxBytes := topicMaxBytes(ctx, cl, to, topics[:len(topics)-1]) // the parking topic's: checkParking

	for _, name := range cfg.KafkaTopics {
		t := byName[name]
		r := Result{Check: "kafka.topic"}
		if err := topicErr(name, t, "KAFKA_TOPIC"); err != "" {
			r.Status, r.Detail = Fail, err
		} else {
			r.Status, r.Detail = OK, fmt.Sprintf("%s exists: %s", name, describeTopic(t))
			if leaderless(t) > 0 {
				r.Status = Warn
			}
		}
		out = append(out, r)
	}

	dlq := byName[cfg.KafkaDLQTopic]
	r := Result{Check: "kafka.dlq"}
	if err := topicErr(cfg.KafkaDLQTopic, dlq, "KAFKA_DLQ_TOPIC"); err != "" {
		r.Status, r.Detail = Fail, err+"; without it no dead letter can be written: the first bad record holds up its partition's commits (cohortsync_dead_letter_failing)"
	} else {
		r.Status, r.Detail = OK, fmt.Sprintf("%s exists: %s", cfg.KafkaDLQTopic, describeTopic(dlq))
		if leaderless(dlq) > 0 {
			r.Status = Warn
		}
		r.Detail += "; " + describeDLQBytes(cfg, maxBytes, &r.Status)
	}
	out = append(out, r)
	parking, parkingNeeds := checkParking(ctx, tr, cl, cfg, md, maxBytes, to)
	out = append(out, parking)

	group, groupOps := describeGroup(ctx, tr, reached, cfg.KafkaGroupID, to)
	out = append(out, group)
	out = append(out, checkACLs(ctx, cl, cfg, byName, groupOps, group.Status == Fail, parkingNeeds, to))
	return out
}

// skipRest is the lines of the checks after kafka.brokers when they cannot
// run.
func skipRest(why string) []Result {
	return []Result{{Check: "kafka.topic", Status: Skip, Detail: "skipped: " + why},
		{Check: "kafka.dlq", Status: Skip, Detail: "skipped: " + why},
		{Check: "kafka.parking", Status: Skip, Detail: "skipped: " + why},
		{Check: "kafka.group", Status: Skip, Detail: "skipped: " + why},
		{Check: "kafka.acls", Status: Skip, Detail: "skipped: " + why}}
}

// describeSecurity names the transport the configuration selects.
func describeSecurity(cfg config.Config) string {
	s := "plaintext"
	if cfg.KafkaTLS {
		s = "TLS"
		if cfg.KafkaTLSCAFile != "" {
			s += " (CA " + cfg.KafkaTLSCAFile + ")"
		}
		if leaf := clientLeaf(cfg); leaf != nil {
			s += fmt.Sprintf(", client certificate %q valid until %s", leaf.Subject.String(),
				leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	switch cfg.KafkaSASLMechanism {
	case "":
		s += ", no SASL"
	case config.AWSMSKIAM:
		s += ", SASL AWS_MSK_IAM with the AWS default credential chain"
	default:
		s += fmt.Sprintf(", SASL %s as %s", cfg.KafkaSASLMechanism, cfg.KafkaSASLUsername)
	}
	return s
}

// kafkaGoPrefix is the method name kafka-go puts before its errors.
var kafkaGoPrefix = regexp.MustCompile(`kafka\.\(\*\w+\)\.\w+: `)

// kafkaErr shortens kafka-go's error texts ("kafka.(*Client).Metadata: …").
func kafkaErr(err error) string {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return fmt.Sprintf("%s (%s)", ke.Title(), ke.Description())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return "timed out (nothing answered: a wrong address or port, a firewall, or TLS/SASL settings that do not match the listener)"
	}
	return oneLine(kafkaGoPrefix.ReplaceAllString(err.Error(), ""), 300)
}

func topicErr(name string, t metadataAPI.ResponseTopic, variable string) string {
	switch code := kafka.Error(t.ErrorCode); {
	case t.Name == "":
		return fmt.Sprintf("%s (%s): the brokers returned no metadata for it", name, variable)
	case code == kafka.UnknownTopicOrPartition:
		return fmt.Sprintf("%s (%s) does not exist; the worker does not create topics", name, variable)
	case code == kafka.TopicAuthorizationFailed:
		return fmt.Sprintf("%s (%s): not authorized to describe it (or it does not exist)", name, variable)
	case code != 0:
		return fmt.Sprintf("%s (%s): %s", name, variable, code.Title())
	}
	return ""
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func leaderless(t metadataAPI.ResponseTopic) int {
	n := 0
	for _, p := range t.Partitions {
		if p.LeaderID < 0 {
			n++
		}
	}
	return n
}

func describeTopic(t metadataAPI.ResponseTopic) string {
	rf := 0
	if len(t.Partitions) > 0 {
		rf = len(t.Partitions[0].ReplicaNodes)
	}
	s := fmt.Sprintf("%d partition%s, replication factor %d", len(t.Partitions), plural(len(t.Partitions)), rf)
	if n := leaderless(t); n > 0 {
		return s + fmt.Sprintf(", %d without a leader", n)
	}
	return s + ", every partition has a leader"
}

// topicMaxBytes reads max.message.bytes of topics; a topic whose value
// could not be read is absent from the result, with the reason under "".
func topicMaxBytes(ctx context.Context, cl *kafka.Client, to time.Duration, topics []string) map[string]string {
	out := map[string]string{}
	req := &kafka.DescribeConfigsRequest{}
	for _, t := range topics {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: t, ConfigNames: []string{"max.message.bytes"}})
	}
	cctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	res, err := cl.DescribeConfigs(cctx, req)
	if err != nil {
		out[""] = kafkaErr(err)
		return out
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			out[""] = kafkaErr(r.Error)
			continue
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "max.message.bytes" {
				out[r.ResourceName] = e.ConfigValue
			}
		}
	}
	return out
}

// describeDLQBytes reports the dead-letter topic's max.message.bytes
// against the input topics': a letter carries the record, so records larger
// than the dead-letter topic takes are dead-lettered without their value.
func describeDLQBytes(cfg config.Config, maxBytes map[string]string, st *Status) string {
	v, ok := maxBytes[cfg.KafkaDLQTopic]
	if !ok {
		*st = Warn
		return "max.message.bytes not verified: " + maxBytes[""] + " (reading it needs DESCRIBE_CONFIGS on the topic)"
	}
	dlqMax, _ := strconv.Atoi(v)
	s := fmt.Sprintf("max.message.bytes %s", v)
	largest, from := 0, ""
	for _, t := range cfg.KafkaTopics {
		if n, err := strconv.Atoi(maxBytes[t]); err == nil && n > largest {
			largest, from = n, t
		}
	}
	switch {
	case largest == 0:
		return s
	case dlqMax < largest:
		*st = Warn
		return s + fmt.Sprintf(", below the %d of %s: dead letters of records above about %d bytes are written without the record's value", largest, from, dlqMax)
	}
	return s + fmt.Sprintf(" (input %s: %d): a dead letter can hold any input record", from, largest)
}

// describeGroup describes the consumer group, asking the coordinator for
// the operations this principal may perform on it. It joins nothing and
// commits nothing. The returned operations are math.MinInt32 when unknown.
func describeGroup(ctx context.Context, tr *kafka.Transport, brokers []string, group string, to time.Duration) (Result, int32) {
	cctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	res := Result{Check: "kafka.group"}
	m, err := tr.RoundTrip(cctx, kafka.TCP(brokers...), &describegroups.Request{Groups: []string{group}, IncludeAuthorizedOperations: true})
	if err != nil {
		res.Status, res.Detail = Fail, fmt.Sprintf("%s (KAFKA_GROUP_ID) cannot be described: %s", group, kafkaErr(err))
		return res, math.MinInt32
	}
	resp, ok := m.(*describegroups.Response)
	if !ok || len(resp.Groups) != 1 {
		res.Status, res.Detail = Fail, fmt.Sprintf("%s (KAFKA_GROUP_ID): unexpected DescribeGroups answer", group)
		return res, math.MinInt32
	}
	g := resp.Groups[0]
	switch code := kafka.Error(g.ErrorCode); {
	case code == kafka.GroupAuthorizationFailed:
		res.Status, res.Detail = Fail, fmt.Sprintf("%s (KAFKA_GROUP_ID): not authorized to describe it; the worker needs READ on the group", group)
		return res, math.MinInt32
	case code != 0:
		res.Status, res.Detail = Fail, fmt.Sprintf("%s (KAFKA_GROUP_ID) cannot be described: %s", group, kafkaErr(code))
		return res, math.MinInt32
	}
	const only = "described only: the check joins no group and commits nothing"
	switch {
	case g.GroupState == "Dead" || g.GroupState == "":
		res.Status, res.Detail = OK, fmt.Sprintf("%s does not exist yet; the first worker to join creates it (%s)", group, only)
	case g.ProtocolType != "" && g.ProtocolType != "consumer":
		res.Status, res.Detail = Fail, fmt.Sprintf("%s is a %q group, not a consumer group: another application uses this KAFKA_GROUP_ID", group, g.ProtocolType)
	default:
		res.Status, res.Detail = OK, fmt.Sprintf("%s is %s with %d member%s (%s)", group, g.GroupState, len(g.Members), plural(len(g.Members)), only)
	}
	return res, g.AuthorizedOperations
}

// clientLeaf is the client certificate of KAFKA_TLS_CERT_FILE and
// KAFKA_TLS_KEY_FILE as the files are now, or nil (none, or unreadable:
// the configuration check reports that).
func clientLeaf(cfg config.Config) *x509.Certificate {
	if cfg.KafkaTLSCertFile == "" {
		return nil
	}
	pair, err := tls.LoadX509KeyPair(cfg.KafkaTLSCertFile, cfg.KafkaTLSKeyFile)
	if err != nil {
		return nil
	}
	return pair.Leaf
}

// expiredClientCert says why the client certificate cannot be used (it has
// expired, or is not valid yet), or "". A broker rejects such a certificate
// with a bare TLS alert; this says which file and when.
func expiredClientCert(cfg config.Config, now time.Time) string {
	leaf := clientLeaf(cfg)
	switch {
	case leaf == nil:
		return ""
	case now.After(leaf.NotAfter):
		return fmt.Sprintf("the client certificate in KAFKA_TLS_CERT_FILE %s (%s) expired at %s: the brokers will refuse it; renew it (the worker re-reads the file)",
			cfg.KafkaTLSCertFile, leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return fmt.Sprintf("the client certificate in KAFKA_TLS_CERT_FILE %s (%s) is not valid before %s",
			cfg.KafkaTLSCertFile, leaf.Subject.String(), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	return ""
}
