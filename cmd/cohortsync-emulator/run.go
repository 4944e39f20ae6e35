package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
)

const progName = "cohortsync-emulator"

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // the server could not start or failed while running
	exitUsage = 2 // invalid flags, environment or configuration
)

// run parses args and the environment, serves until SIGINT or SIGTERM, and
// returns the exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return serve(ctx, args, getenv, stdout, stderr, nil)
}

// options are the parsed flags.
type options struct {
	listen          string
	addrFile        string
	shutdownTimeout time.Duration
	logLevel        string
	logFormat       string
	cfg             emulator.Config
}

// serve is run without signal handling: it serves until ctx is done. ready,
// when not nil, is called with the bound address once the listener is open.
func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, ready func(net.Addr)) int {
	opts, err := parseOptions(args, getenv, stdout)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (see --help)\n", progName, err)
		return exitUsage
	}
	logger, err := newLogger(stderr, opts.logLevel, opts.logFormat)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v (see --help)\n", progName, err)
		return exitUsage
	}
	opts.cfg.Logger = logger
	emu, err := emulator.New(opts.cfg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", progName, err)
		return exitUsage
	}

	ln, err := net.Listen("tcp", opts.listen)
	if err != nil {
		fmt.Fprintf(stderr, "%s: listen on %s: %v\n", progName, opts.listen, err)
		return exitError
	}
	addr := ln.Addr()
	logger.Info("listening", "addr", addr.String())
	if opts.addrFile != "" {
		if err := os.WriteFile(opts.addrFile, []byte(addr.String()+"\n"), 0o644); err != nil {
			ln.Close()
			fmt.Fprintf(stderr, "%s: write --addr-file: %v\n", progName, err)
			return exitError
		}
	}
	if ready != nil {
		ready(addr)
	}

	srv := &http.Server{
		Handler:           emu,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		logger.Error("server failed", "err", err)
		return exitError
	case <-ctx.Done():
	}
	logger.Info("shutting down", "timeout", opts.shutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), opts.shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		logger.Warn("graceful shutdown timed out; closing connections", "err", err)
		_ = srv.Close()
	}
	logger.Info("stopped")
	return exitOK
}

