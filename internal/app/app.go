// Package app wires the worker together: configuration to components, the
// HTTP endpoints, and the order of start and shutdown. It is embeddable:
// tests and the demo run it in-process; cmd/cohortsync-worker only adds
// flags, signals and the exit code.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
	"golang.org/x/sync/errgroup"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// Options are what Run needs besides the configuration.
type Options struct {
	Config    config.Config
	Logger    *slog.Logger         // default slog.Default()
	Registry  *prometheus.Registry // default a new registry with the Go and process collectors
	Version   string               // shown in cohortsync_build_info
	ReplicaID string               // sent to the API as X-Cohortsync-Replica; default host-pid
	// Listening, when set, is called with the bound HTTP address once the
	// endpoints serve (useful with HTTP_ADDR=127.0.0.1:0).
	Listening func(addr string)
	// HTTPClient overrides the client used for the Cohort Sync API.
	HTTPClient *http.Client
}

// Run runs the worker until ctx ends, then drains within SHUTDOWN_TIMEOUT
// and returns. It returns nil after a clean drain, and an error when the
// worker could not start or could not go on.
func Run(ctx context.Context, opts Options) error {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return err
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
		metrics.RegisterRuntime(reg)
	}
	m := metrics.NewMetrics(reg)
	m.SetBuildInfo(opts.Version)
	replica := opts.ReplicaID
	if replica == "" {
		host, _ := os.Hostname()
		replica = host + "-" + strconv.Itoa(os.Getpid())
	}
	log.Info("starting cohortsync-worker", "version", opts.Version, "replica", replica, "config", cfg)

	dialer, transport, err := kafkaSecurity(cfg)
	if err != nil {
		return err
	}
	defer transport.CloseIdleConnections()

	limiter := sink.NewLimiter(cfg.RateLimitRPM)
	m.RateLimitRPM.Set(cfg.RateLimitRPM)
	// The consumer proves this replica's group membership to the lease;
	// the sink sends nothing without it (DESIGN.md invariant 4).
	membership := lease.New()
	var reloadKey func() (string, error)
	if cfg.MoEngageDataAPIKeyFile != "" {
		reloadKey = config.SecretFileFunc(cfg.MoEngageDataAPIKeyFile)
	}
	client, err := sink.New(sink.Config{
		BaseURL:         cfg.MoEngageBaseURL,
		WorkspaceID:     cfg.MoEngageWorkspaceID,
		APIKey:          cfg.MoEngageDataAPIKey.Reveal(),
		APIKeyFunc:      reloadKey,
		Lease:           membership,
		MaxBodyBytes:    cfg.BatchMaxBytes,
		InitialInterval: cfg.RetryInitialInterval,
		MaxInterval:     cfg.RetryMaxInterval,
		MaxElapsed:      cfg.RetryMaxElapsed,
		ReplicaID:       replica,
		UserAgent:       "cohortsync-worker/" + opts.Version,
		HTTPClient:      opts.HTTPClient,
		Limiter:         limiter,
		Logger:          log,
		Metrics:         m,
	})
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()

	dlq := consumer.NewDLQ(consumer.NewWriter(cfg.KafkaBrokers, cfg.KafkaDLQTopic, transport, log),
		cfg.KafkaDLQTopic, log, m)
	defer dlq.Close()

	b, err := batcher.New(batcher.Config{
		MaxBytes:    cfg.BatchMaxBytes,
		MaxMembers:  cfg.BatchMaxMembers,
		Window:      cfg.BatchWindow,
		MaxInFlight: cfg.MaxInFlight,
		MaxPending:  cfg.MaxPendingMembers,
		Sink:        client,
		Limiter:     limiter,
		DeadLetter:  dlq.DeadLetter,
		Logger:      log,
		Metrics:     m,
	})
	if err != nil {
		return err
	}

	drain := cfg.ShutdownTimeout - min(5*time.Second, cfg.ShutdownTimeout/5)
	cons, err := consumer.New(consumer.Config{
		Brokers:        cfg.KafkaBrokers,
		Topics:         cfg.KafkaTopics,
		GroupID:        cfg.KafkaGroupID,
		DefaultPartner: cfg.CohortsyncPartner,
		Dialer:         dialer,
		Transport:      transport,
		Batcher:        b,
		DLQ:            dlq,
		Lease:          membership,
		DrainTimeout:   drain,
		OnAssign: func(assigned []consumer.TopicPartition, total int) {
			rpm := share(cfg.RateLimitRPM, len(assigned), total)
			limiter.SetRPM(rpm)
			if rpm > 0 {
				// Every replica starts its new share two of its intervals
				// late: the permits the old shares granted just before the
				// rebalance then cannot push the fleet over the budget in
				// any 60-second window.
				limiter.PauseUntil(time.Now().Add(2 * sink.Spacing(rpm)))
			}
			m.RateLimitRPM.Set(rpm)
			log.Info("rate-limit share", "requests_per_minute", rpm, "assigned", len(assigned), "partitions", total)
		},
		Logger:  log,
		Metrics: m,
	})
	if err != nil {
		return err
	}

	ready := func() bool { return cons.Joined() && !client.LineStopped() && !dlq.Failing() }
	// cohortsync_ready says what the process knows, probed or not.
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	go m.TrackReady(readyCtx, ready, metrics.ReadyInterval)
	srv, err := serveHTTP(cfg.HTTPAddr, reg, ready, log, opts.Listening, defaultHTTPTimeouts)
	if err != nil {
		return err
	}

	// hard ends the batcher and the DLQ once the consumer has drained (or
	// the drain budget is spent).
	hard, stopHard := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHard()
	g, gctx := errgroup.WithContext(hard)
	g.Go(func() error {
		err := b.Run(gctx)
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	})
	g.Go(func() error { dlq.Run(gctx); return nil })
	var consErr error
	consDone := make(chan struct{})
	go func() {
		defer close(consDone)
		// The consumer stops on ctx (soft stop) or when the batcher fails.
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case <-gctx.Done():
				cancel()
			case <-cctx.Done():
			}
		}()
		consErr = cons.Run(cctx)
	}()
	<-consDone
	stopHard()
	runErr := g.Wait()
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_ = srv.Shutdown(sctx)
		cancel()
	}
	if err := errors.Join(runErr, consErr); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// httpTimeouts bound how long one client of the endpoints may hold a
