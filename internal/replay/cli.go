package replay

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaconn"
)

// Exit codes of Main.
const (
	ExitOK      = 0 // done (a dry run included)
	ExitFailure = 1 // the replay failed or was interrupted; what it wrote is committed
	ExitUsage   = 2 // bad flags or configuration; nothing was read
)

// Main runs `cohortsync-worker dlq <args>` and returns the exit code. Only
// the Kafka settings of the worker's configuration are read (environment
// and --kafka-* flags); the MoEngage ones are neither needed nor checked.
// The summary line goes to stdout, progress and errors to stderr.
func Main(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "dlq: missing subcommand: usage: cohortsync-worker dlq replay [flags] (see --help)")
		return ExitUsage
	}
	switch args[0] {
	case "replay":
		return replayMain(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprintf(stdout, "Usage: cohortsync-worker dlq replay [flags]\n\n"+
			"  replay  re-publish dead-lettered records to their source topic (--help lists its flags)\n")
		return ExitOK
	default:
		fmt.Fprintf(stderr, "dlq: unknown subcommand %q: usage: cohortsync-worker dlq replay [flags]\n", args[0])
		return ExitUsage
	}
}

// options are the replay's own flags.
type options struct {
	dryRun     bool
	reasons    []event.Reason
	toTopic    string
	limit      int
	fromOffset int64
	since      time.Time
	group      string
}

// replayFlags defines the replay flags on fs and returns where they land.
func replayFlags(fs *flag.FlagSet) *options {
	o := &options{fromOffset: -1}
	fs.BoolVar(&o.dryRun, "dry-run", false, "print what would be replayed (to stdout); write and commit nothing, and do not join the group")
	fs.Func("reason", "replay only dead letters whose cohortsync-reason is one of these `reasons`, comma-separated or repeated: "+reasonList(), func(v string) error {
		for _, r := range strings.Split(v, ",") {
			r = strings.TrimSpace(r)
			if r == "" {
				continue
			}
			if !slices.Contains(event.Reasons, event.Reason(r)) {
				return fmt.Errorf("unknown reason %q (want one of %s)", r, reasonList())
			}
			o.reasons = append(o.reasons, event.Reason(r))
		}
		return nil
	})
	fs.StringVar(&o.toTopic, "to-topic", "", "write every replayed record to this `topic` (partitioned by key hash) instead of its cohortsync-source-topic and -partition")
	fs.IntVar(&o.limit, "limit", 0, "stop after replaying `n` records (0: no limit)")
	fs.Func("from-offset", "start every partition at this `offset` or later (the group's committed offset wins when further on)", func(v string) error {
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is not an offset (a non-negative integer)", v)
		}
		o.fromOffset = n
		return nil
	})
	fs.Func("since", "start every partition at its first dead letter written at or after this RFC 3339 `time`, or later (as --from-offset)", func(v string) error {
		t, err := time.Parse(time.RFC3339, strings.TrimSpace(v))
		if err != nil {
			return fmt.Errorf("%q is not an RFC 3339 time such as 2026-11-28T10:00:00Z", v)
		}
		o.since = t
		return nil
	})
	fs.StringVar(&o.group, "group", "", "consumer `group` that records the replay's progress (default <KAFKA_GROUP_ID>-dlq-replay)")
	return o
}