// envName is the environment variable for a flag: EMULATOR_ + upper snake.
func envName(flagName string) string {
	return "EMULATOR_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parseOptions parses flags, then fills flags not given on the command line
// from the environment. It prints usage to stdout and returns flag.ErrHelp
// for -h/--help.
func parseOptions(args []string, getenv func(string) string, stdout io.Writer) (options, error) {
	var o options
	def := emulator.DefaultConfig()
	fs := flag.NewFlagSet(progName, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on; \":0\" or \"127.0.0.1:0\" picks a free port (logged as listening addr=…)")
	fs.StringVar(&o.addrFile, "addr-file", "", "also write the bound address to this file")
	credentials := fs.String("credentials", "", "credentials as workspace_id:api_key pairs, comma-separated (ws1:key1,ws2:key2)")
	credentialsFile := fs.String("credentials-file", "", "file of credentials: a JSON object {\"ws\":\"key\"} or workspace_id:api_key pairs, one per line or comma-separated; # starts a comment")
	workspacesDir := fs.String("workspaces-dir", "", "directory of workspaces in the worker's MOENGAGE_WORKSPACES_DIR layout: <workspace_id>.key holds the key, optional <workspace_id>.rate_limit_rpm the workspace's rate limit (.dc and dot-files are ignored; read once at start)")
	rateLimits := fs.String("workspace-rate-limits", "", "per-workspace rate limits as workspace_id:requests pairs, comma-separated (ws1:600,ws2:60); -1 = unlimited; others use --rate-limit")
	usersFile := fs.String("users-file", "", "JSON object {\"workspace_id\":[\"uid\",…]} that enables the user store; without it every uid exists")
	fs.IntVar(&o.cfg.MaxBodyBytes, "max-body-bytes", def.MaxBodyBytes, "bodies longer than this get 413")
	fs.IntVar(&o.cfg.RateLimit, "rate-limit", def.RateLimit, "requests per window per workspace; 0 = unlimited")
	fs.DurationVar(&o.cfg.RateWindow, "rate-window", def.RateWindow, "fixed rate-limit window")
	fs.BoolVar(&o.cfg.CountRejected, "count-rejected", def.CountRejected, "count 400/403 answers after authentication toward the rate limit")
	fs.StringVar(&o.cfg.ResetHeader, "reset-header", def.ResetHeader, "x-ratelimit-reset format: delta (seconds left) or epoch (Unix seconds)")
	fs.BoolVar(&o.cfg.RetryAfter, "retry-after", def.RetryAfter, "also send Retry-After on 429")
	fs.StringVar(&o.cfg.LeadingPeriod, "leading-period", def.LeadingPeriod, "cohort_name leading '.' policy: reject, require or ignore")
	fs.BoolVar(&o.cfg.StrictMembers, "strict-members", false, "reject unknown member keys and parentheses in cohort_name")
	fs.BoolVar(&o.cfg.DiscardMembers, "discard-members", false, "keep no segment membership (requests are still validated, counted and logged): for load tests")
	fs.IntVar(&o.cfg.RequestLogSize, "request-log-size", emulator.DefaultRequestLogSize, "request records kept for /_emulator/requests; negative disables")
	fs.Uint64Var(&o.cfg.Seed, "seed", 0, "seed for fault randomness; 0 = random")
	fs.Float64Var(&o.cfg.Faults.ErrorRate, "error-rate", 0, "fault: fraction of valid requests answered 5xx")
	errorStatuses := fs.String("error-statuses", "500", "fault: comma-separated statuses for injected 5xx (500, 502, 503, 504)")
	fs.DurationVar(&o.cfg.Faults.Latency, "latency", 0, "fault: latency added before each API request is handled")
	fs.DurationVar(&o.cfg.Faults.LatencyJitter, "latency-jitter", 0, "fault: random extra latency up to this")
	fs.Float64Var(&o.cfg.Faults.ResetRate, "reset-rate", 0, "fault: fraction of valid requests whose connection is reset")
	fs.BoolVar(&o.cfg.Faults.Forbidden, "forbidden", false, "fault: answer 403 (account suspended) to every authenticated request")
	fs.StringVar(&o.cfg.Faults.ForbiddenVariant, "forbidden-variant", emulator.ForbiddenSuspended, "fault: 403 body: suspended, blocked or temporarily_suspended")
	fs.BoolVar(&o.cfg.Faults.Outage, "outage", false, "fault: answer 503 to every API request")
	fs.BoolVar(&o.cfg.Faults.OutageReset, "outage-reset", false, "fault: during outages reset connections instead of answering 503")
	fs.BoolVar(&o.cfg.Faults.BadRequest, "bad-request", false, "fault: answer 400 Malformed JSON (no attribute) to every valid request, without applying it")
	fs.BoolVar(&o.cfg.Faults.StatusFail, "status-fail", false, "fault: answer 200 with a {\"status\":\"fail\"} error body to every valid request, without applying it")
	rejectUIDs := fs.String("reject-uids", "", "fault: comma-separated uids; a request holding any of them gets 400 with no attribute and is not applied")
	fs.BoolVar(&o.cfg.Faults.ApplyBeforeError, "apply-before-error", false, "fault: apply a valid request before answering it with an injected 5xx or reset")
	fs.Float64Var(&o.cfg.Faults.LateRate, "late-rate", 0, "fault: fraction of requests held for -late-delay, then processed even if the client gave up")
	fs.DurationVar(&o.cfg.Faults.LateDelay, "late-delay", 0, "fault: how long -late-rate holds a request (beyond the client's timeout)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log level: debug (one line per request), info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "graceful shutdown budget on SIGINT/SIGTERM")

	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout, fs)
		}
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || envErr != nil {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if err := fs.Set(f.Name, v); err != nil {
				envErr = fmt.Errorf("invalid value %q for %s: %v", v, envName(f.Name), err)
			}
		}
	})
	if envErr != nil {
		return o, envErr
	}

	creds, err := parseCredentials(*credentials)
	if err != nil {
		return o, fmt.Errorf("--credentials: %w", err)
	}
	if *credentialsFile != "" {
		b, err := os.ReadFile(*credentialsFile)
		if err != nil {
			return o, fmt.Errorf("--credentials-file: %w", err)
		}
		fileCreds, err := parseCredentialsFile(b)
		if err != nil {
			return o, fmt.Errorf("--credentials-file %s: %w", *credentialsFile, err)
		}
		for ws, key := range fileCreds {
			if k, ok := creds[ws]; ok && k != key {
				return o, fmt.Errorf("workspace %q has different keys in --credentials and --credentials-file", ws)
			}
			creds[ws] = key
		}
	}
	o.cfg.Workspaces, err = workspacesFromFlags(creds, *workspacesDir, *rateLimits)
	if err != nil {
		return o, err
	}
	if len(creds) == 0 && len(o.cfg.Workspaces) == 0 {
		return o, errors.New("no credentials: set --credentials (EMULATOR_CREDENTIALS), --credentials-file (EMULATOR_CREDENTIALS_FILE) or --workspaces-dir (EMULATOR_WORKSPACES_DIR)")
	}
	o.cfg.Credentials = creds

	if *usersFile != "" {
		b, err := os.ReadFile(*usersFile)
		if err != nil {
			return o, fmt.Errorf("--users-file: %w", err)
		}
		if err := json.Unmarshal(b, &o.cfg.Users); err != nil || o.cfg.Users == nil {
			return o, fmt.Errorf("--users-file %s: want a JSON object {\"workspace_id\":[\"uid\",...]}", *usersFile)
		}
	}
	for s := range strings.SplitSeq(*errorStatuses, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return o, fmt.Errorf("--error-statuses: %q is not a status code", s)
		}
		o.cfg.Faults.ErrorStatuses = append(o.cfg.Faults.ErrorStatuses, n)
	}
	for u := range strings.SplitSeq(*rejectUIDs, ",") {
		if u = strings.TrimSpace(u); u != "" {
			o.cfg.Faults.RejectUIDs = append(o.cfg.Faults.RejectUIDs, u)
		}
	}
	if o.cfg.MaxBodyBytes <= 0 {
		return o, fmt.Errorf("--max-body-bytes must be positive, got %d", o.cfg.MaxBodyBytes)
	}
	if o.cfg.RateWindow <= 0 {
		return o, fmt.Errorf("--rate-window must be positive, got %s", o.cfg.RateWindow)
	}
	if o.shutdownTimeout <= 0 {
		return o, fmt.Errorf("--shutdown-timeout must be positive, got %s", o.shutdownTimeout)
	}
	if err := o.cfg.Validate(); err != nil {
		return o, err
	}
	return o, nil
}

