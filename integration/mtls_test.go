package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// mtlsEnv is the worker's configuration for the MTLS listener: the CA of
// the broker and, when certFile is not empty, a client certificate.
func (sb *secBroker) mtlsEnv(a *api, topic, dlq, certFile, keyFile string) map[string]string {
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["KAFKA_BROKERS"] = sb.mtls
	env["KAFKA_TLS_CA_FILE"] = sb.caFile
	if certFile != "" {
		env["KAFKA_TLS_CERT_FILE"], env["KAFKA_TLS_KEY_FILE"] = certFile, keyFile
	}
	return env
}

// rotate replaces a mounted certificate and key the way the kubelet
// updates a Secret volume: new files, swapped in by rename.
func rotate(t *testing.T, dir string, certPEM, keyPEM []byte) {
	t.Helper()
	for name, data := range map[string][]byte{"user.crt": certPEM, "user.key": keyPEM} {
		tmp := filepath.Join(dir, "."+name+".new")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// runMTLSRotation: the worker, given only the listener that requires a
// client certificate, consumes, dead-letters and commits with the
// certificate of KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE, and `check` passes
// with it. Then the certificate is rotated in place and the first one
// expires: the next connections (a new generation, forced by adding
// partitions) present the rotated one, so the worker goes on without a
// restart. A worker that read its certificate once would present the
// expired one and never rejoin.
func (sb *secBroker) runMTLSRotation(t *testing.T) {
	start := time.Now()
	topic, dlq := sb.topics(t)
	a := startAPI(t, nil)
	p := sb.producer(t, topic)
	g := newGen(40, 8, 150)
	p.sendN(t, g, 200)

	dir := t.TempDir()
	// The first certificate lives just long enough for the first phase.
	firstExpiry := time.Now().Add(25 * time.Second).Truncate(time.Second)
	c1, k1 := sb.clientCA.issueClient(t, "cohortsync-user-1", firstExpiry)
	rotate(t, dir, c1, k1)
	env := sb.mtlsEnv(a, topic, dlq, filepath.Join(dir, "user.crt"), filepath.Join(dir, "user.key"))

	r := runCheck(t, env)
	if r.code != 0 {
		t.Fatalf("check with the client certificate: exit %d", r.code)
	}
	wantLine(t, r, "kafka.brokers", "ok", `client certificate "CN=cohortsync-user-1" valid until`)
	wantLine(t, r, "kafka.acls", "ok")

	w := startWorker(t, "w-mtls", env)
	waitFor(t, 30*time.Second, "readiness", w.ready)
	if err := p.raw(context.Background(), kafka.Message{Key: []byte("poison-0"), Value: []byte(secPoison)}); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, a, p.model(), time.Minute)
	sb.waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	if got := sb.readTopic(t, dlq, 1, 30*time.Second); len(got) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(got))
	}
	if time.Now().After(firstExpiry.Add(-2 * time.Second)) {
		t.Fatalf("the first phase took until %s, past the first certificate's expiry %s: the test proves nothing",
			time.Now().Format(time.RFC3339), firstExpiry.Format(time.RFC3339))
	}

	c2, k2 := sb.clientCA.issueClient(t, "cohortsync-user-2", time.Now().Add(24*time.Hour))
	rotate(t, dir, c2, k2)
	time.Sleep(time.Until(firstExpiry) + 2*time.Second)
	// The rotated certificate is what `check` sees, and the expired one
	// would now be refused by the broker.
	expired := filepath.Join(dir, "expired")
	if err := os.MkdirAll(expired, 0o700); err != nil {
		t.Fatal(err)
	}
	rotate(t, expired, c1, k1)
	r = runCheck(t, sb.mtlsEnv(a, topic, dlq, filepath.Join(expired, "user.crt"), filepath.Join(expired, "user.key")))
	wantLine(t, r, "kafka.brokers", "FAIL", "expired at")

	// Two more partitions: the partition watch ends the generation, the
	// worker rejoins over new connections and reads the new partitions.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(sb.admin), Timeout: 20 * time.Second,
		Transport: &kafka.Transport{DialTimeout: 5 * time.Second}}
	res, err := client.CreatePartitions(ctx, &kafka.CreatePartitionsRequest{
		Topics: []kafka.TopicPartitionsConfig{{Name: topic, Count: 4}}})
	if err == nil {
		err = res.Errors[topic]
	}
	if err != nil {
		t.Fatalf("adding partitions: %v", err)
	}
	gensBefore := countLogs(w, "joined generation")
	waitFor(t, 30*time.Second, "a new generation after the rotation", func() bool {
		return countLogs(w, "joined generation") > gensBefore
	})
	p2 := sb.producer(t, topic) // a fresh writer: it must see 4 partitions
	p2.want = p.want
	p2.sendN(t, g, 300)
	waitConverged(t, a, p2.model(), time.Minute)
	sb.waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	if !hasLog(w.logs(), func(l map[string]any) bool {
		return l["msg"] == "Kafka client certificate loaded" && strings.Contains(fmt.Sprint(l["subject"]), "cohortsync-user-2")
	}) {
		t.Error("the worker did not log loading the rotated certificate")
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	t.Logf("mTLS with a rotation: %d events in %s", p.count+p2.count, time.Since(start).Round(time.Millisecond))
}

func countLogs(w *worker, msg string) int {
	n := 0
	for _, l := range w.logs() {
		if l["msg"] == msg {
			n++
		}
	}
	return n
}

// runMTLSWithout: without a client certificate the listener refuses the
// worker (it logs why, never joins the group and commits nothing), and `check`
// fails kafka.brokers.
func (sb *secBroker) runMTLSWithout(t *testing.T) {
	topic, dlq := sb.topics(t)
	a := startAPI(t, nil)
	p := sb.producer(t, topic)
	p.sendN(t, newGen(41, 5, 50), 50)
	env := sb.mtlsEnv(a, topic, dlq, "", "")

	r := runCheck(t, env)
	wantLine(t, r, "kafka.brokers", "FAIL", "no bootstrap broker reachable")
	if r.code != 1 {
		t.Errorf("check exit %d, want 1", r.code)
	}

	before := len(a.Requests()) // check's own API requests
	w := startWorker(t, "w-mtls-none", env)
	waitFor(t, 30*time.Second, "a TLS refusal in the worker's log", func() bool {
		for _, l := range w.logs() {
			if lvl, _ := l["level"].(string); (lvl == "WARN" || lvl == "ERROR") && strings.Contains(fmt.Sprint(l), "tls:") {
				return true
			}
		}
		return false
	})
	time.Sleep(2 * time.Second)
	// Readiness is the pod's own state (joined or joining), so a refused
	// worker is ready; what it must not do is join the group.
	if w.joined() {
		t.Fatal("joined the group without a client certificate")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, committed, err := sb.offsets(ctx, topic, env["KAFKA_GROUP_ID"])
	if err != nil {
		t.Fatal(err)
	}
	for part, c := range committed {
		if c >= 0 {
			t.Errorf("partition %d committed to %d", part, c)
		}
	}
	if n := len(a.Requests()) - before; n != 0 {
		t.Errorf("the API received %d requests from the worker", n)
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
}
