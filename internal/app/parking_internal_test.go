package app

import (
	"log/slog"
	"testing"

	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// Parking is wired only with a registry; then on the group's parking
// topic, created by the consumer with the PARKING_TOPIC_* settings, with
// the sink's holds and blocked view and the batcher's own Revoke.
func TestParkingWiredWithARegistry(t *testing.T) {
	dir := rig.Dir(t, map[string]string{"DEF.key": "def-key", "WA.key": "a"})
	for _, c := range []struct {
		name     string
		registry bool
	}{{"single workspace", false}, {"registry", true}} {
		cfg := registryConfig(dir, "DEF", "def-key")
		cfg.ParkingTopicPartitions, cfg.ParkingTopicReplication = 7, 2
		if !c.registry {
			cfg.MoEngageWorkspacesDir = ""
		}
		w, err := build(Options{Config: cfg, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		cc := w.consumerConfig(nil, lease.New())
		want := c.registry
		if got := cc.Parking != nil; got != want {
			t.Errorf("%s: parking %v, want %v", c.name, got, want)
		}
		if (cc.Blocked != nil) != want || (cc.BlockedChanged != nil) != want {
			t.Errorf("%s: Blocked set %v, BlockedChanged set %v, want %v", c.name, cc.Blocked != nil, cc.BlockedChanged != nil, want)
		}
		if pk := cc.Parking; pk != nil {
			if pk.Topic != parkio.TopicName("g") || pk.IO == nil || pk.IO.Topic != pk.Topic ||
				pk.HoldOf == nil || pk.Hold == nil || pk.Revoke == nil ||
				pk.IO.Partitions != 7 || pk.IO.Replication != 2 || pk.IO.Retention != cfg.ParkingTopicRetention {
				t.Errorf("%s: parking %+v", c.name, *pk)
			}
		}
		w.close()
	}
}
