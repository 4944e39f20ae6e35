// Package config reads the worker's configuration from the environment and
// the command line, validates it and describes it for --help and the README.
//
// The variable names and defaults are a contract (DESIGN.md,
// "Configuration"). Every variable is also a --flag of the same name in kebab
// case (KAFKA_BROKERS is --kafka-brokers); flags override the environment.
// The credentials (KAFKA_SASL_PASSWORD, MOENGAGE_DATA_API_KEY) and the
// workspace ID can also be read from a file named by the same variable with a
// _FILE suffix. The two credentials are refused as flags (a command line is
// visible to every process on the host); their *_FILE flags are accepted.
//
// Credentials never cross the network in clear text unless asked to: an
// http:// MOENGAGE_BASE_URL and SASL PLAIN without TLS are refused unless the
// host is on the loopback interface or MOENGAGE_ALLOW_INSECURE /
// KAFKA_SASL_ALLOW_INSECURE is set.
//
// Invalid configuration is reported as one line that names the variable, and
// no error, usage text, log value or formatted Config ever contains a secret:
// credentials are held in a Secret, which only Reveal unwraps.
//
// The package only reads: it opens no connection and keeps no state, and
// everything in it is safe for concurrent use.
package config
