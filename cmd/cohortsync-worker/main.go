// Command cohortsync-worker keeps MoEngage custom segments (cohorts) in step
// with a Kafka stream of membership changes. Run it with --help for its
// configuration; every setting is an environment variable and a flag.
// `cohortsync-worker dlq replay` re-publishes dead-lettered records (see
// package internal/replay).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/replay"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 && (args[0] == "--version" || args[0] == "-version" || args[0] == "version") {
		fmt.Fprintln(stdout, "cohortsync-worker", version)
		return 0
	}
	if len(args) > 0 && args[0] == "dlq" { // subcommands: only the Kafka settings apply
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return replay.Main(ctx, args[1:], getenv, stdout, stderr)
	}
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "\nSubcommands:\n  dlq replay\n\tre-publish dead-lettered records to their source topic (dlq replay --help)\n")
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, app.Options{Config: cfg, Logger: log, Version: version}); err != nil {
		log.Error("cohortsync-worker failed", "err", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
