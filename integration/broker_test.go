package integration

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/segmentio/kafka-go"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
)

// testBroker is a broker the suite started itself: a local Maven broker
// (localkafka) or an apache/kafka container. Chaos tests crash and restart it.
type testBroker interface {
	Addr() string
	Version() string
	Kill() error
	Restart(ctx context.Context) error
	Stop() error
}

// brokerSource says where the suite's broker came from.
type brokerSource string

const (
	sourceEnv       brokerSource = "KAFKA_BROKERS"
	sourceContainer brokerSource = "container"
	sourceLocal     brokerSource = "local Maven broker"
)

// The environment that selects the broker.
const (
	envKafkaImage = "KAFKA_IMAGE" // default: apache/kafka:<localkafka version>
	// envKafkaProvider forces a source: "container" (fail when no engine
	// answers) or "local" (never a container). Empty: the first that works.
	envKafkaProvider = "COHORTSYNC_KAFKA_PROVIDER"
)

// startBroker returns the suite's broker, from (in order) KAFKA_BROKERS, a
// container started with testcontainers-go when a Docker-compatible engine
// answers, or a broker started from Maven Central's jars. b is nil for
// KAFKA_BROKERS (a cluster the suite does not own).
func startBroker(ctx context.Context, log *slog.Logger) (addr string, b testBroker, src brokerSource, err error) {
	if env := os.Getenv("KAFKA_BROKERS"); env != "" {
		return env, nil, sourceEnv, nil
	}
	prov := os.Getenv(envKafkaProvider)
	if prov != "local" {
		if herr := engineHealthy(ctx); herr == nil {
			cb, err := startKafkaContainer(ctx, kafkaImage())
			if err != nil {
				return "", nil, "", err
			}
			return cb.Addr(), cb, sourceContainer, nil
		} else if prov == "container" {
			return "", nil, "", fmt.Errorf("%s=container, but no container engine answers: %w", envKafkaProvider, herr)
		}
	}
	lb, err := localkafka.Start(ctx, localkafka.Options{Partitions: 4, Logger: log})
	if err != nil {
		return "", nil, "", err
	}
	return lb.Addr(), lb, sourceLocal, nil
}

// kafkaImage is the Kafka image for containers: $KAFKA_IMAGE, else the
// official apache/kafka image of the version the local broker would run.
func kafkaImage() string {
	if v := os.Getenv(envKafkaImage); v != "" {
		return v
	}
	v := strings.TrimSpace(os.Getenv(localkafka.EnvVersion))
	if v == "" {
		v = localkafka.DefaultVersion
	}
	return "apache/kafka:" + v
}

// engineHealthy reports whether testcontainers-go finds a Docker-compatible
// engine that answers (DOCKER_HOST, the Docker socket, ~/.testcontainers.properties).
func engineHealthy(ctx context.Context) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("no container engine: %v", r)
		}
	}()
	p, err := testcontainers.ProviderDocker.GetProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	hctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return p.Health(hctx)
}

// kafkaContainer is a single combined KRaft node in an apache/kafka
// container, configured through the official image's environment variables.
//
// Listeners: the one clients use (PLAINTEXT, 9092) is published on a fixed
// host port chosen before the start and advertised as 127.0.0.1:<that port>,
// so the address in the metadata is reachable from the host (and from
// containers on the host network), and survives a restart; a second one
// (BROKER, 9093) is advertised under the container's hostname for
// containers on its network; the controller listens on 9094.
type kafkaContainer struct {
	ctr     testcontainers.Container
	image   string
	version string
	port    int
}

const kafkaContainerPort = "9092/tcp"

