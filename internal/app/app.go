// Package app wires the worker together: configuration to components, the
// HTTP endpoints, and the order of start and shutdown. It is embeddable:
// tests and the demo run it in-process; cmd/cohortsync-worker only adds
// flags, signals and the exit code.
package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/segmentio/kafka-go"
	"golang.org/x/sync/errgroup"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/consumer"
	"github.com/cohortsync/cohortsync-worker/internal/board"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaconn"
	"github.com/cohortsync/cohortsync-worker/internal/lease"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// Options are what Run needs besides the configuration.
type Options struct {
	Config    config.Config
	Logger    *slog.Logger         // default slog.Default()
	Registry  *prometheus.Registry // default a new registry with the Go and process collectors
	Version   string               // shown in cohortsync_build_info
	ReplicaID string               // sent to the API as X-Cohortsync-Replica; default host-pid-random (replica.go)
	// Listening, when set, is called with the bound HTTP address once the
	// endpoints serve (useful with HTTP_ADDR=127.0.0.1:0).
	Listening func(addr string)
	// HTTPClient overrides the client used for the Cohort Sync API.
	HTTPClient *http.Client
	// LiveBound is how long one of the process's loops may be busy before
	// /healthz fails; 0 means metrics.LiveBound.
	LiveBound time.Duration
}

// Run runs the worker until ctx ends, then drains within SHUTDOWN_TIMEOUT
// and returns. It returns nil after a clean drain, and an error when the
// worker could not start or could not go on.
func Run(ctx context.Context, opts Options) error {
	w, err := build(opts)
	if err != nil {
		return err
	}
	defer w.close()
	if err := w.run(ctx); err != nil {
		return err
	}
	w.log.Info("stopped")
	return nil
}

// worker is the wired-up process: what build made, for run to start and
// stop.
type worker struct {
	opts      Options
	cfg       config.Config
	log       *slog.Logger
	reg       *prometheus.Registry
	m         *metrics.Metrics
	transport *kafka.Transport
	client    *sink.Client
	dlq       *deadletter.DLQ
	batcher   *batcher.Batcher
	consumer  *consumer.Consumer
	fleet     *ratelimit.Fleets // a budget per workspace
	budgetM   *metrics.Budget   // its metrics by workspace
	board     *board.Board      // nil: RATE_LIMIT_SHARING off (or no limit)
	ws        *workspaces       // the registry (MOENGAGE_WORKSPACES_DIR) and the default workspace
}

// build validates the configuration and makes every component, starting
// nothing.
func build(opts Options) (_ *worker, err error) {
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	w := &worker{opts: opts, cfg: cfg, log: opts.Logger, reg: opts.Registry}
	if w.log == nil {
		w.log = slog.Default()
	}
	if w.reg == nil {
		w.reg = prometheus.NewRegistry()
		metrics.RegisterRuntime(w.reg)
	}
	w.m = metrics.New(w.reg)
	w.m.SetBuildInfo(opts.Version)
	replica := opts.ReplicaID
	if replica == "" {
		replica = defaultReplicaID()
	}
	w.log.Info("starting cohortsync-worker", "version", opts.Version, "replica", replica, "config", cfg)
	if err := w.openRegistry(); err != nil {
		return nil, err
	}

	dialer, transport, err := kafkaconn.New(cfg, w.log)
	if err != nil {
		return nil, err
	}
	w.transport = transport
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	w.m.RateLimitRPM.Set(cfg.RateLimitRPM)
	w.newFleet(replica, dialer)
	// The consumer proves this replica's group membership to the lease;
	// the sink sends nothing without it (DESIGN.md invariant 4).
	membership := lease.New()
	if w.client, err = w.newSink(replica, membership); err != nil {
		return nil, err
	}
	w.dlq = deadletter.New(deadletter.NewWriter(cfg.KafkaBrokers, cfg.KafkaDLQTopic, transport, w.log),
		cfg.KafkaDLQTopic, consumer.Locate, w.log, w.m)
	w.batcher, err = batcher.New(batcher.Config{
		Limits: batcher.Limits{MaxBytes: cfg.BatchMaxBytes, MaxMembers: cfg.BatchMaxMembers, Window: cfg.BatchWindow,
			MaxInFlight: cfg.MaxInFlight, MaxPending: cfg.MaxPendingMembers},
		Sink:       w.client,
		DeadLetter: w.dlq.DeadLetter,
		Logger:     w.log,
		Metrics:    w.m,
	})
	if err != nil {
		return nil, err
	}
	w.consumer, err = w.newConsumer(dialer, membership)
	return w, err
}

