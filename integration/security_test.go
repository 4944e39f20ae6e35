package integration

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"hash"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// The SASL user of the secured broker. The passwords are distinctive so that
// a scan of the worker's output for them cannot match by accident.
const (
	secUser          = "alice"
	secPassword      = "Al1ce-s3cret-4b7e9d2f"
	secWrongPassword = "n0t-Al1ce-8c3a5e1b"
)

var secMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// secBroker is a second local Apache Kafka with, next to its PLAINTEXT
// listener (used by the test itself for topics, producing and offsets), a
// SASL_SSL and a SASL_PLAINTEXT listener accepting PLAIN, SCRAM-SHA-256 and
// SCRAM-SHA-512.
type secBroker struct {
	b         *localkafka.Broker
	admin     string // PLAINTEXT
	saslSSL   string // SASL_SSL, certificate signed by caFile's CA
	saslPlain string // SASL_PLAINTEXT
	mtls      string // SSL with client authentication required (certificates of clientCA)
	caFile    string // PEM of the CA that signed the broker's certificate
	clientCA  *testCA
	otherCA   string // PEM of a CA that did not
}

// TestKafkaSecurity runs the worker binary against a real broker over
// SASL_SSL (a CA made by the test, PLAIN and both SCRAM mechanisms) and
// SASL_PLAINTEXT: consumer group, commits and the dead-letter producer all
// go through the secured listener; a wrong password or an unknown CA leaves
// the worker unready with nothing consumed or committed; the password never
// appears in the worker's output.
func TestKafkaSecurity(t *testing.T) {
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Skip("KAFKA_BROKERS is set: this test starts its own broker with SASL_SSL listeners")
	}
	begin := time.Now()
	sb := startSecBroker(t)
	t.Logf("secured broker ready in %s: PLAINTEXT %s, SASL_SSL %s, SASL_PLAINTEXT %s",
		time.Since(begin).Round(time.Millisecond), sb.admin, sb.saslSSL, sb.saslPlain)

	// The subtests share the broker; each has its own topics, group and
	// API emulator, so they run in parallel inside this group.
	t.Run("cases", func(t *testing.T) {
		for i, mech := range secMechanisms {
			t.Run("SASL_SSL/"+mech, func(t *testing.T) {
				t.Parallel()
				sb.runOK(t, uint64(10+i), sb.saslSSL, true, mech)
			})
			t.Run("SASL_SSL/"+mech+"/wrong-password", func(t *testing.T) {
				t.Parallel()
				sb.runRejected(t, sb.saslSSL, mech, sb.caFile, secWrongPassword,
					"SASL authentication failure", saslFailure)
			})
		}
		t.Run("SASL_PLAINTEXT/SCRAM-SHA-256", func(t *testing.T) {
			t.Parallel()
			sb.runOK(t, 20, sb.saslPlain, false, "SCRAM-SHA-256")
		})
		t.Run("MTLS/rotation", func(t *testing.T) {
			t.Parallel()
			sb.runMTLSRotation(t)
		})
		t.Run("MTLS/no-client-certificate", func(t *testing.T) {
			t.Parallel()
			sb.runMTLSWithout(t)
		})
		t.Run("SASL_SSL/unknown-CA", func(t *testing.T) {
			t.Parallel()
			sb.runRejected(t, sb.saslSSL, "SCRAM-SHA-512", sb.otherCA, secPassword,
				"TLS verification failure", tlsFailure)
		})
	})
	t.Logf("TestKafkaSecurity took %s", time.Since(begin).Round(time.Millisecond))
}

