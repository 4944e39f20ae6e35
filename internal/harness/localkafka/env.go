package localkafka

import (
	"context"
	"os"
	"strings"
)

// FromEnvOrStart returns the bootstrap address of a Kafka to use: the
// value of KAFKA_BROKERS if it is set (an external cluster; stop is then a
// no-op), else the address of a broker started with Start(ctx, opts), with
// stop being its Broker.Stop.
func FromEnvOrStart(ctx context.Context, opts Options) (addr string, stop func() error, err error) {
	if v := strings.TrimSpace(os.Getenv(EnvBrokers)); v != "" {
		return v, func() error { return nil }, nil
	}
	b, err := Start(ctx, opts)
	if err != nil {
		return "", nil, err
	}
	return b.Addr(), b.Stop, nil
}
