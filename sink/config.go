package sink

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Path is the Cohort Sync endpoint, relative to Config.BaseURL.
const Path = "/v1/integrations/cohortsync"

// Defaults for the zero values of Config.
const (
	DefaultMaxBodyBytes      = wire.DefaultMaxBodyBytes
	DefaultAttemptTimeout    = 15 * time.Second
	DefaultInitialInterval   = 500 * time.Millisecond
	DefaultMaxInterval       = 60 * time.Second
	DefaultAuthRetryInterval = 30 * time.Second
	// DefaultAuthRetryMaxInterval: a line stopped for long probes the API
	// every 5 minutes per stopped Send.
	DefaultAuthRetryMaxInterval = 5 * time.Minute
	DefaultUserAgent            = "cohortsync-worker"
	// DefaultBlockedAfter: a workspace failing alone for 30 s is blocked.
	DefaultBlockedAfter = 30 * time.Second
)

// Config configures a Client. Zero values take the documented defaults.
type Config struct {
	// BaseURL is scheme://host[:port][/prefix]; requests go to BaseURL + Path.
	// It must be http or https and must not carry credentials, a query or a
	// fragment.
	BaseURL string
	// WorkspaceID is the Basic-auth username and the MOE-APPKEY header.
	WorkspaceID string
	// APIKey is the Basic-auth password. It is never logged and never part
	// of an error: if the server echoes it, it is replaced by [REDACTED].
	APIKey string
	// MaxBodyBytes caps a request body; 0 means 128000 (DESIGN.md "Retry
	// policy in the sink", Size: larger bodies are split, never sent).
	MaxBodyBytes int
	// AttemptTimeout bounds one HTTP attempt, reading the answer included;
	// 0 means 15s. An attempt that times out is retried like a 5xx.
	AttemptTimeout time.Duration
	// MaxProcessingTime bounds how long the API may still process a request
	// after it was sent; longer than AttemptTimeout; 0 means twice it
	// (unknown.go says what waits for it).
	MaxProcessingTime time.Duration
	// InitialInterval and MaxInterval bound the retry backoff; 0 means 500ms
	// and 60s (DESIGN.md "Retry policy in the sink").
	InitialInterval time.Duration
	MaxInterval     time.Duration
	// MaxElapsed is how long Send retries without progress before ErrGaveUp;
	// 0, the default, means forever (sender.retrying; DESIGN.md "Retry
	// policy in the sink", Giving up).
	MaxElapsed time.Duration
	// AuthRetryInterval is the first pause between probes of a stopped line,
	// doubling up to AuthRetryMaxInterval (never below it); 0 means 30s and 5m (stopPause;
	// DESIGN.md "Retry policy in the sink").
	AuthRetryInterval    time.Duration
	AuthRetryMaxInterval time.Duration
	// BlockedAfter is how long a workspace's requests fail retryably,
	// while another workspace's go through, before it is blocked
	// (Client.Blocked; blocked.go); 0 means 30s. Used only with Targets.
	BlockedAfter time.Duration
	// APIKeyFunc re-reads the API key after a 401/403; nil: never (key.go:
	// reloadKey says when, and what a new key, an error or "" do).
	APIKeyFunc func() (string, error)
	// Targets, when set, gives the target (ID, base URL, key) of each
	// batch's workspace (wire.Header.Workspace; "" means WorkspaceID),
	// resolved before every attempt; it returns an error wrapping
	// ErrUnknownWorkspace for a workspace it does not know. BaseURL,
	// APIKey and APIKeyFunc are then not used, and WorkspaceID, the default
	// workspace, is optional. nil: every batch is for WorkspaceID, sent
	// with BaseURL and APIKey (target.go).
	Targets func(workspace string) (Target, error)
	// Lease, when set, fences a paused replica; nil: always valid (the Lease
	// and fence types in lease.go; DESIGN.md invariant 4).
	Lease Lease
	// UserAgent is the User-Agent header; "" means "cohortsync-worker".
	UserAgent string
	// ReplicaID, when set, is sent as the X-Cohortsync-Replica header (the
	// emulator's request log records it).
	ReplicaID string
	// HTTPClient sends the requests; nil means a pooled client fenced by
	// the Lease (see New, also for what a caller's client gets).
	HTTPClient *http.Client
	// Limiter gives the permit of every attempt, and is paused on a 429
	// (a *ratelimit.Limiter: the replica's share of the fleet budget). nil
	// means unlimited (a 429 then only delays the Send that got it).
	Limiter Limiter
	// Limiters, when set, gives the Limiter of each workspace (its ID; a
	// budget per workspace, internal/ratelimit.Fleets): an attempt takes
	// its permit from its batch's workspace's, and a 429 or a spent window
	// pauses that one only. A nil result falls back to Limiter.
	Limiters func(workspace string) Limiter
	// MaxConcurrent is the most attempts on the wire at once (MAX_IN_FLIGHT),
	// over all workspaces: each takes a slot after its permit (slots.go).
	// 0 means no bound.
	MaxConcurrent int
	// Logger receives the client's logs, with component=sink. nil means
	// slog.Default().
	Logger *slog.Logger
	// Metrics receives the request metrics. nil means an unregistered set.
	Metrics *metrics.Metrics
}

