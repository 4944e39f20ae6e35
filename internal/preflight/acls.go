package preflight

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	metadataAPI "github.com/segmentio/kafka-go/protocol/metadata"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// need is one operation the worker needs on one resource.
type need struct {
	resource string // "topic t", "group g"
	op       kafka.ACLOperationType
	why      string
	ops      int32 // the authorized operations the brokers reported; MinInt32: unknown
	missing  bool  // the resource does not exist or cannot be described (its own check failed)
}

// checkACLs checks the operations the worker needs: READ on each input
// topic and on the group, WRITE on the dead-letter topic (each implies
// DESCRIBE), and those on the parking topic (checkParking). The brokers report what this principal may do on each
// resource (KIP-430); where they do not, DescribeAcls can still show that
// no authorizer is configured. Otherwise the check says what it could not
// verify.
func checkACLs(ctx context.Context, cl *kafka.Client, cfg config.Config, topics map[string]metadataAPI.ResponseTopic,
	groupOps int32, groupFailed bool, parking []need, to time.Duration) Result {
	var needs []need
	for _, t := range cfg.KafkaTopics {
		needs = append(needs, need{resource: "topic " + t, op: kafka.ACLOperationTypeRead, why: "consume",
			ops: topics[t].TopicAuthorizedOperations, missing: topics[t].ErrorCode != 0 || topics[t].Name == ""})
	}
	needs = append(needs, need{resource: "group " + cfg.KafkaGroupID, op: kafka.ACLOperationTypeRead, why: "join and commit", ops: groupOps, missing: groupFailed})
	d := topics[cfg.KafkaDLQTopic]
	needs = append(needs, need{resource: "topic " + cfg.KafkaDLQTopic, op: kafka.ACLOperationTypeWrite, why: "dead letters",
		ops: d.TopicAuthorizedOperations, missing: d.ErrorCode != 0 || d.Name == ""})
	needs = append(needs, parking...)

	var granted, denied, unknown, skipped []string
	for _, n := range needs {
		label := fmt.Sprintf("%s on %s", strings.ToUpper(n.op.String()), n.resource)
		switch {
		case n.missing:
			skipped = append(skipped, label)
		case n.ops == math.MinInt32:
			unknown = append(unknown, label)
		case n.ops&(1<<n.op) != 0:
			granted = append(granted, label)
		default:
			denied = append(denied, label+" ("+n.why+")")
		}
	}
	how := "as the brokers report for this principal"
	if len(unknown) > 0 {
		cctx, cancel := context.WithTimeout(ctx, to)
		res, err := cl.DescribeACLs(cctx, &kafka.DescribeACLsRequest{Filter: kafka.ACLFilter{
			ResourceTypeFilter: kafka.ResourceTypeAny, ResourcePatternTypeFilter: kafka.PatternTypeAny,
			Operation: kafka.ACLOperationTypeAny, PermissionType: kafka.ACLPermissionTypeAny}})
		cancel()
		if err == nil && errors.Is(res.Error, kafka.SecurityDisabled) {
			granted, unknown = append(granted, unknown...), nil
			how = "no authorizer is configured on the brokers (DescribeAcls: security disabled), so every operation is allowed"
		}
	}
	var parts []string
	if len(denied) > 0 {
		parts = append(parts, "not granted: "+strings.Join(denied, ", "))
	}
	if len(granted) > 0 {
		parts = append(parts, "granted: "+strings.Join(granted, ", "))
	}
	if len(unknown) > 0 {
		parts = append(parts, "not verified (the brokers did not report authorized operations and DescribeAcls was not allowed): "+strings.Join(unknown, ", "))
	}
	if len(skipped) > 0 {
		parts = append(parts, "not checked (missing, or not even describable: see its line): "+strings.Join(skipped, ", "))
	}
	r := Result{Check: "kafka.acls", Detail: strings.Join(parts, "; ") + " (" + how + ")"}
	switch {
	case len(denied) > 0:
		r.Status = Fail
	case len(unknown) > 0:
		r.Status = Warn
	case len(granted) == 0:
		r.Status, r.Detail = Skip, strings.Join(parts, "; ")
	default:
		r.Status = OK
	}
	return r
}
