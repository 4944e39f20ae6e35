package kafkaconn

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go/sasl"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

type certAuthority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t *testing.T) *certAuthority {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &certAuthority{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue signs a leaf for cn (server or client use) and returns it and its
// key, PEM.
func (ca *certAuthority) issue(t *testing.T, cn string, usage x509.ExtKeyUsage) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	n, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: n, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	p8, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8})
}

// replace writes data to path the way Kubernetes updates a mounted Secret:
// a new file renamed over the old one.
func replace(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestClientCertificateRotation: the TLS configuration the worker dials the
// brokers with presents the client certificate of KAFKA_TLS_CERT_FILE and
// KAFKA_TLS_KEY_FILE to a server that requires one, and the certificate the
// files hold at each handshake: a rotation is picked up without a restart,
// and a rotation caught half-way (a certificate with the previous key) or
// a missing file keeps the last good certificate.
func TestClientCertificateRotation(t *testing.T) {
	serverCA, clientCA := newCA(t), newCA(t)
	srvCert, srvKey := serverCA.issue(t, "broker", x509.ExtKeyUsageServerAuth)
	pair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(clientCA.cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peers := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				peers <- tc.ConnectionState().PeerCertificates[0].Subject.CommonName
			} else {
				peers <- "handshake failed"
			}
			c.Close()
		}
	}()

	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	certFile, keyFile := filepath.Join(dir, "user.crt"), filepath.Join(dir, "user.key")
	replace(t, caFile, serverCA.pem)
	c1, k1 := clientCA.issue(t, "user-1", x509.ExtKeyUsageClientAuth)
	replace(t, certFile, c1)
	replace(t, keyFile, k1)
	var logs bytes.Buffer
	tc, err := kafkaTLS(config.Config{KafkaTLS: true, KafkaTLSCAFile: caFile, KafkaTLSCertFile: certFile, KafkaTLSKeyFile: keyFile},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	handshake := func(want string) {
		t.Helper()
		conn, err := tls.Dial("tcp", ln.Addr().String(), tc)
		if err == nil {
			err = conn.Handshake()
			conn.Close()
		}
		if got := <-peers; got != want || err != nil {
			t.Fatalf("server saw %q (client err %v), want %q", got, err, want)
		}
	}
	handshake("user-1")

	c2, k2 := clientCA.issue(t, "user-2", x509.ExtKeyUsageClientAuth)
	replace(t, certFile, c2)
	replace(t, keyFile, k2)
	handshake("user-2")

	// Half-way through the next rotation: the new certificate, the old key.
	c3, k3 := clientCA.issue(t, "user-3", x509.ExtKeyUsageClientAuth)
	replace(t, certFile, c3)
	handshake("user-2")
	if !strings.Contains(logs.String(), "presenting the previous one") {
		t.Errorf("a failed reload was not logged:\n%s", logs.String())
	}
	replace(t, keyFile, k3)
	handshake("user-3")

	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	handshake("user-3")
	if n := strings.Count(logs.String(), "Kafka client certificate loaded"); n != 3 {
		t.Errorf("%d loads logged, want 3 (one per certificate):\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "PRIVATE KEY") {
		t.Error("a private key was logged")
	}
}

// TestMSKIAMSignsWithTheDefaultChain: KAFKA_SASL_MECHANISM=AWS_MSK_IAM
// takes its credentials and region from the AWS SDK's default chain (here
// the AWS_* variables) and answers the broker's SASL exchange with a SigV4
// presigned kafka-cluster:Connect for the broker's host. Without a region
// the worker refuses to start. (No MSK cluster here: the broker side is
// not tested.)
func TestMSKIAMSignsWithTheDefaultChain(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_CONFIG_FILE": filepath.Join(dir, "none"), "AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "none"),
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_PROFILE": "", "AWS_SESSION_TOKEN": "",
		"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		"AWS_REGION": "eu-west-1",
	} {
		t.Setenv(k, v)
	}
	cfg := config.Config{KafkaTLS: true, KafkaSASLMechanism: config.AWSMSKIAM}
	dialer, transport, err := New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if dialer.TLS == nil || transport.SASL == nil || transport.SASL.Name() != "AWS_MSK_IAM" {
		t.Fatalf("TLS %v, mechanism %v", dialer.TLS, transport.SASL)
	}
	ctx := sasl.WithMetadata(context.Background(), &sasl.Metadata{Host: "b-1.msk.example", Port: 9098})
	_, payload, err := transport.SASL.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]string
	if err := json.Unmarshal(payload, &got); err != nil {
		t.Fatalf("payload %q: %v", payload, err)
	}
	for k, want := range map[string]string{
		"action": "kafka-cluster:Connect", "host": "b-1.msk.example", "version": "2020_10_22",
		"x-amz-algorithm": "AWS4-HMAC-SHA256",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if !regexp.MustCompile(`^AKIDEXAMPLE/\d{8}/eu-west-1/kafka-cluster/aws4_request$`).MatchString(got["x-amz-credential"]) {
		t.Errorf("x-amz-credential %q", got["x-amz-credential"])
	}
	if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(got["x-amz-signature"]) {
		t.Errorf("x-amz-signature %q", got["x-amz-signature"])
	}
	if strings.Contains(string(payload), "wJalrXUtnFEMI") {
		t.Error("the secret key is in the payload")
	}

	t.Setenv("AWS_REGION", "")
	t.Setenv("AWS_DEFAULT_REGION", "")
	if _, _, err := New(cfg, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "AWS_REGION") {
		t.Fatalf("no region: %v", err)
	}
}
