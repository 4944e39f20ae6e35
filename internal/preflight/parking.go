package preflight

import (
	"context"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol/createtopics"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// parkingHeaderMargin is what a parked record may add to its source record
// (parkio's headers, names included), for the max.message.bytes warning.
const parkingHeaderMargin = 4096

// parkingTopic is the parking topic's name and the settings the worker
// creates it with.
func parkingTopic(cfg config.Config) parkio.Config {
	return parkio.Config{Topic: parkio.TopicName(cfg.KafkaGroupID), Partitions: cfg.ParkingTopicPartitions,
		Replication: cfg.ParkingTopicReplication, Retention: cfg.ParkingTopicRetention}
}

// checkParking is the kafka.parking line (issue 21: the records of a
// workspace that cannot take changes are parked in <group>.parked): the
// topic exists, with its partitions, replication, retention, cleanup policy
// and max.message.bytes; or it does not yet and the worker will create it,
// which a validate-only CreateTopics of exactly the worker's request proves
// allowed (it creates nothing). It also returns what kafka.acls checks on
// the topic: DESCRIBE, READ and WRITE on an existing topic, CREATE on a
// missing one. Without a registry there is nothing to park: skipped.
func checkParking(ctx context.Context, tr *kafka.Transport, cl *kafka.Client, cfg config.Config, md *metadataAPI.Response,
	maxBytes map[string]string, to time.Duration) (Result, []need) {
	if cfg.MoEngageWorkspacesDir == "" {
		return Result{Check: "kafka.parking", Status: Skip, Detail: "skipped: without MOENGAGE_WORKSPACES_DIR (one workspace) nothing is parked, and the worker neither creates nor reads " +
			parkio.TopicName(cfg.KafkaGroupID)}, nil
	}
	pc := parkingTopic(cfg)
	t := findTopic(md, pc.Topic)
	needs := func(ops int32, missing bool, what ...kafka.ACLOperationType) []need {
		var out []need
		for _, op := range what {
			out = append(out, need{resource: "topic " + pc.Topic, op: op, why: "park a stuck workspace's changes", ops: ops, missing: missing})
		}
		return out
	}
	existing := needs(t.TopicAuthorizedOperations, false, kafka.ACLOperationTypeDescribe, kafka.ACLOperationTypeRead, kafka.ACLOperationTypeWrite)
	switch code := kafka.Error(t.ErrorCode); {
	case t.Name == "":
		return Result{Check: "kafka.parking", Status: Fail, Detail: pc.Topic + ": the brokers returned no metadata for it"},
			needs(0, true, kafka.ACLOperationTypeDescribe)
	case code == kafka.TopicAuthorizationFailed:
		return Result{Check: "kafka.parking", Status: Fail, Detail: pc.Topic + " (the parking topic, KAFKA_GROUP_ID + .parked): not authorized to describe it (or it does not exist); " +
			"the worker needs DESCRIBE, READ and WRITE on it, and CREATE while it does not exist"}, needs(0, true, kafka.ACLOperationTypeDescribe)
	case code == kafka.UnknownTopicOrPartition:
		return parkingToCreate(ctx, tr, cfg, pc, md, to)
	case code != 0:
		return Result{Check: "kafka.parking", Status: Fail, Detail: fmt.Sprintf("%s: %s", pc.Topic, code.Title())}, needs(0, true, kafka.ACLOperationTypeDescribe)
	}
	r := Result{Check: "kafka.parking", Status: OK, Detail: fmt.Sprintf("%s exists: %s", pc.Topic, describeTopic(t))}
	if leaderless(t) > 0 {
		r.Status = Warn
	}
	if n := len(t.Partitions); n != pc.Partitions {
		r.Detail += fmt.Sprintf(" (PARKING_TOPIC_PARTITIONS %d applies only to a topic the worker creates)", pc.Partitions)
	}
	r.Detail += "; " + describeParkingConfigs(ctx, cl, cfg, pc.Topic, maxBytes, to, &r.Status)
	return r, existing
}

func findTopic(md *metadataAPI.Response, name string) metadataAPI.ResponseTopic {
	for _, t := range md.Topics {
		if t.Name == name {
			return t
		}
	}
	return metadataAPI.ResponseTopic{}
}

// parkingToCreate reports the topic the worker will create, after the
// controller validated the creation (CreateTopics validate-only, on a
// connection of our own: kafka-go's Transport, after a successful
// CreateTopics, waits for the topic to show in its metadata, which a
// validate-only one never does).
func parkingToCreate(ctx context.Context, tr *kafka.Transport, cfg config.Config, pc parkio.Config, md *metadataAPI.Response,
	to time.Duration) (Result, []need) {
	spec := parkio.CreateSpec(pc, len(md.Brokers))
	conf := map[string]string{}
	for _, e := range spec.ConfigEntries {
		conf[e.ConfigName] = e.ConfigValue
	}
	what := fmt.Sprintf("%d partitions (PARKING_TOPIC_PARTITIONS), replication factor %d (PARKING_TOPIC_REPLICATION %d, capped at the %d broker%s), "+
		"retention %s (PARKING_TOPIC_RETENTION), cleanup.policy delete, min.insync.replicas %s, max.message.bytes %s",
		spec.NumPartitions, spec.ReplicationFactor, pc.Replication, len(md.Brokers), plural(len(md.Brokers)),
		fmtRetention(conf["retention.ms"]), conf["min.insync.replicas"], conf["max.message.bytes"])
	create := need{resource: "topic " + pc.Topic, op: kafka.ACLOperationTypeCreate, why: "create the parking topic"}
	r := Result{Check: "kafka.parking", Status: OK, Detail: pc.Topic + " does not exist yet; the worker creates it with " + what}
	code, msg, err := validateCreate(ctx, tr, md, spec, to)
	switch {
	case err != nil:
		r.Status, create.ops = Warn, math.MinInt32
		r.Detail += "; creating it could not be validated: " + kafkaErr(err)
	case code == 0:
		create.ops = 1 << kafka.ACLOperationTypeCreate
		r.Detail += " (the controller validated this creation)"
	case code == kafka.TopicAuthorizationFailed || code == kafka.ClusterAuthorizationFailed:
		r.Status = Fail
		r.Detail += "; but the worker may not create it: " + code.Title() + " (it needs CREATE on the topic or on the cluster)"
	default:
		r.Status, create.ops = Fail, math.MinInt32
		r.Detail += fmt.Sprintf("; but the controller refuses this creation: %s %s", code.Title(), msg)
	}
	// READ and WRITE cannot be verified on a topic that does not exist:
	// kafka.acls lists them as not checked.
	later := func(op kafka.ACLOperationType) need {
		return need{resource: "topic " + pc.Topic, op: op, why: "park a stuck workspace's changes", missing: true}
	}
	return r, []need{create, later(kafka.ACLOperationTypeRead), later(kafka.ACLOperationTypeWrite)}
}

// validateCreate sends spec as a validate-only CreateTopics to the
// controller (any broker forwards it under KRaft).
func validateCreate(ctx context.Context, tr *kafka.Transport, md *metadataAPI.Response, spec kafka.TopicConfig,
	to time.Duration) (kafka.Error, string, error) {
	var addr string
	for _, b := range md.Brokers {
		if addr == "" || b.NodeID == md.ControllerID {
			addr = net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port)))
		}
	}
	pc, err := dialRaw(ctx, addr, tr.TLS, tr.SASL, to)
	if err != nil {
		return 0, "", err
	}
	defer pc.Close()
	rt := createtopics.RequestTopic{Name: spec.Topic, NumPartitions: int32(spec.NumPartitions), ReplicationFactor: int16(spec.ReplicationFactor)}
	for _, e := range spec.ConfigEntries {
		rt.Configs = append(rt.Configs, createtopics.RequestConfig{Name: e.ConfigName, Value: e.ConfigValue})
	}
	m, err := pc.RoundTrip(&createtopics.Request{Topics: []createtopics.RequestTopic{rt}, TimeoutMs: int32(to.Milliseconds()), ValidateOnly: true})
	if err != nil {
		return 0, "", err
	}
	res, ok := m.(*createtopics.Response)
	if !ok || len(res.Topics) != 1 {
		return 0, "", fmt.Errorf("unexpected CreateTopics answer %T", m)
	}
	return kafka.Error(res.Topics[0].ErrorCode), res.Topics[0].ErrorMessage, nil
}

