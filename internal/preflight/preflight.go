package preflight

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
)

// Status is the outcome of one check.
type Status string

const (
	// OK: the check proved what its detail says.
	OK Status = "ok"
	// Warn: the check could not prove it (the answer was ambiguous, or the
	// broker would not say), or found something worth a look. It does not
	// fail the run.
	Warn Status = "warn"
	// Fail: the check proved the configuration will not work.
	Fail Status = "fail"
	// Skip: not run, because a check it depends on failed.
	Skip Status = "skip"
)

// Result is one line of the report.
type Result struct {
	// Check names what was checked: config, config.unknown, kafka.brokers,
	// kafka.topic, kafka.dlq, kafka.parking, kafka.group, kafka.acls, api.dns, api.tls (or
	// api.connect for a plain-http base URL) and api.credentials; with
	// MOENGAGE_WORKSPACES_DIR also config.workspaces and, for each registry
	// workspace besides the default, the api.* checks suffixed [workspace].
	Check  string `json:"check"`
	Status Status `json:"status"`
	// Detail says what the check proved, or why it failed, in one line. It
	// never holds a secret.
	Detail string `json:"detail"`
}

// Exit codes of Main and Report.ExitCode.
const (
	ExitOK        = 0
	ExitFailed    = 1
	ExitBadConfig = 2
)

// Report is the outcome of a run.
type Report struct {
	Results []Result
}

// ExitCode is 2 when a configuration check failed, else 1 when any check
// failed, else 0.
func (r Report) ExitCode() int {
	code := ExitOK
	for _, res := range r.Results {
		if res.Status != Fail {
			continue
		}
		if strings.HasPrefix(res.Check, "config") {
			return ExitBadConfig
		}
		code = ExitFailed
	}
	return code
}

func (r Report) count(s Status) int {
	n := 0
	for _, res := range r.Results {
		if res.Status == s {
			n++
		}
	}
	return n
}

