package emulator

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// AdminClient drives the admin API of a running emulator, for tests that run
// the cmd/cohortsync-emulator binary out of process. The zero value is not
// usable: set BaseURL. It is safe for concurrent use.
type AdminClient struct {
	// BaseURL is the emulator's root URL, e.g. "http://127.0.0.1:8080".
	BaseURL string
	// HTTPClient is used for requests; nil means http.DefaultClient.
	HTTPClient *http.Client
}

// Healthz returns nil when the emulator answers its health check.
func (c *AdminClient) Healthz(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "healthz", nil, nil)
}

// Segments returns every segment, sorted by workspace, partner and cohort ID.
func (c *AdminClient) Segments(ctx context.Context) ([]Segment, error) {
	var resp SegmentsResponse
	if err := c.do(ctx, http.MethodGet, "segments", nil, &resp); err != nil {
		return nil, err
	}
	return resp.Segments, nil
}

// Members returns the sorted member uids of one segment, or nil when the
// segment does not exist.
func (c *AdminClient) Members(ctx context.Context, workspace, partner, cohortID string) ([]string, error) {
	q := url.Values{"workspace": {workspace}, "partner": {partner}, "cohort_id": {cohortID}}
	var resp SegmentsResponse
	if err := c.do(ctx, http.MethodGet, "segments?"+q.Encode(), nil, &resp); err != nil {
		return nil, err
	}
	if len(resp.Segments) == 0 {
		return nil, nil
	}
	return resp.Segments[0].Members, nil
}

// Requests returns the kept request records with Seq > since, oldest first.
func (c *AdminClient) Requests(ctx context.Context, since uint64) ([]RequestRecord, error) {
	var resp RequestsResponse
	if err := c.do(ctx, http.MethodGet, "requests?since="+strconv.FormatUint(since, 10), nil, &resp); err != nil {
		return nil, err
	}
	return resp.Requests, nil
}

// Faults returns the active faults.
func (c *AdminClient) Faults(ctx context.Context) (Faults, error) {
	var f Faults
	err := c.do(ctx, http.MethodGet, "faults", nil, &f)
	return f, err
}

// SetFaults replaces the active faults.
func (c *AdminClient) SetFaults(ctx context.Context, f Faults) error {
	return c.do(ctx, http.MethodPut, "faults", f, nil)
}

// Reset clears the emulator's state (see [Emulator.Reset]).
func (c *AdminClient) Reset(ctx context.Context) error {
	return c.do(ctx, http.MethodPost, "reset", nil, nil)
}

// SeedUsers adds uids to the user store of workspace (replacing its uids
// when replace is true) and enables the store.
func (c *AdminClient) SeedUsers(ctx context.Context, workspace string, uids []string, replace bool) error {
	return c.do(ctx, http.MethodPost, "users", UsersRequest{Workspace: workspace, UIDs: uids, Replace: replace}, nil)
}

// DisableUserStore disables the user store, so every uid exists again.
func (c *AdminClient) DisableUserStore(ctx context.Context) error {
	return c.do(ctx, http.MethodDelete, "users", nil, nil)
}

// do sends one admin request with an optional JSON body and decodes a 200
// answer into out, when out is not nil.
func (c *AdminClient) do(ctx context.Context, method, route string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("emulator admin: encode %s: %w", route, err)
		}
		body = bytes.NewReader(b)
	}
	u := strings.TrimSuffix(c.BaseURL, "/") + AdminPrefix + route
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return fmt.Errorf("emulator admin: %s %s: %w", method, route, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("emulator admin: %s %s: %w", method, route, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("emulator admin: %s %s: read body: %w", method, route, err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae adminError
		if json.Unmarshal(b, &ae) == nil && ae.Error != "" {
			return fmt.Errorf("emulator admin: %s %s: %s: %s", method, route, resp.Status, ae.Error)
		}
		return fmt.Errorf("emulator admin: %s %s: %s", method, route, resp.Status)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("emulator admin: %s %s: decode: %w", method, route, err)
		}
	}
	return nil
}
