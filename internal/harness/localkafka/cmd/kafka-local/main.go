// Command kafka-local runs a real single-node Apache Kafka broker on
// 127.0.0.1 in the foreground, for local development and demos, until
// interrupted (Ctrl-C or SIGTERM stop it cleanly). It is what
// scripts/kafka-local runs.
//
// Usage:
//
//	kafka-local [start] [-port N] [-data-dir DIR] [-topics a,b:8] [-version V] [-partitions N]
//	kafka-local fetch [-version V]    # only download and cache the jars
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
)

const defaultPort = 9092

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "kafka-local:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	cmd := "start"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("kafka-local "+cmd, flag.ContinueOnError)
	version := fs.String("version", "", "Apache Kafka version, 4.x (default $KAFKA_VERSION, else "+localkafka.DefaultVersion+")")
	port := fs.Int("port", -1, fmt.Sprintf("PLAINTEXT port on 127.0.0.1 (default %d if free, else any free port; 0 = any)", defaultPort))
	ctrlPort := fs.Int("controller-port", 0, "CONTROLLER port (0 = any free port)")
	dataDir := fs.String("data-dir", "", "keep data in this directory across runs (default: a temp dir removed on exit)")
	partitions := fs.Int("partitions", 4, "num.partitions for auto-created topics")
	topics := fs.String("topics", "", "topics to create, comma-separated, each NAME or NAME:PARTITIONS")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := localkafka.Options{
		Version:        *version,
		DataDir:        *dataDir,
		Partitions:     *partitions,
		ControllerPort: *ctrlPort,
		Logger:         log,
	}

	switch cmd {
	case "fetch":
		start := time.Now()
		libs, err := localkafka.Fetch(ctx, opts)
		if err != nil {
			return err
		}
		fmt.Printf("%s\n", libs)
		log.Info("jars ready", "took", time.Since(start).Round(time.Millisecond))
		return nil
	case "start":
	default:
		return fmt.Errorf("unknown command %q (want start or fetch)", cmd)
	}

	switch {
	case *port > 0:
		opts.Port = *port
	case *port < 0 && !hasState(*dataDir): // a used data dir keeps its ports
		if portFree(defaultPort) {
			opts.Port = defaultPort
		} else {
			log.Warn("port in use, picking a free one", "port", defaultPort)
		}
	}
	topicList, err := parseTopics(*topics)
	if err != nil {
		return err
	}

	b, err := localkafka.Start(ctx, opts)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintln(os.Stderr, "kafka-local: stopping")
		if err := b.Stop(); err != nil {
			fmt.Fprintln(os.Stderr, "kafka-local:", err)
		}
	}()
	for _, t := range topicList {
		if err := b.CreateTopic(ctx, t.name, t.partitions); err != nil {
			return err
		}
		if t.partitions == 0 {
			t.partitions = *partitions
		}
		log.Info("topic created", "topic", t.name, "partitions", t.partitions)
	}
	fmt.Printf("Kafka %s ready: bootstrap %s\n", b.Version(), b.Addr())
	fmt.Printf("  export KAFKA_BROKERS=%s\n", b.Addr())
	fmt.Printf("  log: %s\n", b.LogPath())
	fmt.Println("Press Ctrl-C to stop.")

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			if !b.Running() {
				return fmt.Errorf("broker exited; see %s", b.LogPath())
			}
		}
	}
}

type topicSpec struct {
	name       string
	partitions int
}

func parseTopics(s string) ([]topicSpec, error) {
	var out []topicSpec
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		name, n, ok := strings.Cut(f, ":")
		t := topicSpec{name: name}
		if ok {
			p, err := strconv.Atoi(n)
			if err != nil || p <= 0 {
				return nil, fmt.Errorf("bad partition count in -topics entry %q", f)
			}
			t.partitions = p
		}
		out = append(out, t)
	}
	return out, nil
}

// hasState reports whether dataDir was used by an earlier run.
func hasState(dataDir string) bool {
	if dataDir == "" {
		return false
	}
	_, err := os.Stat(filepath.Join(dataDir, "localkafka.json"))
	return err == nil
}

func portFree(port int) bool {
	l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return false
	}
	l.Close()
	return true
}
