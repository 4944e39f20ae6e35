package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Recognisable secret values: no error, usage text or rendering may contain
// them.
const (
	apiKey       = "K3Y-api-key-0123456789-never-print"
	saslPassword = "PW-sasl-password-9876543210-never-print"
)

var secrets = []string{apiKey, saslPassword}

// secretEnv are the variables that hold a credential themselves (not a
// file): Load refuses them as flags.
var secretEnv = map[string]bool{"KAFKA_SASL_PASSWORD": true, "MOENGAGE_DATA_API_KEY": true}

// leaks reports whether out shows a secret, in any case.
func leaks(out string) bool {
	out = strings.ToLower(out)
	for _, s := range secrets {
		if strings.Contains(out, strings.ToLower(s)) {
			return true
		}
	}
	return false
}

// designVars is the variable list of DESIGN.md's "Configuration" table, in
// its order: a contract, hard-coded here on purpose.
var designVars = []string{
	"KAFKA_BROKERS", "KAFKA_TOPIC", "KAFKA_GROUP_ID",
	"KAFKA_SESSION_TIMEOUT", "KAFKA_HEARTBEAT_INTERVAL", // issue 12: how soon a dead replica's share comes back
	"KAFKA_DLQ_TOPIC",
	"KAFKA_BUDGET_TOPIC",                                                               // issue 12: the board the replicas share the budget over
	"PARKING_TOPIC_PARTITIONS", "PARKING_TOPIC_REPLICATION", "PARKING_TOPIC_RETENTION", // issue 21: the parking topic
	"KAFKA_TLS", "KAFKA_TLS_CA_FILE",
	"KAFKA_TLS_CERT_FILE", "KAFKA_TLS_KEY_FILE", // issue 19 §12: mutual TLS (Strimzi's TLS users)
	"KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD",
	"KAFKA_SASL_ALLOW_INSECURE", // issue 10 §5: the opt-in for SASL PLAIN without TLS
	"MOENGAGE_DC", "MOENGAGE_BASE_URL",
	"MOENGAGE_ALLOW_INSECURE", // issue 10 §5: the opt-in for an http:// base URL
	"MOENGAGE_WORKSPACE_ID", "MOENGAGE_DATA_API_KEY",
	"MOENGAGE_WORKSPACES_DIR",      // issue 21: the registry of workspaces
	"MOENGAGE_MAX_PROCESSING_TIME", // issue 18 §3: the bound on an unknown outcome
	"COHORTSYNC_PARTNER", "BATCH_MAX_BYTES", "BATCH_MAX_MEMBERS", "BATCH_WINDOW", "RATE_LIMIT_RPM",
	"RATE_LIMIT_SHARING", // issue 12: the opt-out of the shared budget
	"MAX_IN_FLIGHT", "MAX_PENDING_MEMBERS",
	"RETRY_INITIAL_INTERVAL", "RETRY_MAX_INTERVAL", "RETRY_MAX_ELAPSED",
	"HTTP_ADDR", "SHUTDOWN_TIMEOUT", "LOG_LEVEL", "LOG_FORMAT",
}

// fileVars are the *_FILE variants the brief and DESIGN.md ask for.
var fileVars = []string{"KAFKA_SASL_PASSWORD_FILE", "MOENGAGE_WORKSPACE_ID_FILE", "MOENGAGE_DATA_API_KEY_FILE"}

func getenv(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

// required is the smallest valid environment: the variables without a
// default.
func required() map[string]string {
	return map[string]string{"KAFKA_BROKERS": "localhost:9092", "KAFKA_GROUP_ID": "g-test", "MOENGAGE_DC": "01",
		"MOENGAGE_WORKSPACE_ID": "ws", "MOENGAGE_DATA_API_KEY": apiKey}
}

// full is a valid environment that also sets the SASL password, so that both
// secrets are present.
func full() map[string]string {
	e := required()
	maps.Copy(e, map[string]string{
		"KAFKA_SASL_MECHANISM": "PLAIN",
		"KAFKA_SASL_USERNAME":  "alice",
		"KAFKA_SASL_PASSWORD":  saslPassword,
	})
	return e
}

func with(base map[string]string, over map[string]string) map[string]string {
	out := map[string]string{}
	maps.Copy(out, base)
	maps.Copy(out, over)
	return out
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// caPEM returns a freshly made self-signed CA certificate in PEM.
func caPEM(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
