package localkafka

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// DefaultVersion is the Apache Kafka version used when neither
// Options.Version nor the KAFKA_VERSION environment variable names one.
const DefaultVersion = "4.4.0"

// Environment variables read by this package.
const (
	// EnvVersion overrides DefaultVersion when Options.Version is empty.
	EnvVersion = "KAFKA_VERSION"
	// EnvCacheDir is the jar cache directory when Options.CacheDir is empty.
	EnvCacheDir = "COHORTSYNC_CACHE_DIR"
	// EnvBrokers makes FromEnvOrStart use an existing cluster instead of
	// starting one (a comma-separated bootstrap list, as given).
	EnvBrokers = "KAFKA_BROKERS"
)

// Options configures Fetch and Start. The zero value is usable.
type Options struct {
	// Version is the Apache Kafka version (4.x only). Default: $KAFKA_VERSION,
	// else DefaultVersion.
	Version string

	// CacheDir is where jars are cached: CacheDir/kafka-<version>/libs, with a
	// marker file recording a complete download. Default:
	// $COHORTSYNC_CACHE_DIR, else os.UserCacheDir()/cohortsync-worker.
	CacheDir string

	// DataDir holds server.properties, the log4j2 config, broker.log and the
	// Kafka log dirs. Default: a new temporary directory, removed by Stop. A
	// caller-provided DataDir is kept; if it was formatted by an earlier run,
	// its cluster and ports are reused (see localkafka.json in it).
	DataDir string

	// Partitions is the broker's num.partitions (used for auto-created topics
	// and by CreateTopic when given 0 partitions). Default 4.
	Partitions int

	// Port is the PLAINTEXT listener port on 127.0.0.1. 0 picks a free port.
	Port int

	// ControllerPort is the KRaft CONTROLLER listener port on 127.0.0.1. 0
	// picks a free port.
	ControllerPort int

	// Listeners are extra client listeners on 127.0.0.1, next to PLAINTEXT
	// (for example a SASL_SSL listener for security tests). Each is added to
	// listeners, advertised.listeners and listener.security.protocol.map;
	// its mechanism, JAAS and keystore settings go in ExtraConfig.
	Listeners []Listener

	// ExtraConfig holds extra server.properties entries. A key that Start
	// also generates (listeners, num.partitions, ...) replaces the generated
	// value; other keys are appended.
	ExtraConfig map[string]string

	// JVMArgs are appended to the JVM flags of the broker (after the 1 GB
	// heap and G1 flags Kafka's own scripts use, so a later -Xmx wins) and of
	// the storage format tool.
	JVMArgs []string

	// ClusterID is the KRaft cluster id given to the storage format (22
	// characters of URL-safe base64, as printed by `kafka-storage
	// random-uuid`). Default: a new random id.
	ClusterID string

	// StartTimeout bounds how long Start and Restart wait for the broker to
	// answer a metadata request with itself registered. Default 90 s.
	StartTimeout time.Duration

	// StopTimeout is how long Stop and Terminate wait after SIGTERM before
	// sending SIGKILL. Default 20 s.
	StopTimeout time.Duration

	// Logger receives progress lines. Default: discarded. The broker's own
	// stdout and stderr go to DataDir/broker.log (see Broker.LogPath).
	Logger *slog.Logger
}

// Listener is an extra client listener of the broker.
type Listener struct {
	// Name is the listener name, such as "SASL_SSL" or "EXTERNAL" (upper
	// case; PLAINTEXT and CONTROLLER are taken).
	Name string
	// Protocol is the security protocol: PLAINTEXT, SSL, SASL_PLAINTEXT or
	// SASL_SSL. Default: Name.
	Protocol string
	// Port is the port on 127.0.0.1; 0 picks a free one.
	Port int
}

var (
	versionRE      = regexp.MustCompile(`^4\.[0-9]+\.[0-9]+([.-][0-9A-Za-z.-]+)?$`)
	listenerNameRE = regexp.MustCompile(`^[A-Z][A-Z0-9_]*$`)
	protocols      = map[string]bool{"PLAINTEXT": true, "SSL": true, "SASL_PLAINTEXT": true, "SASL_SSL": true}
)

// withDefaults returns a copy of o with every default filled in, or an error
// for an invalid option.
func (o Options) withDefaults() (Options, error) {
	if o.Version == "" {
		o.Version = strings.TrimSpace(os.Getenv(EnvVersion))
	}
	if o.Version == "" {
		o.Version = DefaultVersion
	}
	if !versionRE.MatchString(o.Version) {
		return o, fmt.Errorf("localkafka: unsupported Kafka version %q: only 4.x (like %s) is supported", o.Version, DefaultVersion)
	}
	if o.CacheDir == "" {
		o.CacheDir = os.Getenv(EnvCacheDir)
	}
	if o.CacheDir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return o, fmt.Errorf("localkafka: no cache dir (set %s): %w", EnvCacheDir, err)
		}
		o.CacheDir = filepath.Join(base, "cohortsync-worker")
	}
	if abs, err := filepath.Abs(o.CacheDir); err == nil {
		o.CacheDir = abs
	}
	if o.DataDir != "" {
		abs, err := filepath.Abs(o.DataDir)
		if err != nil {
			return o, fmt.Errorf("localkafka: data dir: %w", err)
		}
		o.DataDir = abs
	}
	if o.Partitions <= 0 {
		o.Partitions = 4
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 90 * time.Second
	}
	if o.StopTimeout <= 0 {
		o.StopTimeout = 20 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Port < 0 || o.Port > 65535 || o.ControllerPort < 0 || o.ControllerPort > 65535 {
		return o, fmt.Errorf("localkafka: invalid port")
	}
	seen := map[string]bool{"PLAINTEXT": true, "CONTROLLER": true}
	ls := make([]Listener, len(o.Listeners))
	for i, l := range o.Listeners {
		if l.Protocol == "" {
			l.Protocol = l.Name
		}
		if !listenerNameRE.MatchString(l.Name) || seen[l.Name] {
			return o, fmt.Errorf("localkafka: invalid or duplicate listener name %q", l.Name)
		}
		if !protocols[l.Protocol] {
			return o, fmt.Errorf("localkafka: listener %s: unknown security protocol %q", l.Name, l.Protocol)
		}
		if l.Port < 0 || l.Port > 65535 {
			return o, fmt.Errorf("localkafka: listener %s: invalid port %d", l.Name, l.Port)
		}
		seen[l.Name] = true
		ls[i] = l
	}
	o.Listeners = ls
	return o, nil
}