// workspacesFromFlags loads --workspaces-dir and applies
// --workspace-rate-limits, to workspaces of the directory or of creds.
func workspacesFromFlags(creds map[string]string, dir, limits string) (map[string]emulator.Workspace, error) {
	var out map[string]emulator.Workspace
	if dir != "" {
		loaded, err := emulator.LoadWorkspacesDir(dir)
		if err != nil {
			return nil, fmt.Errorf("--workspaces-dir: %w", err)
		}
		for ws, w := range loaded {
			if k, ok := creds[ws]; ok && k != w.Key {
				return nil, fmt.Errorf("workspace %q has different keys in --workspaces-dir and --credentials", ws)
			}
		}
		out = loaded
	}
	for pair := range strings.SplitSeq(limits, ",") {
		if pair = strings.TrimSpace(pair); pair == "" {
			continue
		}
		ws, v, _ := strings.Cut(pair, ":")
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if ws = strings.TrimSpace(ws); err != nil || ws == "" || n == 0 || n < -1 {
			return nil, fmt.Errorf("--workspace-rate-limits: %q is not workspace_id:requests (a positive number, or -1)", pair)
		}
		w, ok := out[ws]
		if !ok {
			key, known := creds[ws]
			if !known {
				return nil, fmt.Errorf("--workspace-rate-limits: workspace %q has no key", ws)
			}
			w = emulator.Workspace{Key: key}
		}
		w.RateLimit = n
		if out == nil {
			out = map[string]emulator.Workspace{}
		}
		out[ws] = w
	}
	return out, nil
}

