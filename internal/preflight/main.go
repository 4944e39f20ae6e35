package preflight

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// Usage is the help text of `cohortsync-worker check`.
const Usage = `Usage: cohortsync-worker check [--offline] [--output text|json] [--timeout 10s] [--allow-unknown] [worker flags]

Checks, without changing anything, that the worker's configuration will work:
the configuration (as validated at start, plus unknown variables with the
worker's prefixes), Kafka (brokers reachable with the configured TLS/SASL, the
topics, the dead-letter topic and its max.message.bytes, the consumer group,
the operations the worker needs) and the Cohort Sync API (DNS, TLS, the
credentials as far as the contract allows, with one request that carries
the configured key and names no segment). One line per check.

With --offline it checks the configuration only: the variables, and the
files they name (the CA file, the *_FILE secrets) are read; nothing touches
the network. That is the init container's check: a pod start must not depend
on the API or every broker answering. Run the full check before a rollout
(a pre-deploy Job) or in CI.

It reads the same environment variables and flags as the worker
(cohortsync-worker --help lists them).

  --offline           the configuration only, no network
  --output text|json  one line per check (default), or one JSON object
  --timeout d         bound on each network step (default 10s)
  --allow-unknown     report unknown variables without failing

Exit status: 0 every check passed (some may be "not verified"), 1 a check
failed, 2 bad configuration.
`

// Main runs `cohortsync-worker check <args>` and returns the exit code.
// getenv reads the configuration; environ lists the environment
// ("NAME=value") for the unknown-variable check. The report goes to stdout,
// usage errors to stderr.
func Main(ctx context.Context, args []string, getenv func(string) string, environ []string,
	version string, stdout, stderr io.Writer) int {
	output, timeout, allowUnknown, offline := "text", 10*time.Second, false, false
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, value, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			rest = append(rest, a)
			continue
		}
		takeValue := func() (string, bool) {
			if hasValue {
				return value, true
			}
			if i+1 < len(args) {
				i++
				return args[i], true
			}
			return "", false
		}
		switch name {
		case "h", "help":
			fmt.Fprint(stdout, Usage)
			return ExitOK
		case "output", "o":
			v, ok := takeValue()
			if !ok || (v != "text" && v != "json") {
				fmt.Fprintf(stderr, "check: --output takes text or json\n")
				return ExitBadConfig
			}
			output = v
		case "timeout":
			v, ok := takeValue()
			d, err := time.ParseDuration(v)
			if !ok || err != nil || d <= 0 {
				fmt.Fprintf(stderr, "check: --timeout takes a positive duration, e.g. 10s\n")
				return ExitBadConfig
			}
			timeout = d
		case "offline":
			offline = !hasValue || value == "true"
		case "allow-unknown":
			allowUnknown = !hasValue || value == "true"
		default:
			rest = append(rest, a)
		}
	}
	write := func(rep Report) int {
		var err error
		if output == "json" {
			err = rep.WriteJSON(stdout)
		} else {
			err = rep.WriteText(stdout)
		}
		if err != nil {
			fmt.Fprintln(stderr, "check:", err)
		}
		return rep.ExitCode()
	}
	cfg, err := config.Load(rest, getenv, io.Discard)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, Usage)
		return ExitOK
	}
	if err != nil {
		return write(ConfigError(err))
	}
	return write(Run(ctx, Options{Config: cfg, Unknown: config.UnknownVars(environ),
		AllowUnknown: allowUnknown, Timeout: timeout, Version: version, Offline: offline}))
}
