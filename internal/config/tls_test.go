package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// clientPair returns a self-signed client certificate and its PKCS#8 key,
// PEM.
func clientPair(t *testing.T, cn string) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))
}

func TestClientCertFiles(t *testing.T) {
	certPEM, keyPEM := clientPair(t, "alice")
	_, otherKey := clientPair(t, "bob")
	cert, key := writeFile(t, "user.crt", certPEM), writeFile(t, "user.key", keyPEM)
	other := writeFile(t, "bob.key", otherKey)

	env := required()
	env["KAFKA_TLS_CERT_FILE"], env["KAFKA_TLS_KEY_FILE"] = cert, key
	c, err := config.Load(nil, getenv(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.KafkaTLS || c.KafkaTLSCertFile != cert || c.KafkaTLSKeyFile != key {
		t.Fatalf("TLS %v, cert %q, key %q", c.KafkaTLS, c.KafkaTLSCertFile, c.KafkaTLSKeyFile)
	}

	for _, tc := range []struct {
		name, cert, key, want string
	}{
		{"cert without key", cert, "", "KAFKA_TLS_KEY_FILE"},
		{"key without cert", "", key, "KAFKA_TLS_CERT_FILE"},
		{"missing file", cert, key + ".missing", "KAFKA_TLS_KEY_FILE"},
		{"key of another certificate", cert, other, "KAFKA_TLS_CERT_FILE"},
		{"key given as the certificate", key, key, "KAFKA_TLS_CERT_FILE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := required()
			env["KAFKA_TLS_CERT_FILE"], env["KAFKA_TLS_KEY_FILE"] = tc.cert, tc.key
			_, err := config.Load(nil, getenv(env), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error naming %s, got %v", tc.want, err)
			}
			for _, k := range []string{keyPEM, otherKey} {
				body := strings.Split(k, "\n")[1]
				if strings.Contains(err.Error(), body) {
					t.Fatalf("the error shows a private key: %v", err)
				}
			}
		})
	}
}

func TestMSKIAM(t *testing.T) {
	env := required()
	env["KAFKA_SASL_MECHANISM"] = "aws_msk_iam"
	c, err := config.Load(nil, getenv(env), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.KafkaSASLMechanism != config.AWSMSKIAM || !c.KafkaTLS {
		t.Fatalf("mechanism %q, TLS %v: AWS_MSK_IAM implies TLS", c.KafkaSASLMechanism, c.KafkaTLS)
	}
	env["KAFKA_SASL_USERNAME"] = "alice"
	if _, err := config.Load(nil, getenv(env), nil); err == nil || !strings.Contains(err.Error(), "AWS_MSK_IAM takes no KAFKA_SASL_USERNAME") {
		t.Fatalf("a username with AWS_MSK_IAM: %v", err)
	}
}