// WriteText writes one line per check, "STATUS  check  detail", and a
// summary line.
func (r Report) WriteText(w io.Writer) error {
	width := 0
	for _, res := range r.Results {
		width = max(width, len(res.Check))
	}
	var b strings.Builder
	for _, res := range r.Results {
		label := string(res.Status)
		if res.Status == Fail || res.Status == Warn {
			label = strings.ToUpper(label)
		}
		fmt.Fprintf(&b, "%-4s  %-*s  %s\n", label, width, res.Check, res.Detail)
	}
	fmt.Fprintf(&b, "check: %d ok, %d failed, %d not verified, %d skipped (exit %d)\n",
		r.count(OK), r.count(Fail), r.count(Warn), r.count(Skip), r.ExitCode())
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the report as one JSON object:
// {"exit_code":1,"ok":false,"checks":[{"check":…,"status":…,"detail":…},…]}.
func (r Report) WriteJSON(w io.Writer) error {
	results := r.Results
	if results == nil {
		results = []Result{}
	}
	return json.NewEncoder(w).Encode(struct {
		ExitCode int      `json:"exit_code"`
		OK       bool     `json:"ok"`
		Checks   []Result `json:"checks"`
	}{r.ExitCode(), r.ExitCode() == ExitOK, results})
}

// Options configure Run.
type Options struct {
	// Config is the configuration to check; Run validates it (a copy).
	Config config.Config
	// Unknown are the unknown variables of the environment
	// (config.UnknownVars); each is a failed config.unknown check.
	Unknown []config.UnknownVar
	// AllowUnknown reports Unknown as warnings instead of failures.
	AllowUnknown bool
	// Timeout bounds each network step (a connection, a request). 0 means
	// 10s.
	Timeout time.Duration
	// HTTPClient sends the API probe. nil means a client with the worker's
	// TLS floor (1.2), no redirects, and Timeout.
	HTTPClient *http.Client
	// Version is sent in the probe's User-Agent.
	Version string
	// Offline checks the configuration only (parse, validation, the files
	// it names: the CA file and *_FILE secrets are read), with no network
	// at all: the Kafka and API checks are skipped. For an init container,
	// whose pod must start whether or not the API and every broker answer
	// now; the full check belongs in a pre-deploy Job or CI.
	Offline bool

	// keyFrom, on a registry workspace's checks, says where its credentials
	// come from, for the message of a rejected key (workspaces.go).
	keyFrom string
}

// Run runs every check and returns the report. The configuration checks
// come first; when the configuration is invalid the others are skipped.
// The Kafka and API checks run concurrently; each network step is bounded
// by Options.Timeout, and all of them by ctx.
func Run(ctx context.Context, opts Options) Report {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	cfg := opts.Config
	if err := cfg.Validate(); err != nil {
		return ConfigError(err)
	}
	rep := Report{Results: []Result{{Check: "config", Status: OK, Detail: configSummary(cfg)}}}
	for _, u := range opts.Unknown {
		st := Fail
		if opts.AllowUnknown {
			st = Warn
		}
		rep.Results = append(rep.Results, Result{Check: "config.unknown", Status: st, Detail: u.String()})
	}
	var targets []wsTarget
	if cfg.MoEngageWorkspacesDir != "" {
		res, ts, def := checkWorkspaces(cfg)
		rep.Results = append(rep.Results, res...)
		targets = ts
		if def != nil { // the default's key (and data center) are the registry's
			cfg.MoEngageDataAPIKey, cfg.MoEngageBaseURL = config.NewSecret(def.key), def.baseURL
			opts.keyFrom = fmt.Sprintf("MOENGAGE_WORKSPACE_ID (%s) and its files %s.key and %s.dc in MOENGAGE_WORKSPACES_DIR",
				cfg.MoEngageWorkspaceID, cfg.MoEngageWorkspaceID, cfg.MoEngageWorkspaceID)
		}
	}
	if opts.Offline {
		const why = "skipped: --offline checks the configuration only (no network); run the full check before a rollout"
		rep.Results = append(rep.Results, Result{Check: "kafka", Status: Skip, Detail: why}, Result{Check: "api", Status: Skip, Detail: why})
		return rep
	}
	var kafkaRes, apiRes []Result
	var wg sync.WaitGroup
	wg.Go(func() { kafkaRes = checkKafka(ctx, cfg, opts.Timeout) })
	wg.Go(func() {
		if cfg.MoEngageWorkspaceID != "" && cfg.MoEngageDataAPIKey.Reveal() != "" {
			apiRes = checkAPI(ctx, cfg, opts)
		}
		apiRes = append(apiRes, checkWorkspaceAPIs(ctx, cfg, opts, targets)...)
	})
	wg.Wait()
	rep.Results = append(rep.Results, kafkaRes...)
	rep.Results = append(rep.Results, apiRes...)
	return rep
}

// ConfigError is the report of a configuration that does not load or
// validate: the error (one line, naming the variable, without secrets),
// and every other check skipped.
func ConfigError(err error) Report {
	return Report{Results: []Result{
		{Check: "config", Status: Fail, Detail: err.Error()},
		{Check: "kafka", Status: Skip, Detail: "skipped: the configuration is invalid"},
		{Check: "api", Status: Skip, Detail: "skipped: the configuration is invalid"},
	}}
}

func configSummary(c config.Config) string {
	key := "from MOENGAGE_DATA_API_KEY"
	switch {
	case c.MoEngageDataAPIKeyFile != "":
		key = "read from " + c.MoEngageDataAPIKeyFile
	case c.MoEngageWorkspacesDir != "" && c.MoEngageDataAPIKey.Reveal() == "":
		key = "from MOENGAGE_WORKSPACES_DIR " + c.MoEngageWorkspacesDir
	}
	return fmt.Sprintf("every variable valid (the validation the worker runs at start): brokers %s, topic %s, group %s, dead-letter topic %s, API %s, workspace %s, key %s",
		strings.Join(c.KafkaBrokers, ","), strings.Join(c.KafkaTopics, ","), c.KafkaGroupID, c.KafkaDLQTopic, c.MoEngageBaseURL, c.MoEngageWorkspaceID, key)
}

// oneLine keeps a foreign text (an error, a response body) to one readable
// line.
func oneLine(s string, limit int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > limit {
		s = string(r[:limit]) + "…"
	}
	return s
}