func reasonList() string {
	s := make([]string, len(event.Reasons))
	for i, r := range event.Reasons {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// kafkaVars are the worker settings the replay reads.
func kafkaVars() []config.Var {
	var out []config.Var
	for _, v := range config.Vars {
		if strings.HasPrefix(v.Env, "KAFKA_") {
			out = append(out, v)
		}
	}
	return out
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, `Usage: cohortsync-worker dlq replay [flags]

Re-publishes dead-lettered records to the topic (and partition) they were read
from, with their key and value, without the cohortsync-* headers, and with
cohortsync-replayed-from: <dead-letter topic>/<partition>/<offset>. It reads
the dead-letter topic from the replay group's committed offset (or the
beginning) up to its end when the run starts, commits after every write, and
exits: a second run with the same group replays nothing twice. The summary
line "read=N replayed=N skipped=N" goes to stdout, progress to stderr.

Flags:
`)
	fs.VisitAll(func(f *flag.Flag) {
		if strings.HasPrefix(f.Name, "kafka-") {
			return
		}
		name, help := flag.UnquoteUsage(f)
		if name != "" {
			name = " <" + name + ">"
		}
		fmt.Fprintf(w, "  --%s%s\n\t%s\n", f.Name, name, help)
	})
	fmt.Fprintf(w, "\nKafka settings (the worker's; each also an environment variable, flags win):\n")
	for _, v := range kafkaVars() {
		def := v.Default
		if v.Secret || def == "" {
			def = "none"
		}
		fmt.Fprintf(w, "  --%s  (%s)\n\t%s (default: %s)\n", v.Flag, v.Env, v.Help, def)
	}
	fmt.Fprintf(w, "\nExit status: 0 done, 1 the replay failed or was interrupted (what it wrote is committed),\n2 bad flags or configuration.\n")
}

func replayMain(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dlq replay", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	o := replayFlags(fs)
	var kafkaArgs []string
	for _, v := range kafkaVars() {
		record := func(s string) error {
			kafkaArgs = append(kafkaArgs, "--"+v.Flag+"="+s)
			return nil
		}
		if v.Default == "false" || v.Default == "true" { // --kafka-tls alone means true, as for the worker
			fs.BoolFunc(v.Flag, v.Help, record)
		} else {
			fs.Func(v.Flag, v.Help, record)
		}
	}
	bad := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "dlq replay: "+format+"\n", a...)
		return ExitUsage
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, fs)
			return ExitOK
		}
		return bad("%s", firstLine(err.Error()))
	}
	if fs.NArg() > 0 {
		return bad("unexpected argument %q", fs.Arg(0))
	}
	cfg, err := config.Load(kafkaArgs, kafkaOnly(getenv), nil)
	if err != nil {
		return bad("%s", firstLine(err.Error()))
	}
	group := o.group
	if group == "" {
		group = cfg.KafkaGroupID + "-dlq-replay"
	}
	switch {
	case o.limit < 0:
		return bad("--limit must not be negative")
	case o.fromOffset >= 0 && !o.since.IsZero():
		return bad("--from-offset and --since are exclusive")
	case group == cfg.KafkaGroupID:
		return bad("--group must differ from KAFKA_GROUP_ID (%s): the workers' group must not consume the dead-letter topic", cfg.KafkaGroupID)
	case o.toTopic == cfg.KafkaDLQTopic:
		return bad("--to-topic is the dead-letter topic %s", cfg.KafkaDLQTopic)
	}
	dialer, transport, err := kafkaconn.New(cfg, nil)
	if err != nil {
		return bad("%s", firstLine(err.Error()))
	}
	defer transport.CloseIdleConnections()
	k := NewKafka(cfg.KafkaBrokers, dialer, transport)
	r, err := New(Config{
		Topic: cfg.KafkaDLQTopic, Group: group,
		FromOffset: o.fromOffset, Since: o.since, Reasons: o.reasons, ToTopic: o.toTopic,
		Limit: o.limit, DryRun: o.dryRun,
		Topics: k, Writer: k, Groups: k,
		Out: stdout, Status: stderr,
	})
	if err != nil {
		return bad("%s", err)
	}
	mode := ""
	if o.dryRun {
		mode = " (dry run: nothing is written or committed)"
	}
	fmt.Fprintf(stderr, "dlq replay: %s with group %s%s\n", cfg.KafkaDLQTopic, group, mode)
	stats, err := r.Run(ctx)
	fmt.Fprintln(stdout, stats)
	if err != nil {
		fmt.Fprintf(stderr, "dlq replay: %s\n", err)
		return ExitFailure
	}
	return ExitOK
}

// kafkaOnly is the environment config.Load sees: the KAFKA_* variables as
// they are, stand-ins for the required MoEngage settings (config.Load
// validates a whole worker configuration; the replay never uses them), and
// nothing else, so that no other variable can make the replay fail.
func kafkaOnly(getenv func(string) string) func(string) string {
	return func(k string) string {
		switch {
		case strings.HasPrefix(k, "KAFKA_"):
			return getenv(k)
		case k == "MOENGAGE_WORKSPACE_ID", k == "MOENGAGE_DATA_API_KEY":
			return "unused-by-dlq-replay"
		case k == "MOENGAGE_BASE_URL": // stands in for the required MOENGAGE_DC
			return "https://unused-by-dlq-replay.invalid"
		}
		return ""
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
