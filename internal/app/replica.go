package app

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"strconv"
)

// newReplicaID names this process on the budget board and to the API
// (X-Cohortsync-Replica): "HOST-PID-RANDOM". Host and pid are only there to
// be read by people; the 8 random bytes, drawn at every start, make it
// unique. Host and pid alone are not: in a container the pid is 1, and
// containers that share the host's UTS namespace (host networking in
// Docker, Podman or compose, hostNetwork pods on one node) share its
// hostname, so replicas of one image on one host would all have one name
// and overwrite each other's budget records. The board reports a name that
// is used twice all the same (board.Config.OnDuplicate).
func newReplicaID(host string, pid int) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand's Read never fails
	if host == "" {
		host = "replica"
	}
	return host + "-" + strconv.Itoa(pid) + "-" + hex.EncodeToString(b)
}

// defaultReplicaID is newReplicaID for this process.
func defaultReplicaID() string {
	host, _ := os.Hostname()
	return newReplicaID(host, os.Getpid())
}
