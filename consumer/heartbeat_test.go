package consumer

import (
	"testing"

	"github.com/segmentio/kafka-go/protocol"
	kheartbeat "github.com/segmentio/kafka-go/protocol/heartbeat"
)

// heartbeatResponseBytes is a Heartbeat response body of version v as the
// protocol lays it out: throttle_time_ms (from v1), error_code, and from v4
// an empty tagged-field section.
func heartbeatResponseBytes(v int16, throttleMs int32, code int16) []byte {
	var b []byte
	if v >= 1 {
		b = append(b, byte(throttleMs>>24), byte(throttleMs>>16), byte(throttleMs>>8), byte(throttleMs))
	}
	b = append(b, byte(code>>8), byte(code))
	if v >= 4 {
		b = append(b, 0) // no tagged fields
	}
	return b
}

// TestHeartbeatWorkaroundCanary is the canary for heartbeat.go: it fails as
// soon as kafka-go decodes Heartbeat responses of version 1 and later
// correctly, which is when the workaround (our own registration of the
// Heartbeat API, replacing kafka-go's process-wide) must go. It decodes the
// protocol's bytes with kafka-go's own response type, not through the
// registry (which heartbeat.go's init has replaced).
func TestHeartbeatWorkaroundCanary(t *testing.T) {
	const unknownMember = 25 // UNKNOWN_MEMBER_ID: what a fenced member hears
	for v := int16(1); v <= 4; v++ {
		body := heartbeatResponseBytes(v, 7, unknownMember)

		// The premise of the workaround: kafka-go's type misreads it.
		var theirs kheartbeat.Response
		if err := protocol.Unmarshal(body, v, &theirs); err == nil && theirs.ErrorCode == unknownMember && theirs.ThrottleTimeMs == 7 {
			t.Errorf("kafka-go now decodes Heartbeat v%d correctly (error_code %d, throttle_time_ms %d): "+
				"the upstream fix has landed. Remove the workaround: delete consumer/heartbeat.go's "+
				"heartbeatRequest/heartbeatResponse and their init registration, send the lease's heartbeat "+
				"with kafka-go's own Heartbeat (a *kafka.Client), and delete this canary "+
				"(see heartbeat.go's comment and DESIGN.md)", v, theirs.ErrorCode, theirs.ThrottleTimeMs)
			continue
		}
		if theirs.ErrorCode == unknownMember {
			t.Errorf("v%d: kafka-go's decoding changed (error_code %d, throttle_time_ms %d): recheck heartbeat.go's premise",
				v, theirs.ErrorCode, theirs.ThrottleTimeMs)
		}

		// The workaround's own type reads it as the protocol means it.
		var ours heartbeatResponse
		if err := protocol.Unmarshal(body, v, &ours); err != nil || ours.ErrorCode != unknownMember || ours.ThrottleTimeMs != 7 {
			t.Errorf("v%d: heartbeat.go's response decodes as error_code %d, throttle_time_ms %d (err %v); want %d, 7",
				v, ours.ErrorCode, ours.ThrottleTimeMs, err, unknownMember)
		}
	}
}