// connection and its goroutine. The endpoints are on the pod network, within
// reach of anything there: without the bounds a client that opens
// connections and sends nothing (or a byte at a time, or reads nothing)
// keeps each one, and its goroutine, forever.
type httpTimeouts struct {
	// ReadHeader bounds the request line and headers, from the first byte.
	ReadHeader time.Duration
	// Read bounds the whole request, headers and body (the endpoints take
	// none).
	Read time.Duration
	// Write bounds a response, from the end of the request headers. A
	// /metrics scrape of the Go and process collectors plus per-partition
	// series takes milliseconds; the bound is generous for slow scrapers
	// and a busy, CPU-throttled process.
	Write time.Duration
	// Idle bounds a keep-alive connection's wait for its next request.
	// Prometheus scrapes every 15-60 s over one connection; a longer idle
	// bound would only keep abandoned connections.
	Idle time.Duration
}

var defaultHTTPTimeouts = httpTimeouts{
	ReadHeader: 5 * time.Second,
	Read:       10 * time.Second,
	Write:      30 * time.Second,
	Idle:       90 * time.Second,
}

// serveHTTP starts /metrics, /healthz and /readyz; an empty addr disables them.
func serveHTTP(addr string, reg *prometheus.Registry, ready func() bool,
	log *slog.Logger, listening func(string), to httpTimeouts) (*http.Server, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("HTTP_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	var mu sync.Mutex
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if ready() {
			_, _ = w.Write([]byte("ready\n"))
			return
		}
		http.Error(w, "not ready: not in a consumer-group generation, sending is stopped (credentials, configuration, or a 4xx for every part of a batch: see cohortsync_line_stopped), or dead letters cannot be written", http.StatusServiceUnavailable)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: to.ReadHeader, ReadTimeout: to.Read,
		WriteTimeout: to.Write, IdleTimeout: to.Idle, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("HTTP server failed", "err", err)
		}
	}()
	log.Info("serving /metrics, /healthz, /readyz", "addr", ln.Addr().String())
	if listening != nil {
		listening(ln.Addr().String())
	}
	return srv, nil
}