func startKafkaContainer(ctx context.Context, image string) (*kafkaContainer, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	version := image
	if i := strings.LastIndexByte(image, ':'); i >= 0 {
		version = image[i+1:]
	}
	req := testcontainers.ContainerRequest{
		Image:        image,
		ExposedPorts: []string{kafkaContainerPort},
		Labels:       map[string]string{"org.cohortsync.test": "integration"},
		Env: map[string]string{
			"CLUSTER_ID":                                             "cohortsync-it-cluster0",
			"KAFKA_NODE_ID":                                          "1",
			"KAFKA_PROCESS_ROLES":                                    "broker,controller",
			"KAFKA_LISTENERS":                                        "PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://0.0.0.0:9094",
			"KAFKA_ADVERTISED_LISTENERS":                             "PLAINTEXT://" + addr + ",BROKER://kafka:9093",
			"KAFKA_LISTENER_SECURITY_PROTOCOL_MAP":                   "PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT",
			"KAFKA_INTER_BROKER_LISTENER_NAME":                       "BROKER",
			"KAFKA_CONTROLLER_LISTENER_NAMES":                        "CONTROLLER",
			"KAFKA_CONTROLLER_QUORUM_VOTERS":                         "1@localhost:9094",
			"KAFKA_NUM_PARTITIONS":                                   "4",
			"KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR":                 "1",
			"KAFKA_OFFSETS_TOPIC_NUM_PARTITIONS":                     "1",
			"KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR":         "1",
			"KAFKA_TRANSACTION_STATE_LOG_MIN_ISR":                    "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
			"KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR":            "1",
			"KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS":                 "0",
		},
		ConfigModifier: func(c *container.Config) { c.Hostname = "kafka" },
		HostConfigModifier: func(hc *container.HostConfig) {
			hc.PortBindings = network.PortMap{
				network.MustParsePort(kafkaContainerPort): {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: strconv.Itoa(port)}},
			}
		},
		WaitingFor: &kafkaReady{addr: addr, timeout: 3 * time.Minute},
	}
	ctr, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{ContainerRequest: req, Started: true})
	if err != nil {
		if ctr != nil {
			logContainerTail(ctr, 40)
			_ = testcontainers.TerminateContainer(ctr)
		}
		return nil, fmt.Errorf("starting %s: %w", image, err)
	}
	return &kafkaContainer{ctr: ctr, image: image, version: version, port: port}, nil
}

func (k *kafkaContainer) Addr() string    { return net.JoinHostPort("127.0.0.1", strconv.Itoa(k.port)) }
func (k *kafkaContainer) Version() string { return k.version }
func (k *kafkaContainer) Image() string   { return k.image }
func (k *kafkaContainer) ID() string      { return k.ctr.GetContainerID() }

// Kill crashes the broker (SIGKILL); its data stays in the container.
func (k *kafkaContainer) Kill() error {
	zero := time.Duration(0)
	return k.ctr.Stop(context.Background(), &zero)
}

// Restart starts the stopped container again and waits until the broker
// serves metadata and group coordination on the same address.
func (k *kafkaContainer) Restart(ctx context.Context) error {
	return k.ctr.Start(ctx)
}

// Stop removes the container.
func (k *kafkaContainer) Stop() error { return testcontainers.TerminateContainer(k.ctr) }

// Stall freezes the container (the engine's pause: every process in it)
// for d, or until ctx ends, then resumes it.
func (k *kafkaContainer) Stall(ctx context.Context, d time.Duration) error {
	p, err := testcontainers.NewDockerProvider()
	if err != nil {
		return err
	}
	defer p.Close()
	if _, err := p.Client().ContainerPause(context.Background(), k.ID(), client.ContainerPauseOptions{}); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	_, err = p.Client().ContainerUnpause(context.Background(), k.ID(), client.ContainerUnpauseOptions{})
	return err
}

// kafkaReady waits until the broker answers a metadata request on addr and
// a group coordinator is available (the log line alone is not enough, and
// would match the previous run's after a restart).
type kafkaReady struct {
	addr    string
	timeout time.Duration
}

func (w *kafkaReady) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(w.addr), Timeout: 5 * time.Second}
	var last error
	for {
		if st, err := target.State(ctx); err == nil && !st.Running {
			return fmt.Errorf("kafka container exited (status %s, code %d)", st.Status, st.ExitCode)
		}
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
		if err == nil && len(md.Brokers) > 0 {
			fc, ferr := client.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: "cohortsync-it-probe", KeyType: kafka.CoordinatorKeyTypeConsumer})
			switch {
			case ferr != nil:
				err = ferr
			case fc.Error != nil:
				err = fc.Error
			default:
				return nil
			}
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafka at %s not ready: %w (last: %v)", w.addr, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// logContainerTail prints the last lines of a container's log to stderr.
func logContainerTail(ctr testcontainers.Container, n int) {
	rc, err := ctr.Logs(context.Background())
	if err != nil {
		return
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	fmt.Fprintf(os.Stderr, "---- container %s log (tail) ----\n%s\n", ctr.GetContainerID(), tail(string(b), n))
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
