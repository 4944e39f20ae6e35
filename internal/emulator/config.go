package emulator

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Values of Config.ResetHeader: the format of the x-ratelimit-reset header.
const (
	// ResetDelta sends the seconds left until the window resets (the Data API
	// description in contract §7.4); the default.
	ResetDelta = "delta"
	// ResetEpoch sends the time the window resets, in Unix seconds (the
	// general Rate Limits page in contract §7.4).
	ResetEpoch = "epoch"
)

// Values of Config.LeadingPeriod: what to do with a cohort_name that starts
// with a period (contract §5 records both rules).
const (
	// LeadingPeriodReject answers 400 when cohort_name starts with '.', per
	// the newest reference text; the default.
	LeadingPeriodReject = "reject"
	// LeadingPeriodRequire answers 400 when cohort_name does not start with
	// '.', per the older texts.
	LeadingPeriodRequire = "require"
	// LeadingPeriodIgnore accepts both forms.
	LeadingPeriodIgnore = "ignore"
)

// Defaults applied by [New] to zero fields, and set by [DefaultConfig].
const (
	// DefaultMaxBodyBytes is 128 KiB: "128KB" read as 128 × 1024 bytes.
	DefaultMaxBodyBytes = 131072
	// DefaultRateLimit is the documented 300 requests per minute.
	DefaultRateLimit = 300
	// DefaultRateWindow is the 60-second window of the rate limit.
	DefaultRateWindow = time.Minute
	// DefaultRequestLogSize is the number of request records kept.
	DefaultRequestLogSize = 100_000
	// DefaultRequestLogMaxMembers bounds the member uids kept across all
	// request records (about 100 MB for 36-byte uids).
	DefaultRequestLogMaxMembers = 2_000_000
)

// Config configures an [Emulator]. Start from [DefaultConfig] to get the
// documented API behaviour; fields left at zero mean what each field's doc
// says. Config is a plain value; [New] copies it.
type Config struct {
	// Credentials maps workspace ID (the Basic-auth username and MOE-APPKEY)
	// to API key (the Basic-auth password). At least one workspace, here or
	// in Workspaces, is required; a workspace ID may not be empty or
	// contain ':'.
	Credentials map[string]string

	// Workspaces are workspaces with their own settings (rate limit,
	// faults), served alongside Credentials; see [LoadWorkspacesDir] for a
	// directory in the worker's MOENGAGE_WORKSPACES_DIR layout. An ID in
	// both must have the same key.
	Workspaces map[string]Workspace

	// MaxBodyBytes is the 413 threshold: a body longer than this is rejected.
	// The emulator reads at most MaxBodyBytes+1 bytes. 0 means
	// DefaultMaxBodyBytes (131072). The 413 message stays the documented
	// "Payload can not exceed 128KB" whatever the value.
	MaxBodyBytes int

	// RateLimit is the number of requests per window per workspace. 0 means
	// unlimited (and no x-ratelimit-* headers); DefaultConfig sets
	// DefaultRateLimit (300).
	RateLimit int

	// RateWindow is the length of the fixed rate-limit window. Windows are
	// aligned to multiples of RateWindow since the Unix epoch. 0 means
	// DefaultRateWindow (60s).
	RateWindow time.Duration

	// CountRejected makes 4xx responses other than 429 (400, 403) given after
	// authentication count toward the rate limit. Requests rejected before
	// authentication (404, 405, 413, 415, 401) never count, nor do 429s.
	// DefaultConfig sets true: the contract does not say, and counting is the
	// stricter choice for a client.
	CountRejected bool

	// ResetHeader is the x-ratelimit-reset format: ResetDelta or ResetEpoch.
	// "" means ResetDelta.
	ResetHeader string

	// RetryAfter also sends Retry-After (whole seconds until the window
	// resets, at least 1) on 429 responses. The contract does not document
	// Retry-After for this endpoint, so the default is false.
	RetryAfter bool

	// LeadingPeriod is the policy for a cohort_name starting with '.':
	// LeadingPeriodReject, LeadingPeriodRequire or LeadingPeriodIgnore.
	// "" means LeadingPeriodReject.
	LeadingPeriod string

	// StrictMembers rejects member objects with keys other than "uid" and
	// cohort names containing '(' or ')' (contract §4 and §5 [INFER]). By
	// default unknown member keys are ignored and parentheses accepted.
	StrictMembers bool

	// Users is the initial user store: workspace ID -> uids that exist. nil
	// disables the store, so every uid exists. A non-nil map (even an empty
	// one) enables it: add_members then adds only known uids and silently
	// drops the rest, and a workspace missing from the map knows no uids.
	// The store can be changed at run time ([Emulator.SeedUsers]).
	Users map[string][]string

	// DiscardMembers keeps no segment membership: requests are
	// authenticated, validated, rate-limited, logged and answered as usual,
	// and each segment still records its name and request count, but
	// members are not stored (Members and the admin API return none; with
	// a user store, unknown uids are still counted as dropped). For load
	// tests that read only the request log, where the bookkeeping of
	// millions of members would compete with the system under test.
	DiscardMembers bool

	// Faults are the faults active from the start, and the faults
	// [Emulator.Reset] restores. The zero value injects nothing.
	Faults Faults

	// RequestLogSize is the number of request records kept; the oldest are
	// dropped first. 0 means DefaultRequestLogSize; negative disables the log.
	RequestLogSize int

	// RequestLogMaxMembers bounds the total number of member uids held by the
	// kept records; when exceeded, the oldest records are dropped. 0 means
	// DefaultRequestLogMaxMembers; negative means no bound.
	RequestLogMaxMembers int

	// Seed seeds the random source used for fault rates and latency jitter.
	// 0 picks a random seed. Request IDs are always random.
	Seed uint64

	// Logger receives one Debug line per request and Info lines for state
	// changes made through the admin API. nil discards logs.
	Logger *slog.Logger

	// Now is the clock used for rate windows, fault scripts and timestamps.
	// nil means time.Now. Latency faults always sleep on real timers.
	Now func() time.Time
}