// kafkaSecurity builds the dialer (group and readers) and the transport
// (metadata and the dead-letter writer) from the TLS and SASL settings.
func kafkaSecurity(cfg config.Config) (*kafka.Dialer, *kafka.Transport, error) {
	dialer := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	transport := &kafka.Transport{DialTimeout: 10 * time.Second}
	if cfg.KafkaTLS || cfg.KafkaTLSCAFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if cfg.KafkaTLSCAFile != "" {
			pem, err := os.ReadFile(cfg.KafkaTLSCAFile)
			if err != nil {
				return nil, nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("KAFKA_TLS_CA_FILE: %s holds no PEM certificate", cfg.KafkaTLSCAFile)
			}
			tc.RootCAs = pool
		}
		dialer.TLS = tc
		transport.TLS = tc
	}
	if cfg.KafkaSASLMechanism != "" {
		var mech sasl.Mechanism
		user, pass := cfg.KafkaSASLUsername, cfg.KafkaSASLPassword.Reveal()
		switch cfg.KafkaSASLMechanism {
		case "PLAIN":
			mech = plain.Mechanism{Username: user, Password: pass}
		case "SCRAM-SHA-256", "SCRAM-SHA-512":
			algo := scram.SHA256
			if cfg.KafkaSASLMechanism == "SCRAM-SHA-512" {
				algo = scram.SHA512
			}
			m, err := scram.Mechanism(algo, user, pass)
			if err != nil {
				return nil, nil, fmt.Errorf("KAFKA_SASL_MECHANISM: %w", err)
			}
			mech = m
		default:
			return nil, nil, fmt.Errorf("KAFKA_SASL_MECHANISM: unsupported %q", cfg.KafkaSASLMechanism)
		}
		dialer.SASLMechanism = mech
		transport.SASL = mech
	}
	return dialer, transport, nil
}

// arrivalSlack is the spread of the delay between a permit and the request's
// arrival at the API (encoding, connection, network) that the shares allow
// for. The limiter spaces permits, but the API counts arrivals: with permits
// exactly 60s/rpm apart, one request that arrives late and a later one that
// arrives early put rpm+1 requests in one 60-second window. Spreading each
// share over 60s+arrivalSlack keeps every window of arrivals within the
// budget as long as the delays differ by less than arrivalSlack.
const arrivalSlack = time.Second

// share is this replica's part of the fleet-wide budget of rpm requests per
// minute: rpm × assigned/total, scaled by 60s/(60s+arrivalSlack) and rounded
// down to whole requests, so that the shares never add up to more than the
// budget and no 60-second window holds more than a replica's share of
// arrivals. A share below one request per minute is kept as it is (rounding
// it down would stop the replica); with nothing assigned it is a token rate
// (nothing is sent anyway). rpm <= 0 means unlimited.
func share(rpm float64, assigned, total int) float64 {
	if rpm <= 0 || total <= 0 {
		return rpm
	}
	if assigned == 0 {
		return rpm / 1e6
	}
	s := rpm * float64(assigned) / float64(total) * float64(time.Minute) / float64(time.Minute+arrivalSlack)
	if s >= 1 {
		return math.Floor(s)
	}
	return s
}