// describeParkingConfigs reports an existing parking topic's retention,
// cleanup policy and max.message.bytes; it warns of compaction (it deletes
// parked changes that share a key), of a retention under an hour, and of a
// max.message.bytes that a large input record plus the parking headers
// would exceed.
func describeParkingConfigs(ctx context.Context, cl *kafka.Client, cfg config.Config, topic string, maxBytes map[string]string,
	to time.Duration, st *Status) string {
	conf, err := topicConfigs(ctx, cl, to, topic, "retention.ms", "cleanup.policy", "max.message.bytes", "min.insync.replicas")
	if err != nil {
		*st = Warn
		return "configs not verified: " + kafkaErr(err) + " (reading them needs DESCRIBE_CONFIGS)"
	}
	parts := []string{"retention " + fmtRetention(conf["retention.ms"]), "cleanup.policy " + conf["cleanup.policy"],
		"min.insync.replicas " + conf["min.insync.replicas"], "max.message.bytes " + conf["max.message.bytes"]}
	var warns []string
	if strings.Contains(conf["cleanup.policy"], "compact") {
		*st = Warn
		warns = append(warns, "compaction deletes parked changes that share a key: use cleanup.policy delete")
	}
	if ms, err := strconv.ParseInt(conf["retention.ms"], 10, 64); err == nil && ms >= 0 && ms < time.Hour.Milliseconds() {
		*st = Warn
		warns = append(warns, "a workspace stuck longer than the retention loses its parked changes")
	}
	parkMax, _ := strconv.Atoi(conf["max.message.bytes"])
	largest, from := 0, ""
	for _, t := range cfg.KafkaTopics {
		if n, err := strconv.Atoi(maxBytes[t]); err == nil && n > largest {
			largest, from = n, t
		}
	}
	if largest > 0 && parkMax < largest+parkingHeaderMargin {
		*st = Warn
		warns = append(warns, fmt.Sprintf("max.message.bytes %d is below the %d of %s plus the parking headers: a record above about %d bytes cannot be parked (its workspace's records then wait in the input partition)",
			parkMax, largest, from, parkMax-parkingHeaderMargin))
	}
	return strings.Join(append([]string{strings.Join(parts, ", ")}, warns...), "; ")
}

// topicConfigs reads the named configs of topic.
func topicConfigs(ctx context.Context, cl *kafka.Client, to time.Duration, topic string, names ...string) (map[string]string, error) {
	cctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	res, err := cl.DescribeConfigs(cctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: names}}})
	if err != nil {
		return nil, err
	}
	if len(res.Resources) != 1 {
		return nil, fmt.Errorf("DescribeConfigs answered for %d resources", len(res.Resources))
	}
	if err := res.Resources[0].Error; err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range res.Resources[0].ConfigEntries {
		out[e.ConfigName] = e.ConfigValue
	}
	return out, nil
}

// fmtRetention shows retention.ms as a duration ("-1": unlimited).
func fmtRetention(ms string) string {
	n, err := strconv.ParseInt(ms, 10, 64)
	switch {
	case err != nil:
		return "retention.ms " + ms
	case n < 0:
		return "unlimited"
	}
	d := time.Duration(n) * time.Millisecond
	if d%time.Hour == 0 {
		return strconv.FormatInt(int64(d/time.Hour), 10) + "h"
	}
	return d.String()
}