// Validate reports the first problem with c. Its errors never contain the
// API key (nor a password in BaseURL). APIKey is required even with
// APIKeyFunc: it is the key of the first attempts.
//
// With Targets, BaseURL and APIKey are not required (and not used), nor is
// WorkspaceID; each target is checked before its attempts.
func (c Config) Validate() error {
	if c.Targets == nil || c.BaseURL != "" {
		if err := validBaseURL(c.BaseURL); err != nil {
			return err
		}
	}
	if c.Targets == nil || c.WorkspaceID != "" {
		if err := validWorkspaceID(c.WorkspaceID); err != nil {
			return fmt.Errorf("sink: WorkspaceID %w", err)
		}
	}
	switch {
	case c.APIKey == "" && c.Targets == nil:
		return errors.New("sink: APIKey is required")
	case c.MaxBodyBytes < 0:
		return errors.New("sink: MaxBodyBytes is negative")
	case c.MaxConcurrent < 0:
		return errors.New("sink: MaxConcurrent is negative")
	case c.AttemptTimeout < 0, c.BlockedAfter < 0, c.InitialInterval < 0, c.MaxInterval < 0, c.MaxElapsed < 0, c.AuthRetryInterval < 0,
		c.AuthRetryMaxInterval < 0, c.MaxProcessingTime < 0:
		return errors.New("sink: a timeout or interval is negative")
	case c.MaxProcessingTime != 0 && c.MaxProcessingTime <= cmp.Or(c.AttemptTimeout, DefaultAttemptTimeout):
		return errors.New("sink: MaxProcessingTime must be longer than AttemptTimeout")
	case strings.ContainsFunc(c.UserAgent+c.ReplicaID, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return errors.New("sink: UserAgent and ReplicaID must not contain control characters")
	}
	return nil
}

// validBaseURL checks a base URL: http(s)://host[:port][/prefix], without
// credentials, a query or a fragment. Its errors never show a secret.
func validBaseURL(base string) error {
	u, err := url.Parse(base)
	if base == "" {
		return errors.New("sink: BaseURL is required")
	}
	if err != nil {
		return errors.New("sink: BaseURL is not a valid URL") // not echoed: it may hold a secret
	}
	// shown is the URL without the parts that may hold a secret.
	shown := (&url.URL{Scheme: u.Scheme, Host: u.Host, Path: u.Path}).String()
	switch {
	case u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return fmt.Errorf("sink: BaseURL %q is not an http(s)://host URL", shown)
	case u.User != nil:
		return fmt.Errorf("sink: BaseURL %q must not carry credentials (use WorkspaceID and APIKey)", shown)
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return fmt.Errorf("sink: BaseURL %q must not have a query or a fragment", shown)
	}
	return nil
}

// validWorkspaceID checks a workspace ID, the Basic-auth user.
func validWorkspaceID(id string) error {
	switch {
	case id == "":
		return errors.New("is required")
	case strings.ContainsFunc(id, func(r rune) bool { return r == ':' || r < 0x21 || r == 0x7f }):
		return errors.New("must not contain ':', spaces or control characters")
	}
	return nil
}

// New validates cfg, fills in its defaults and returns a Client.
//
// Config.HTTPClient nil means a pooled client with no overall Timeout, since
// attempts have their own, whose connections check the Lease before every
// write (defaultHTTPClient); a caller's client gets only the checks before
// the attempt and the attempt's deadline. Redirects are never followed,
// whoever built the client (New uses a copy with its own CheckRedirect,
// noRedirect): a 3xx means a wrong BaseURL.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.AttemptTimeout, DefaultAttemptTimeout)
	def(&cfg.InitialInterval, DefaultInitialInterval)
	def(&cfg.MaxInterval, DefaultMaxInterval)
	def(&cfg.AuthRetryInterval, DefaultAuthRetryInterval)
	def(&cfg.AuthRetryMaxInterval, DefaultAuthRetryMaxInterval)
	cfg.AuthRetryMaxInterval = max(cfg.AuthRetryMaxInterval, cfg.AuthRetryInterval)
	def(&cfg.MaxProcessingTime, 2*cfg.AttemptTimeout)
	def(&cfg.BlockedAfter, DefaultBlockedAfter)
	if cfg.MaxInterval < cfg.InitialInterval {
		cfg.MaxInterval = cfg.InitialInterval
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = DefaultUserAgent
	}
	f := newFence(cfg.Lease)
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient(f)
	} else {
		hc := *cfg.HTTPClient // a copy: the caller's client is not modified
		hc.CheckRedirect = noRedirect
		cfg.HTTPClient = &hc
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New(nil)
	}
	c := &Client{
		cfg:         cfg,
		url:         strings.TrimRight(cfg.BaseURL, "/") + Path, // unused with Targets
		log:         cfg.Logger.With("component", "sink"),
		m:           cfg.Metrics,
		fence:       f,
		hvAppKey:    []string{cfg.WorkspaceID},
		hvUserAgent: []string{cfg.UserAgent},
		unknown:     map[cohortKey]map[string]time.Time{},
		slots:       newHTTPSlots(cfg.MaxConcurrent),
	}
	c.line = c.newStoppedLine()
	c.creds.Store(newCreds(cfg.WorkspaceID, cfg.APIKey, nil))
	if cfg.ReplicaID != "" {
		c.hvReplica = []string{cfg.ReplicaID}
	}
	return c, nil
}

// CloseIdleConnections closes the HTTP client's idle connections; call it
// when the Client is no longer used.
func (c *Client) CloseIdleConnections() { c.cfg.HTTPClient.CloseIdleConnections() }