// openRegistry opens the registry (MOENGAGE_WORKSPACES_DIR) when there is
// one, and checks the default workspace against it (workspaces.go).
func (w *worker) openRegistry() (err error) {
	if w.ws, err = openWorkspaces(w.cfg, w.log, w.reg); err != nil {
		return err
	}
	if w.ws.reg == nil {
		return nil
	}
	if err := w.ws.checkDefault(); err != nil {
		return err
	}
	w.ws.logStage()
	return nil
}

// newFleet makes what shares the budgets: a Fleet per workspace (each at
// its own budget, the registry's .rate_limit_rpm or RATE_LIMIT_RPM), and
// with RATE_LIMIT_SHARING their board on KAFKA_BUDGET_TOPIC.
func (w *worker) newFleet(replica string, dialer *kafka.Dialer) {
	cfg := w.cfg
	fc := ratelimit.FleetsConfig{Replica: replica, Budget: cfg.RateLimitRPM, BudgetOf: w.ws.budgetOf, Registry: w.ws.ids, Logger: w.log,
		OnRate: w.onRate}
	if cfg.RateLimitSharing && (cfg.RateLimitRPM > 0 || w.ws.reg != nil) {
		w.board = board.New(board.Config{Brokers: cfg.KafkaBrokers, Topic: cfg.KafkaBudgetTopic, Replica: replica,
			Dialer: dialer, Transport: w.transport, Logger: w.log, OnDuplicate: w.m.BoardDuplicates.Inc})
		fc.Board = w.board
	}
	w.fleet, w.budgetM = ratelimit.NewFleets(fc), metrics.NewBudget(w.reg)
	w.ws.budgetsChanged = w.budgetsChanged // a workspace removed, or its budget changed
}

// newSink makes the Cohort Sync API client.
func (w *worker) newSink(replica string, membership *lease.Lease) (*sink.Client, error) {
	cfg := w.cfg
	reloadKey := w.ws.defaultKey(cfg.MoEngageDataAPIKeyFile)
	key := cfg.MoEngageDataAPIKey.Reveal()
	targets := w.ws.sinkTargets() // with a registry, every workspace's key and URL, the default's too
	client, err := sink.New(sink.Config{
		Targets:         targets,
		BaseURL:         cfg.MoEngageBaseURL,
		WorkspaceID:     cfg.MoEngageWorkspaceID,
		APIKey:          key,
		APIKeyFunc:      reloadKey,
		Lease:           membership,
		MaxBodyBytes:    cfg.BatchMaxBytes,
		InitialInterval: cfg.RetryInitialInterval,
		MaxInterval:     cfg.RetryMaxInterval,
		MaxElapsed:      cfg.RetryMaxElapsed,
		ReplicaID:       replica,
		UserAgent:       "cohortsync-worker/" + w.opts.Version,
		HTTPClient:      w.opts.HTTPClient,
		Limiters:        w.limiterFor,    // the batch's workspace's budget
		MaxConcurrent:   cfg.MaxInFlight, // requests on the wire, taken after the permit
		Logger:          w.log,
		Metrics:         w.m,

		// How long a request left without an answer may still be processed.
		MaxProcessingTime: cfg.MoEngageMaxProcessingTime,
	})
	if err == nil {
		w.ws.targetsChanged = client.TargetsChanged // a key added, fixed or rotated is tried at once
	}
	return client, err
}

// newConsumer makes the group consumer.
func (w *worker) newConsumer(dialer *kafka.Dialer, membership *lease.Lease) (*consumer.Consumer, error) {
	return consumer.New(w.consumerConfig(dialer, membership))
}

