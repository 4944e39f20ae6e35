// Command cohortsync-worker keeps MoEngage custom segments (cohorts) in step
// with a Kafka stream of membership changes. Run it with --help for its
// configuration; every setting is an environment variable and a flag.
// `cohortsync-worker check` checks a configuration before a rollout, and
// `check --offline` the configuration alone, without network (see package
// internal/preflight); `cohortsync-worker dlq replay` re-publishes
// dead-lettered records (see package internal/replay). --version, anywhere
// in the arguments, prints the version.
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
	"runtime/debug"
	"syscall"

	"github.com/cohortsync/cohortsync-worker/internal/app"
	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/memlimit"
	"github.com/cohortsync/cohortsync-worker/internal/preflight"
	"github.com/cohortsync/cohortsync-worker/internal/replay"
)

// version is stamped at build time: -ldflags "-X main.version=v1.2.3".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Environ(), os.Stdout, os.Stderr))
}

// run runs the worker or a subcommand and returns the exit code. getenv
// reads the configuration; environ ("NAME=value" entries) is only scanned
// for unknown variables.
func run(args []string, getenv func(string) string, environ []string, stdout, stderr io.Writer) int {
	if wantsVersion(args) {
		fmt.Fprintln(stdout, "cohortsync-worker", version)
		return 0
	}
	if len(args) > 0 && args[0] == "check" {
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return preflight.Main(ctx, args[1:], getenv, environ, version, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "dlq" { // subcommands: only the Kafka settings apply
		// A replay Job has its own memory limit: size the Go limit from it
		// too (silently, unless the cgroup cannot be read).
		applyMemoryLimit(newLogger(stderr, slog.LevelWarn, "text"), getenv)
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return replay.Main(ctx, args[1:], getenv, stdout, stderr)
	}
	cfg, err := config.Load(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "\nSubcommands:\n"+
			"  check\n\tcheck the configuration, Kafka and the API before a rollout, changing nothing (check --help)\n"+
			"  check --offline\n\tcheck the configuration only, without network (an init container's check)\n"+
			"  dlq replay\n\tre-publish dead-lettered records to their source topic (dlq replay --help)\n")
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	// The same finding as `check`'s config.unknown, as a warning: the
	// worker runs, with the intended setting at its default.
	for _, u := range config.UnknownVars(environ) {
		attrs := []any{"var", u.Name}
		if u.Suggestion != "" {
			attrs = append(attrs, "did_you_mean", u.Suggestion)
		}
		log.Warn("unknown environment variable ignored", attrs...)
	}
	applyMemoryLimit(log, getenv)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, app.Options{Config: cfg, Logger: log, Version: version}); err != nil {
		log.Error("cohortsync-worker failed", "err", err)
		return 1
	}
	return 0
}

// applyMemoryLimit sets the Go memory limit from the container's cgroup
// limit (memlimit.Fraction of it) unless GOMEMLIMIT is set, and logs the
// limit in force.
func applyMemoryLimit(log *slog.Logger, getenv func(string) string) {
	r, err := memlimit.Apply(getenv, "/sys/fs/cgroup",
		func() ([]byte, error) { return os.ReadFile("/proc/self/cgroup") }, debug.SetMemoryLimit)
	switch {
	case err != nil:
		log.Warn("cannot read the cgroup memory limit; no Go memory limit set", "err", err)
	case r.Source == "none":
		log.Info("no container memory limit found; no Go memory limit set (set GOMEMLIMIT to choose one)")
	default:
		log.Info("Go memory limit", "source", r.Source, "gomemlimit_bytes", r.Limit, "cgroup_limit_bytes", r.Cgroup)
	}
}

// wantsVersion reports whether --version (or -version) is among args, before
// a "--" that ends the flags, or "version" is the first argument.
func wantsVersion(args []string) bool {
	for i, a := range args {
		switch {
		case a == "--":
			return false
		case a == "--version" || a == "-version" || (i == 0 && a == "version"):
			return true
		}
	}
	return false
}

// humanDurations renders durations as Go duration strings ("30s",
// "1m30s"): slog's JSON handler would print nanoseconds (30000000000).
// It applies inside groups too, such as the start-up config line.
func humanDurations(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

func newLogger(w io.Writer, level slog.Level, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: humanDurations}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
