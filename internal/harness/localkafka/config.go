package localkafka

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// nodeID is the KRaft node id of the single combined broker+controller.
const nodeID = 1

// Layout of a DataDir.
const (
	serverPropsName = "server.properties"
	log4jName       = "log4j2.properties"
	brokerLogName   = "broker.log"
	stateName       = "localkafka.json"
	kafkaDataName   = "data" // log.dirs (also holds the KRaft metadata log)
	kafkaLogsName   = "logs" // -Dkafka.logs.dir
)

// state is what a DataDir remembers between runs, so that a formatted data
// dir restarts with the same cluster id and ports.
type state struct {
	ClusterID      string         `json:"cluster_id"`
	Port           int            `json:"port"`
	ControllerPort int            `json:"controller_port"`
	Listeners      map[string]int `json:"listeners,omitempty"`
}

func loadState(dataDir string) (*state, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, stateName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", stateName, err)
	}
	return &s, nil
}

func (s *state) save(dataDir string) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dataDir, stateName), append(b, '\n'))
}

// formatted reports whether the Kafka storage in dataDir has been formatted.
func formatted(dataDir string) bool {
	_, err := os.Stat(filepath.Join(dataDir, kafkaDataName, "meta.properties"))
	return err == nil
}

// newClusterID returns a random KRaft cluster id the way Kafka's
// Uuid.randomUuid does (what `kafka-storage random-uuid` prints): 16 random
// bytes (a version 4 UUID) in unpadded URL-safe base64, never starting with
// '-' and never one of the reserved all-zero / 0...01 ids.
func newClusterID() (string, error) {
	for {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		b[6] = b[6]&0x0f | 0x40
		b[8] = b[8]&0x3f | 0x80
		id := base64.RawURLEncoding.EncodeToString(b[:])
		if !strings.HasPrefix(id, "-") {
			return id, nil
		}
	}
}

// validClusterID reports whether id decodes as a 16-byte Kafka Uuid.
func validClusterID(id string) bool {
	b, err := base64.RawURLEncoding.DecodeString(id)
	return err == nil && len(b) == 16 && !strings.HasPrefix(id, "-")
}

// portFree reports whether a TCP port on 127.0.0.1 can be bound right now.
func portFree(port int) bool {
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
	if err != nil {
		return false
	}
	l.Close()
	return true
}

// kv is one server.properties entry.
type kv struct{ k, v string }

// serverConfig returns the server.properties entries for a combined KRaft
// node: the generated ones in a fixed order, each replaced by an ExtraConfig
// value of the same key, then the remaining ExtraConfig keys sorted.
func serverConfig(o Options, s *state, dataDir string) []kv {
	host := "127.0.0.1"
	ctrl := fmt.Sprintf("CONTROLLER://%s:%d", host, s.ControllerPort)
	listeners := []string{fmt.Sprintf("PLAINTEXT://%s:%d", host, s.Port), ctrl}
	protoMap := []string{"CONTROLLER:PLAINTEXT", "PLAINTEXT:PLAINTEXT"}
	for _, l := range o.Listeners {
		listeners = append(listeners, fmt.Sprintf("%s://%s:%d", l.Name, host, s.Listeners[l.Name]))
		protoMap = append(protoMap, l.Name+":"+l.Protocol)
	}
	joined := strings.Join(listeners, ",")
	cfg := []kv{
		{"process.roles", "broker,controller"},
		{"node.id", strconv.Itoa(nodeID)},
		{"controller.quorum.bootstrap.servers", fmt.Sprintf("%s:%d", host, s.ControllerPort)},
		{"listeners", joined},
		{"advertised.listeners", joined},
		{"controller.listener.names", "CONTROLLER"},
		{"inter.broker.listener.name", "PLAINTEXT"},
		{"listener.security.protocol.map", strings.Join(protoMap, ",")},
		{"log.dirs", filepath.Join(dataDir, kafkaDataName)},
		{"num.partitions", strconv.Itoa(o.Partitions)},
		{"default.replication.factor", "1"},
		{"min.insync.replicas", "1"},
		{"offsets.topic.replication.factor", "1"},
		{"offsets.topic.num.partitions", "1"},
		{"transaction.state.log.replication.factor", "1"},
		{"transaction.state.log.min.isr", "1"},
		{"transaction.state.log.num.partitions", "1"},
		{"share.coordinator.state.topic.replication.factor", "1"},
		{"share.coordinator.state.topic.min.isr", "1"},
		{"share.coordinator.state.topic.num.partitions", "1"},
		{"group.initial.rebalance.delay.ms", "0"},
		// After a hard kill, the restarted node cannot register until the
		// previous incarnation's session expires (default 9 s). 3 s made
		// restarts fast but fenced the broker under heavy load on 2 cores
		// ("All brokers are currently fenced"): 6 s is the compromise.
		{"broker.heartbeat.interval.ms", "500"},
		{"broker.session.timeout.ms", "6000"},
	}
	extra := make(map[string]string, len(o.ExtraConfig))
	for k, v := range o.ExtraConfig {
		extra[k] = v
	}
	for i := range cfg {
		if v, ok := extra[cfg[i].k]; ok {
			cfg[i].v = v
			delete(extra, cfg[i].k)
		}
	}
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		cfg = append(cfg, kv{k, extra[k]})
	}
	return cfg
}

// renderProperties writes entries in java.util.Properties syntax.
func renderProperties(cfg []kv) []byte {
	var b strings.Builder
	b.WriteString("# Generated by internal/harness/localkafka. Changes are overwritten on the next start.\n")
	for _, e := range cfg {
		b.WriteString(escapeProperty(e.k, true))
		b.WriteByte('=')
		b.WriteString(escapeProperty(e.v, false))
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// escapeProperty escapes s for a .properties file: backslashes and line
// breaks always; separators and leading spaces in keys; a leading space in
// values.
func escapeProperty(s string, key bool) string {
	var b strings.Builder
	for i, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case key && (r == '=' || r == ':' || r == ' ' || r == '#' || r == '!'):
			b.WriteByte('\\')
			b.WriteRune(r)
		case !key && i == 0 && r == ' ':
			b.WriteString(`\ `)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// log4jConfig sends every Kafka log line at INFO and above to stdout, which
// Start redirects to broker.log.
const log4jConfig = `# Generated by internal/harness/localkafka.
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
`