// consumerConfig is the group consumer's configuration. At every assignment
// it sets the replica's share of the budget.
func (w *worker) consumerConfig(dialer *kafka.Dialer, membership *lease.Lease) consumer.Config {
	cfg := w.cfg
	cc := consumer.Config{
		Brokers:        cfg.KafkaBrokers,
		Topics:         cfg.KafkaTopics,
		GroupID:        cfg.KafkaGroupID,
		DefaultPartner: cfg.CohortsyncPartner,
		Workspace:      cfg.MoEngageWorkspaceID, // events naming another are dead-lettered (parked with a registry), never sent elsewhere
		Serves:         w.ws.consumerServes(),   // ... unless the registry serves it (workspaces.go)
		WorkspaceLabel: w.ws.label,              // the parked gauges' label, bounded by the registry
		Dialer:         dialer,
		Transport:      w.transport,
		Batcher:        settlingBatcher{w.batcher, w.client},
		DLQ:            w.dlq,
		Fits:           func(h wire.Header, uid string) bool { return wire.Fits(h, uid, cfg.BatchMaxBytes) }, // the batcher's cap
		Lease:          membership,
		DrainTimeout:   cfg.ShutdownTimeout - min(5*time.Second, cfg.ShutdownTimeout/5),
		// The fence of a generation may take as long as a session.
		SessionTimeout:    cfg.KafkaSessionTimeout,
		HeartbeatInterval: cfg.KafkaHeartbeatInterval,
		RebalanceTimeout:  max(30*time.Second, cfg.KafkaSessionTimeout),
		// A partition handed over without proof waits this long (consumer/handoff.go).
		MaxProcessingTime: cfg.MoEngageMaxProcessingTime,
		OnAssign: func(assigned []consumer.TopicPartition, total int) {
			rpm := w.fleet.Rebalance(w.consumer.Generation(), len(assigned), total)
			w.m.RateLimitRPM.Set(rpm)
			w.log.Info("rate-limit share", "requests_per_minute", rpm, "assigned", len(assigned), "partitions", total,
				"shared_by_demand", w.board != nil)
		},
		Logger:  w.log,
		Metrics: w.m,
	}
	w.withParking(&cc, dialer) // parking.go
	return cc
}

// settlingBatcher is the batcher as the consumer sees it. Its Revoke, which
// the consumer's fence calls before the replica rejoins the group, also
// waits (within the fence's deadline) until no request of this replica whose
// outcome is unknown can still be processed by the API (sink.Client.Settle):
// the group's next generation cannot start before this replica rejoins, so
// the partitions' next owner never sends beside such a request.
type settlingBatcher struct {
	*batcher.Batcher
	client *sink.Client
}

func (b settlingBatcher) Revoke(ctx context.Context) error {
	if err := b.Batcher.Revoke(ctx); err != nil {
		return err
	}
	return b.client.Settle(ctx)
}

// close releases the connections build opened.
func (w *worker) close() {
	if w.dlq != nil {
		w.dlq.Close()
	}
	if w.client != nil {
		w.client.CloseIdleConnections()
	}
	w.transport.CloseIdleConnections()
}

// run serves the endpoints and runs the consumer, the batcher and the DLQ
// until ctx ends (then the consumer drains) or the batcher fails.
func (w *worker) run(ctx context.Context) error {
	pr := &probes{joined: w.consumer.Joined, lineStopped: w.client.LineStopped, dlqFailing: w.dlq.Failing,
		loops: w.m.Loops, liveBound: cmp.Or(w.opts.LiveBound, metrics.LiveBound)}
	// cohortsync_ready says what the process knows, probed or not.
	readyCtx, stopReady := context.WithCancel(ctx)
	defer stopReady()
	go w.m.TrackReady(readyCtx, pr.ready, metrics.ReadyInterval)
	srv, err := serveHTTP(w.cfg.HTTPAddr, w.reg, pr, w.log, w.opts.Listening, defaultHTTPTimeouts)
	if err != nil {
		return err
	}
	if srv != nil {
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			_ = srv.Shutdown(sctx)
			cancel()
		}()
	}

	// hard ends the batcher and the DLQ once the consumer has drained (or
	// the drain budget is spent).
	hard, stopHard := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHard()
	g, gctx := errgroup.WithContext(hard)
	g.Go(func() error {
		if err := w.batcher.Run(gctx); !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	})
	g.Go(func() error { w.dlq.Run(gctx); return nil })
	if w.board != nil {
		g.Go(func() error { w.board.Run(gctx); return nil })
	}
	g.Go(func() error { w.fleet.Run(gctx); return nil })
	if w.ws.reg != nil {
		g.Go(func() error { return w.ws.reg.Run(gctx) })
	}
	// The consumer stops on ctx (soft stop) or when the batcher fails.
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(gctx, cancel)
	defer stop()
	pr.running.Store(true)
	stopRunning := context.AfterFunc(cctx, func() { pr.running.Store(false) }) // shutting down
	defer stopRunning()
	consErr := w.consumer.Run(cctx)
	pr.running.Store(false)
	stopHard()
	return errors.Join(g.Wait(), consErr)
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
func serveHTTP(addr string, reg *prometheus.Registry, pr *probes,
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
	pr.register(mux)
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
