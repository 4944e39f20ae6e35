package consumer

import (
	"context"
	"net"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
)

// kafka-go v0.4.51 decodes Heartbeat responses of version 1 and later with
// its fields in the wrong order (error_code before throttle_time_ms; the
// protocol has them the other way round: segmentio/kafka-go PR #1371, open),
// so (*kafka.Client).Heartbeat reports success for every answer, a fenced
// member's included. The lease must not rest on that, so the Heartbeat API
// is registered here again with the protocol's field order, and the lease
// sends it through the Transport itself (heartbeat, below). kafka-go's
// ConsumerGroup is not affected: it heartbeats with version 0 over its own
// connection. (*kafka.Client).Heartbeat must not be called in this program:
// its type assertion on the response would panic.
func init() {
	protocol.Register(&heartbeatRequest{}, &heartbeatResponse{})
}

type heartbeatRequest struct {
	// A tagged field marks version 4 as a "flexible" message.
	_               struct{} `kafka:"min=v4,max=v4,tag"`
	GroupID         string   `kafka:"min=v0,max=v4"`
	GenerationID    int32    `kafka:"min=v0,max=v4"`
	MemberID        string   `kafka:"min=v0,max=v4"`
	GroupInstanceID string   `kafka:"min=v3,max=v4,nullable"`
}

func (*heartbeatRequest) ApiKey() protocol.ApiKey { return protocol.Heartbeat }

// Group routes the request to the group's coordinator.
func (r *heartbeatRequest) Group() string { return r.GroupID }

type heartbeatResponse struct {
	_              struct{} `kafka:"min=v4,max=v4,tag"`
	ThrottleTimeMs int32    `kafka:"min=v1,max=v4"`
	ErrorCode      int16    `kafka:"min=v0,max=v4"`
}

func (*heartbeatResponse) ApiKey() protocol.ApiKey { return protocol.Heartbeat }

// heartbeat sends one Heartbeat for gen to the group's coordinator through
// tr. It returns the coordinator's error (a kafka.Error), or the error of
// the round trip.
func heartbeat(ctx context.Context, tr kafka.RoundTripper, addr net.Addr, gen *kafka.Generation) error {
	m, err := tr.RoundTrip(ctx, addr, &heartbeatRequest{
		GroupID: gen.GroupID, GenerationID: gen.ID, MemberID: gen.MemberID,
	})
	if err != nil {
		return err
	}
	if res := m.(*heartbeatResponse); res.ErrorCode != 0 {
		return kafka.Error(res.ErrorCode)
	}
	return nil
}