// DefaultConfig returns a Config with the documented API behaviour: 131072
// byte bodies, 300 requests per 60-second window per workspace, rejected
// requests counted, delta reset header, no Retry-After and leading periods
// rejected. Credentials must still be added.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:  DefaultMaxBodyBytes,
		RateLimit:     DefaultRateLimit,
		RateWindow:    DefaultRateWindow,
		CountRejected: true,
		ResetHeader:   ResetDelta,
		LeadingPeriod: LeadingPeriodReject,
	}
}

// Validate reports the first problem with c, if any. Zero values are valid
// wherever a field's doc gives them a meaning.
func (c Config) Validate() error {
	if len(c.Credentials) == 0 && len(c.Workspaces) == 0 {
		return errors.New("emulator: config: at least one credential (workspace ID -> API key) is required")
	}
	for ws, key := range c.Credentials {
		if err := validateWorkspace(ws, Workspace{Key: key}); err != nil {
			return err
		}
	}
	for ws, w := range c.Workspaces {
		if err := validateWorkspace(ws, w); err != nil {
			return err
		}
		if key, ok := c.Credentials[ws]; ok && key != w.Key {
			return fmt.Errorf("emulator: config: workspace %q has different keys in Credentials and Workspaces", ws)
		}
	}
	if c.MaxBodyBytes < 0 {
		return fmt.Errorf("emulator: config: MaxBodyBytes %d is negative", c.MaxBodyBytes)
	}
	if c.RateLimit < 0 {
		return fmt.Errorf("emulator: config: RateLimit %d is negative (0 means unlimited)", c.RateLimit)
	}
	if c.RateWindow < 0 {
		return fmt.Errorf("emulator: config: RateWindow %s is negative", c.RateWindow)
	}
	switch c.ResetHeader {
	case "", ResetDelta, ResetEpoch:
	default:
		return fmt.Errorf("emulator: config: ResetHeader %q is not %q or %q", c.ResetHeader, ResetDelta, ResetEpoch)
	}
	switch c.LeadingPeriod {
	case "", LeadingPeriodReject, LeadingPeriodRequire, LeadingPeriodIgnore:
	default:
		return fmt.Errorf("emulator: config: LeadingPeriod %q is not %q, %q or %q",
			c.LeadingPeriod, LeadingPeriodReject, LeadingPeriodRequire, LeadingPeriodIgnore)
	}
	if err := c.Faults.Validate(); err != nil {
		return fmt.Errorf("emulator: config: %w", err)
	}
	return nil
}

// withDefaults returns c with zero fields that mean "default" filled in.
func (c Config) withDefaults() Config {
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.RateWindow == 0 {
		c.RateWindow = DefaultRateWindow
	}
	if c.ResetHeader == "" {
		c.ResetHeader = ResetDelta
	}
	if c.LeadingPeriod == "" {
		c.LeadingPeriod = LeadingPeriodReject
	}
	if c.RequestLogSize == 0 {
		c.RequestLogSize = DefaultRequestLogSize
	}
	if c.RequestLogMaxMembers == 0 {
		c.RequestLogMaxMembers = DefaultRequestLogMaxMembers
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}
