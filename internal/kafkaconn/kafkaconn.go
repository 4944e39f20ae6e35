// Package kafkaconn connects to the Kafka cluster the way the worker does:
// the kafka-go dialer and transport with the TLS (CA, a client certificate
// re-read at each handshake) and SASL (PLAIN, SCRAM, AWS_MSK_IAM) settings
// of the configuration. The worker and the tools that talk to the same
// cluster (cohortsync-worker dlq replay, check) use it.
package kafkaconn

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	sigv4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	mskiam "github.com/segmentio/kafka-go/sasl/aws_msk_iam_v2"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// New builds the kafka-go dialer (consumer groups and readers) and
// transport (metadata, produce and offset requests) from the TLS and SASL
// settings of cfg. log receives the client certificate's reloads; nil logs
// nothing.
func New(cfg config.Config, log *slog.Logger) (*kafka.Dialer, *kafka.Transport, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dialer := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	transport := &kafka.Transport{DialTimeout: 10 * time.Second}
	if cfg.KafkaTLS || cfg.KafkaTLSCAFile != "" || cfg.KafkaTLSCertFile != "" {
		tc, err := kafkaTLS(cfg, log)
		if err != nil {
			return nil, nil, err
		}
		dialer.TLS = tc
		transport.TLS = tc
	}
	if cfg.KafkaSASLMechanism != "" {
		mech, err := saslMechanism(cfg)
		if err != nil {
			return nil, nil, err
		}
		dialer.SASLMechanism = mech
		transport.SASL = mech
	}
	return dialer, transport, nil
}

// kafkaTLS is the TLS configuration for the brokers: the CA of
// KAFKA_TLS_CA_FILE (else the system roots) and, with KAFKA_TLS_CERT_FILE
// and KAFKA_TLS_KEY_FILE, a client certificate for mutual TLS.
func kafkaTLS(cfg config.Config, log *slog.Logger) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.KafkaTLSCAFile != "" {
		pem, err := os.ReadFile(cfg.KafkaTLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %s holds no PEM certificate", cfg.KafkaTLSCAFile)
		}
		tc.RootCAs = pool
	}
	if cfg.KafkaTLSCertFile != "" {
		cc := &clientCert{certFile: cfg.KafkaTLSCertFile, keyFile: cfg.KafkaTLSKeyFile, log: log}
		if _, err := cc.get(nil); err != nil {
			return nil, err
		}
		tc.GetClientCertificate = cc.get
	}
	return tc, nil
}

func saslMechanism(cfg config.Config) (sasl.Mechanism, error) {
	user, pass := cfg.KafkaSASLUsername, cfg.KafkaSASLPassword.Reveal()
	switch cfg.KafkaSASLMechanism {
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: pass}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if cfg.KafkaSASLMechanism == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, user, pass)
		if err != nil {
			return nil, fmt.Errorf("KAFKA_SASL_MECHANISM: %w", err)
		}
		return m, nil
	case config.AWSMSKIAM:
		return mskIAM()
	}
	return nil, fmt.Errorf("KAFKA_SASL_MECHANISM: unsupported %q", cfg.KafkaSASLMechanism)
}

// mskIAM is Amazon MSK's IAM mechanism (kafka-go's sasl/aws_msk_iam_v2):
// each connection is authenticated with a SigV4 signature made from the AWS
// SDK's default credential chain (IRSA or EKS Pod Identity on Kubernetes,
// the instance profile, AWS_* variables, shared files), refreshed by the
// SDK as they expire. The region comes from the same chain (AWS_REGION).
func mskIAM() (sasl.Mechanism, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ac, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("KAFKA_SASL_MECHANISM=AWS_MSK_IAM: loading the AWS configuration: %w", err)
	}
	if ac.Region == "" {
		return nil, errors.New("KAFKA_SASL_MECHANISM=AWS_MSK_IAM: no AWS region: set AWS_REGION to the cluster's region")
	}
	return &mskiam.Mechanism{Signer: sigv4.NewSigner(), Credentials: ac.Credentials, Region: ac.Region}, nil
}

// clientCert gives every TLS handshake with a broker the client certificate
// in certFile and keyFile as they are now. Certificates are short-lived
// where mutual TLS is used (Strimzi renews its users' certificates, cert-
// manager rotates them, and Kubernetes updates the mounted Secret in
// place), and a connection is made at every rebalance, so the files are
// read again at each handshake (a few per generation; two small files);
// they are parsed only when their bytes changed. A pair that cannot be read
// or does not match (a rotation caught half-way: the certificate written,
// the key not yet) keeps the last good one, and says so.
type clientCert struct {
	certFile, keyFile string
	log               *slog.Logger

	mu         sync.Mutex // guards the fields below; held across one load
	certPEM    []byte     // the bytes cert was made from
	keyPEM     []byte
	cert       *tls.Certificate
	lastFailed string // the last load error logged, to log each once
}

// get is tls.Config.GetClientCertificate.
func (c *clientCert) get(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	certPEM, err1 := os.ReadFile(c.certFile)
	keyPEM, err2 := os.ReadFile(c.keyFile)
	if err := errors.Join(err1, err2); err != nil {
		return c.keep(fmt.Errorf("KAFKA_TLS_CERT_FILE/KAFKA_TLS_KEY_FILE: %w", err))
	}
	if c.cert != nil && bytes.Equal(certPEM, c.certPEM) && bytes.Equal(keyPEM, c.keyPEM) {
		return c.cert, nil
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return c.keep(fmt.Errorf("KAFKA_TLS_CERT_FILE %s and KAFKA_TLS_KEY_FILE %s: %w", c.certFile, c.keyFile, err))
	}
	c.cert, c.certPEM, c.keyPEM, c.lastFailed = &pair, certPEM, keyPEM, ""
	c.log.Info("Kafka client certificate loaded", "subject", pair.Leaf.Subject.String(),
		"not_after", pair.Leaf.NotAfter.UTC().Format(time.RFC3339), "file", c.certFile)
	return c.cert, nil
}

// keep returns the last good certificate after a failed load, or err when
// there is none.
func (c *clientCert) keep(err error) (*tls.Certificate, error) {
	if c.cert == nil {
		return nil, err
	}
	if err.Error() != c.lastFailed {
		c.lastFailed = err.Error()
		c.log.Warn("cannot load the rotated Kafka client certificate; presenting the previous one", "err", err)
	}
	return c.cert, nil
}

// Logger bridges kafka-go's Printf logger to slog, at level (nil log: the
// default logger).
func Logger(log *slog.Logger, level slog.Level) kafka.Logger {
	if log == nil {
		log = slog.Default()
	}
	return kafka.LoggerFunc(func(format string, args ...any) {
		log.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "kafka-go")
	})
}