// startSecBroker makes the certificates and starts the secured broker, then
// creates alice's SCRAM credentials and waits until every mechanism
// authenticates over SASL_SSL.
func startSecBroker(t *testing.T) *secBroker {
	t.Helper()
	dir := t.TempDir()
	ca := newTestCA(t, "cohortsync-it-ca")
	chain, key := ca.issueServer(t, "localhost")
	other := newTestCA(t, "cohortsync-it-other-ca")
	sb := &secBroker{
		caFile:  writeTestFile(t, dir, "ca.pem", ca.pem),
		otherCA: writeTestFile(t, dir, "other-ca.pem", other.pem),
	}
	sb.clientCA = newTestCA(t, "cohortsync-it-client-ca")

	const mechs = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
	plainJAAS := `org.apache.kafka.common.security.plain.PlainLoginModule required ` +
		fmt.Sprintf(`user_%s="%s";`, secUser, secPassword)
	scramJAAS := `org.apache.kafka.common.security.scram.ScramLoginModule required;`
	extra := map[string]string{
		"sasl.enabled.mechanisms": mechs,
		// TLS on the SASL_SSL listener: a PEM keystore given inline (the
		// chain is the leaf then the CA; the PKCS#8 key is unencrypted, so
		// no ssl.key.password).
		"listener.name.sasl_ssl.ssl.keystore.type":              "PEM",
		"listener.name.sasl_ssl.ssl.keystore.certificate.chain": string(chain),
		"listener.name.sasl_ssl.ssl.keystore.key":               string(key),
		// Mutual TLS (Strimzi's "tls" users): the same server certificate,
		// and a client certificate signed by clientCA required.
		"listener.name.mtls.ssl.keystore.type":              "PEM",
		"listener.name.mtls.ssl.keystore.certificate.chain": string(chain),
		"listener.name.mtls.ssl.keystore.key":               string(key),
		"listener.name.mtls.ssl.truststore.type":            "PEM",
		"listener.name.mtls.ssl.truststore.certificates":    string(sb.clientCA.pem),
		"listener.name.mtls.ssl.client.auth":                "required",
	}
	for _, l := range []string{"sasl_ssl", "sasl_plaintext"} {
		p := "listener.name." + l + "."
		extra[p+"sasl.enabled.mechanisms"] = mechs
		extra[p+"plain.sasl.jaas.config"] = plainJAAS
		extra[p+"scram-sha-256.sasl.jaas.config"] = scramJAAS
		extra[p+"scram-sha-512.sasl.jaas.config"] = scramJAAS
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	b, err := localkafka.Start(ctx, localkafka.Options{
		Partitions: 2,
		Listeners: []localkafka.Listener{
			{Name: "SASL_SSL"},
			{Name: "SASL_PLAINTEXT"},
			{Name: "MTLS", Protocol: "SSL"},
		},
		ExtraConfig: extra,
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("starting the secured broker: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Stop(); err != nil {
			t.Errorf("stopping the secured broker: %v", err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			if data, err := os.ReadFile(b.LogPath()); err == nil {
				t.Logf("---- secured broker log (tail) ----\n%s", tail(string(data), 60))
			}
		}
	})
	t.Logf("localkafka.Start (Kafka %s) took %s", b.Version(), time.Since(start).Round(time.Millisecond))
	sb.b, sb.admin = b, b.Addr()
	sb.saslSSL, sb.saslPlain = b.ListenerAddr("SASL_SSL"), b.ListenerAddr("SASL_PLAINTEXT")
	sb.mtls = b.ListenerAddr("MTLS")

	// SCRAM credentials live in the KRaft metadata log: create them with
	// AlterUserScramCredentials over the PLAINTEXT listener.
	start = time.Now()
	var ups []kafka.UserScramCredentialsUpsertion
	for _, m := range []struct {
		mech kafka.ScramMechanism
		h    func() hash.Hash
		size int
	}{{kafka.ScramMechanismSha256, sha256.New, sha256.Size}, {kafka.ScramMechanismSha512, sha512.New, sha512.Size}} {
		salt := make([]byte, 16)
		_, _ = rand.Read(salt)
		const iterations = 4096 // Kafka's minimum
		salted, err := pbkdf2.Key(m.h, secPassword, salt, iterations, m.size)
		if err != nil {
			t.Fatal(err)
		}
		ups = append(ups, kafka.UserScramCredentialsUpsertion{Name: secUser, Mechanism: m.mech,
			Iterations: iterations, Salt: salt, SaltedPassword: salted})
	}
	// One request per mechanism: Kafka rejects a request naming the same
	// user twice (DUPLICATE_RESOURCE).
	client := &kafka.Client{Addr: kafka.TCP(sb.admin), Timeout: 20 * time.Second}
	for _, up := range ups {
		res, err := client.AlterUserScramCredentials(ctx, &kafka.AlterUserScramCredentialsRequest{
			Upsertions: []kafka.UserScramCredentialsUpsertion{up}})
		if err != nil {
			t.Fatalf("creating SCRAM credentials: %v", err)
		}
		for _, r := range res.Results {
			if r.Error != nil {
				t.Fatalf("creating SCRAM credentials for %s: %v", r.User, r.Error)
			}
		}
	}

	// Every mechanism authenticates over SASL_SSL with the CA before any
	// worker runs (SCRAM credentials take a moment to reach the broker).
	pem, err := os.ReadFile(sb.caFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	tc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	for _, mech := range secMechanisms {
		var lastErr error
		waitFor(t, 30*time.Second, mech+" over SASL_SSL", func() bool {
			lastErr = secProbe(ctx, sb.saslSSL, tc, saslMechanism(t, mech, secPassword))
			return lastErr == nil
		})
		if err := secProbe(ctx, sb.saslSSL, tc, saslMechanism(t, mech, secWrongPassword)); err == nil {
			t.Fatalf("%s with a wrong password authenticated", mech)
		}
	}
	t.Logf("SCRAM credentials created and every mechanism checked in %s", time.Since(start).Round(time.Millisecond))
	return sb
}

func saslMechanism(t *testing.T, name, password string) sasl.Mechanism {
	t.Helper()
	switch name {
	case "PLAIN":
		return plain.Mechanism{Username: secUser, Password: password}
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if name == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, secUser, password)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	t.Fatalf("unknown mechanism %s", name)
	return nil
}

// secProbe sends one metadata request over a fresh authenticated connection.
func secProbe(ctx context.Context, addr string, tc *tls.Config, m sasl.Mechanism) error {
	tr := &kafka.Transport{TLS: tc, SASL: m, DialTimeout: 5 * time.Second}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(addr), Transport: tr}
	_, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	return err
}

// topics creates an input topic (2 partitions) and its dead-letter topic.
func (sb *secBroker) topics(t *testing.T) (topic, dlq string) {
	t.Helper()
	name := strings.NewReplacer("/", "-", "_", "-").Replace(strings.ToLower(t.Name()))
	topic = fmt.Sprintf("%s-%d", name, time.Now().UnixNano()%1e9)
	dlq = topic + ".dlq"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.b.CreateTopic(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	if err := sb.b.CreateTopic(ctx, dlq, 1); err != nil {
		t.Fatal(err)
	}
	return topic, dlq
}

// producer produces over the PLAINTEXT listener (setup, not under test).
// It has its own transport: kafka.DefaultTransport caches the cluster's
// metadata, and the parallel subtests create topics it has not seen yet.
func (sb *secBroker) producer(t *testing.T, topic string) *producer {
	tr := &kafka.Transport{DialTimeout: 5 * time.Second}
	w := &kafka.Writer{Addr: kafka.TCP(sb.admin), Topic: topic, Balancer: &kafka.Hash{}, Transport: tr,
		BatchTimeout: 2 * time.Millisecond, BatchSize: 1000, RequiredAcks: kafka.RequireAll}
	t.Cleanup(func() { w.Close(); tr.CloseIdleConnections() })
	return &producer{t: t, w: w, want: model{}}
}

// env is the worker's configuration for addr with SASL mech (and TLS with
// caFile when caFile is not empty).
func (sb *secBroker) env(a *api, topic, dlq, addr, mech, caFile, password string) map[string]string {
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["KAFKA_BROKERS"] = addr
	if caFile != "" {
		env["KAFKA_TLS"] = "true"
		env["KAFKA_TLS_CA_FILE"] = caFile
	}
	env["KAFKA_SASL_MECHANISM"] = mech
	env["KAFKA_SASL_USERNAME"] = secUser
	env["KAFKA_SASL_PASSWORD"] = password
	return env
}

const secPoison = `{"action":"add_members","cohort_id":`

// runOK: valid events and one poison record; the worker, given only the
// secured listener, converges to the fold of the log, dead-letters the
// poison record and commits to the end of every partition.
func (sb *secBroker) runOK(t *testing.T, seed uint64, addr string, useTLS bool, mech string) {
	start := time.Now()
	topic, dlq := sb.topics(t)
	a := startAPI(t, nil)
	p := sb.producer(t, topic)
	g := newGen(seed, 8, 150)
	ctx := context.Background()
	p.sendN(t, g, 200)
	if err := p.raw(ctx, kafka.Message{Key: []byte("poison-0"), Value: []byte(secPoison)}); err != nil {
		t.Fatal(err)
	}
	p.sendN(t, g, 200)
	caFile := ""
	if useTLS {
		caFile = sb.caFile
	}
	env := sb.env(a, topic, dlq, addr, mech, caFile, secPassword)
	w := startWorker(t, "w-"+mech, env)
	waitFor(t, 30*time.Second, "readiness", w.ready)
	waitConverged(t, a, p.model(), time.Minute)
	sb.waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)

	got := sb.readTopic(t, dlq, 1, 30*time.Second)
	if len(got) != 1 {
		t.Fatalf("dead-letter topic holds %d records, want 1", len(got))
	}
	h := map[string]string{}
	for _, x := range got[0].Headers {
		h[x.Key] = string(x.Value)
	}
	if string(got[0].Key) != "poison-0" || string(got[0].Value) != secPoison {
		t.Errorf("dead letter %q=%q, want the original poison-0=%q", got[0].Key, got[0].Value, secPoison)
	}
	if h[deadletter.HeaderReason] != string(event.ReasonMalformed) || h[deadletter.HeaderSourceTopic] != topic {
		t.Errorf("dead letter headers %v", h)
	}
	checkRequests(t, a, 128000)
	if err := w.stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM: %v", err)
	}
	sb.checkNoSecret(t, w)
	logs := w.logs()
	if !hasLog(logs, func(l map[string]any) bool { return l["msg"] == "joined generation" }) {
		t.Error(`no "joined generation" in the worker's log`)
	}
	t.Logf("%d events + 1 poison over %s (%s, TLS %v) in %s", p.count, addr, mech, useTLS, time.Since(start).Round(time.Millisecond))
}

// runRejected: the worker cannot authenticate (or verify the broker): it
// logs why, is not ready, consumes and commits nothing.
func (sb *secBroker) runRejected(t *testing.T, addr, mech, caFile, password, what string,
	match func(string) bool) {
	start := time.Now()
	topic, dlq := sb.topics(t)
	a := startAPI(t, nil)
	p := sb.producer(t, topic)
	p.sendN(t, newGen(30, 5, 50), 100)
	if err := p.raw(context.Background(), kafka.Message{Key: []byte("poison-0"), Value: []byte(secPoison)}); err != nil {
		t.Fatal(err)
	}
	env := sb.env(a, topic, dlq, addr, mech, caFile, password)
	w := startWorker(t, "w-"+mech+"-rejected", env)
	var why string
	waitFor(t, 30*time.Second, what+" in the worker's log", func() bool {
		for _, l := range w.logs() {
			if lvl, _ := l["level"].(string); lvl != "WARN" && lvl != "ERROR" {
				continue
			}
			if s := fmt.Sprint(l); match(s) {
				why = s
				return true
			}
		}
		return false
	})
	t.Logf("logged: %s", why)
	// It keeps failing: give it a few join attempts (JoinGroupBackoff is 1 s).
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if w.joined() {
			t.Fatalf("joined the group despite the %s", what)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if n := len(a.Requests()); n != 0 {
		t.Errorf("the API received %d requests", n)
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
	ends, _, err := sb.offsets(ctx, dlq, env["KAFKA_GROUP_ID"])
	if err != nil {
		t.Fatal(err)
	}
	if ends[0] != 0 {
		t.Errorf("dead-letter topic holds %d records", ends[0])
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Errorf("SIGTERM while rejected: %v", err)
	}
	if w.err != nil {
		t.Logf("exit: %v", w.err)
	}
	sb.checkNoSecret(t, w)
	t.Logf("rejected as expected in %s", time.Since(start).Round(time.Millisecond))
}

func saslFailure(s string) bool {
	return strings.Contains(strings.ToLower(s), "sasl authentication failed")
}

func tlsFailure(s string) bool {
	return strings.Contains(s, "x509: certificate signed by unknown authority")
}

func hasLog(logs []map[string]any, f func(map[string]any) bool) bool {
	for _, l := range logs {
		if f(l) {
			return true
		}
	}
	return false
}

// checkNoSecret fails if a SASL password appears in the worker's output.
func (sb *secBroker) checkNoSecret(t *testing.T, w *worker) {
	t.Helper()
	out := w.out.String()
	for _, s := range []string{secPassword, secWrongPassword} {
		if strings.Contains(out, s) {
			t.Errorf("a SASL password appears in the worker's output")
		}
	}
	if !strings.Contains(out, `"kafka_sasl_mechanism"`) {
		t.Errorf("the worker did not log its configuration")
	}
}

// offsets returns the end and committed offsets (-1: none) of topic's
// partitions, over the PLAINTEXT listener.
func (sb *secBroker) offsets(ctx context.Context, topic, group string) (ends, committed map[int]int64, err error) {
	a, done := sb.adminClient()
	defer done()
	return a.Offsets(ctx, topic, group)
}

// adminClient returns an Admin over the PLAINTEXT listener with a transport
// of its own (fresh metadata, see producer), and the func that closes it.
func (sb *secBroker) adminClient() (*kafkaadmin.Admin, func()) {
	tr := &kafka.Transport{DialTimeout: 5 * time.Second}
	return kafkaadmin.New([]string{sb.admin}, tr), tr.CloseIdleConnections
}

// waitNoLag waits until the group has committed the end of every partition.
func (sb *secBroker) waitNoLag(t *testing.T, topic, group string, timeout time.Duration) {
	t.Helper()
	a, done := sb.adminClient()
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := rig.WaitNoLag(ctx, a, topic, group, nil); err != nil {
		t.Fatal(err)
	}
}

// readTopic reads a single-partition topic over the PLAINTEXT listener.
func (sb *secBroker) readTopic(t *testing.T, topic string, want int, timeout time.Duration) []kafka.Message {
	t.Helper()
	return readTopicAt(t, sb.admin, topic, want, timeout)
}