// parseCredentials parses "ws1:key1,ws2:key2". Keys may contain ':'.
func parseCredentials(s string) (map[string]string, error) {
	out := map[string]string{}
	for pair := range strings.SplitSeq(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		ws, key, ok := strings.Cut(pair, ":")
		ws, key = strings.TrimSpace(ws), strings.TrimSpace(key)
		if !ok || ws == "" || key == "" {
			return nil, fmt.Errorf("%q is not workspace_id:api_key", redact(pair))
		}
		if k, dup := out[ws]; dup && k != key {
			return nil, fmt.Errorf("workspace %q is given twice with different keys", ws)
		}
		out[ws] = key
	}
	return out, nil
}

// parseCredentialsFile reads a JSON object or lines of pairs.
func parseCredentialsFile(b []byte) (map[string]string, error) {
	if t := strings.TrimSpace(string(b)); strings.HasPrefix(t, "{") {
		var m map[string]string
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, fmt.Errorf("invalid JSON: %w", err)
		}
		return m, nil
	}
	var lines []string
	for line := range strings.Lines(string(b)) {
		if i := strings.Index(line, "#"); i >= 0 {
			line = line[:i]
		}
		lines = append(lines, strings.TrimSpace(line))
	}
	return parseCredentials(strings.Join(lines, ","))
}

// redact hides the key part of a malformed credential in error messages.
func redact(pair string) string {
	if ws, _, ok := strings.Cut(pair, ":"); ok {
		return ws + ":***"
	}
	if len(pair) > 3 {
		return pair[:3] + "***"
	}
	return "***"
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q is not debug, info, warn or error", level)
	}
	hopts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, hopts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q is not text or json", format)
	}
}

func printUsage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `Usage: %s [flags]

Serves an emulation of POST %s (MoEngage Cohort Sync API)
and an admin API under %s (healthz, segments, requests, faults, reset, users,
workspaces).

Several workspaces: each has its own key, rate limit window, segments and,
optionally, faults. Give them with --credentials, --credentials-file and
--workspaces-dir (together, the union), and their own limits with
--workspace-rate-limits or <workspace_id>.rate_limit_rpm files. At run time,
per workspace ({id} path-escaped):
  PUT    %sworkspaces/{id}          add it or rotate its key: {"key":"…","rate_limit":N}
  DELETE %sworkspaces/{id}          stop serving it (401 from then on)
  POST   %sworkspaces/{id}/revoke   its key gets 401 until .../restore
  PUT    %sworkspaces/{id}/faults   its own faults (DELETE: back to the global ones)
  GET    %sworkspaces/{id}/segments its segments (also .../requests)

Every flag can also be set by the environment variable shown in brackets;
a flag given on the command line wins. Faults can be changed at run time
with PUT %sfaults.

Flags:
`, progName, emulator.APIPath, emulator.AdminPrefix, emulator.AdminPrefix, emulator.AdminPrefix,
		emulator.AdminPrefix, emulator.AdminPrefix, emulator.AdminPrefix, emulator.AdminPrefix)
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		name := "--" + f.Name
		if typ != "" {
			name += " " + typ
		}
		fmt.Fprintf(w, "  %s  [%s]\n        %s", name, envName(f.Name), usage)
		switch {
		case f.DefValue == "" || f.DefValue == "0" || f.DefValue == "false" || f.DefValue == "0s":
		case typ == "string":
			fmt.Fprintf(w, " (default %q)", f.DefValue)
		default:
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}
