package config

import "crypto/tls"

// maxCertFile bounds how much of KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE
// is read (a chain and a key are a few KB).
const maxCertFile = 1 << 20

// checkClientCert checks the mutual-TLS client certificate: both files or
// neither, readable, and a certificate that matches its key. It sets
// KafkaTLS when they are set. Errors never show the key's content.
func (c *Config) checkClientCert(h hider) error {
	switch {
	case c.KafkaTLSCertFile == "" && c.KafkaTLSKeyFile == "":
		return nil
	case c.KafkaTLSCertFile == "":
		return configError("KAFKA_TLS_CERT_FILE", "required with KAFKA_TLS_KEY_FILE")
	case c.KafkaTLSKeyFile == "":
		return configError("KAFKA_TLS_KEY_FILE", "required with KAFKA_TLS_CERT_FILE")
	}
	cert, err := readLimited(c.KafkaTLSCertFile, maxCertFile)
	if err != nil {
		return configError("KAFKA_TLS_CERT_FILE", "cannot read %s: %s", h.show(c.KafkaTLSCertFile), err)
	}
	key, err := readLimited(c.KafkaTLSKeyFile, maxCertFile)
	if err != nil {
		return configError("KAFKA_TLS_KEY_FILE", "cannot read %s: %s", h.show(c.KafkaTLSKeyFile), err)
	}
	if _, err := tls.X509KeyPair(cert, key); err != nil {
		// crypto/tls's errors name what is wrong (no certificate, no key,
		// a key that does not match), never the key itself.
		return configError("KAFKA_TLS_CERT_FILE", "%s with KAFKA_TLS_KEY_FILE %s: %s",
			h.show(c.KafkaTLSCertFile), h.show(c.KafkaTLSKeyFile), err)
	}
	c.KafkaTLS = true
	return nil
}

// checkMSKIAM checks KAFKA_SASL_MECHANISM=AWS_MSK_IAM: it takes no username
// or password (the AWS SDK's default chain gives the credentials: IRSA, EKS
// Pod Identity, the instance profile, AWS_* variables) and implies TLS, as
// MSK's IAM listeners are TLS only.
func (c *Config) checkMSKIAM() error {
	if c.KafkaSASLUsername != "" || c.KafkaSASLPassword.Reveal() != "" {
		return configError("KAFKA_SASL_MECHANISM", "AWS_MSK_IAM takes no KAFKA_SASL_USERNAME or KAFKA_SASL_PASSWORD: the AWS credential chain signs the connection")
	}
	c.KafkaTLS = true
	return nil
}
