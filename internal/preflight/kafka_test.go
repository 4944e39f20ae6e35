package preflight

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

func kafkaConfig(t *testing.T, brokers []string, topic, dlq string) config.Config {
	t.Helper()
	c := config.Default()
	c.KafkaBrokers = brokers
	c.KafkaTopics = []string{topic}
	c.KafkaDLQTopic = dlq
	c.KafkaGroupID = "g"
	c.MoEngageDC = "01"
	c.MoEngageWorkspaceID = testWorkspace
	c.MoEngageDataAPIKey = config.NewSecret(testKey)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestKafkaChecks runs the Kafka checks against kfake, an in-process Kafka:
// present topics pass, a missing one fails its own line, and asking about
// it does not create it although the cluster auto-creates topics.
func TestKafkaChecks(t *testing.T) {
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(3, "in"), kfake.SeedTopics(1, "in.dlq"), kfake.AllowAutoTopicCreation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	res := checkKafka(t.Context(), kafkaConfig(t, c.ListenAddrs(), "in", "in.dlq"), 5*time.Second)
	for _, want := range []struct{ check, detail string }{
		{"kafka.brokers", "connected with plaintext, no SASL to 1 of 1 bootstrap brokers"},
		{"kafka.topic", "in exists: 3 partitions"},
		{"kafka.dlq", "in.dlq exists: 1 partition,"},
		{"kafka.group", "g does not exist yet"},
		{"kafka.acls", "granted: READ on topic in, READ on group g, WRITE on topic in.dlq"},
	} {
		if r := find(t, res, want.check); r.Status != OK || !strings.Contains(r.Detail, want.detail) {
			t.Errorf("%s: %s %q, want ok with %q", want.check, r.Status, r.Detail, want.detail)
		}
	}

	res = checkKafka(t.Context(), kafkaConfig(t, c.ListenAddrs(), "in", "missing.dlq"), 5*time.Second)
	if r := find(t, res, "kafka.dlq"); r.Status != Fail || !strings.Contains(r.Detail, "missing.dlq (KAFKA_DLQ_TOPIC) does not exist") {
		t.Errorf("kafka.dlq: %+v", r)
	}
	res = checkKafka(t.Context(), kafkaConfig(t, c.ListenAddrs(), "in", "missing.dlq"), 5*time.Second)
	if r := find(t, res, "kafka.dlq"); r.Status != Fail {
		t.Errorf("the first check created the topic: %+v", r)
	}
}

func TestKafkaUnreachable(t *testing.T) {
	res := checkKafka(t.Context(), kafkaConfig(t, []string{"127.0.0.1:1"}, "in", "in.dlq"), 2*time.Second)
	if r := find(t, res, "kafka.brokers"); r.Status != Fail || !strings.Contains(r.Detail, "127.0.0.1:1: dial tcp 127.0.0.1:1") {
		t.Errorf("kafka.brokers: %+v", r)
	}
	if r := find(t, res, "kafka.acls"); r.Status != Skip {
		t.Errorf("kafka.acls: %+v", r)
	}
}

// TestKafkaExpiredClientCertificate: an expired client certificate fails
// kafka.brokers with the file and the date, before any connection (a broker
// would answer with a bare TLS alert); a valid one is named in the line.
func TestKafkaExpiredClientCertificate(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, notAfter time.Time) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: name},
			NotBefore: notAfter.Add(-48 * time.Hour), NotAfter: notAfter}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		p8, _ := x509.MarshalPKCS8PrivateKey(key)
		certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
		_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}), 0o600)
		return certFile, keyFile
	}
	cfg := kafkaConfig(t, []string{"127.0.0.1:1"}, "in", "in.dlq")
	cfg.KafkaTLS = true
	cfg.KafkaTLSCertFile, cfg.KafkaTLSKeyFile = write("old-user", time.Now().Add(-time.Minute))
	res := checkKafka(t.Context(), cfg, 2*time.Second)
	if r := find(t, res, "kafka.brokers"); r.Status != Fail || !strings.Contains(r.Detail, "CN=old-user") ||
		!strings.Contains(r.Detail, "expired at") || strings.Contains(r.Detail, "dial tcp") {
		t.Errorf("kafka.brokers: %+v", r)
	}
	cfg.KafkaTLSCertFile, cfg.KafkaTLSKeyFile = write("new-user", time.Now().Add(time.Hour))
	res = checkKafka(t.Context(), cfg, 2*time.Second)
	if r := find(t, res, "kafka.brokers"); r.Status != Fail || !strings.Contains(r.Detail, `client certificate "CN=new-user" valid until`) {
		t.Errorf("kafka.brokers: %+v", r)
	}
}

func TestDescribeSecurityMSKIAM(t *testing.T) {
	cfg := config.Config{KafkaTLS: true, KafkaSASLMechanism: config.AWSMSKIAM}
	if got := describeSecurity(cfg); got != "TLS, SASL AWS_MSK_IAM with the AWS default credential chain" {
		t.Errorf("describeSecurity = %q", got)
	}
}
