package preflight

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// APIProbe is the body of the credential probe: a JSON object with none of
// the required fields. It names no action, partner or cohort, so whatever
// the API does with it, no segment can be created or changed; the contract
// documents the answer to a missing field as 400 MissingAttributeError
// (cohortsync-api.md §7.3).
const APIProbe = `{}`

// checkAPI checks DNS and TLS to the API's host and, as far as the contract
// allows, the credentials.
//
// The credentials probe POSTs APIProbe once, with the configured
// credentials: the only request a run sends to the API (outside the fleet's
// budget, so never more than one). 401/403 prove them refused; 2xx proves
// them accepted (and changed nothing). 400 cannot prove the key (the
// contract does not say whether the API authenticates before it validates a
// body): it is reported "credentials not verified", a warning, and the
// worker's first request (and the CohortsyncAuthFailing alert) does the
// rest. No request ever carries a key other than the configured one: a
// deliberately wrong key would be a failed login against the customer's
// workspace on every start.
//
// The probe goes through sink.NewTransport, the worker's own transport, so
// HTTPS_PROXY and NO_PROXY apply exactly as they do to the worker. When a
// proxy applies to the API, DNS and TLS to the API host are the proxy's to
// make: the direct checks are replaced by one naming the proxy, and the
// probe (through the proxy) shows whether the API answers.
func checkAPI(ctx context.Context, cfg config.Config, opts Options) []Result {
	u, err := url.Parse(cfg.MoEngageBaseURL)
	if err != nil { // Validate rules this out
		return []Result{{Check: "api", Status: Fail, Detail: "MOENGAGE_BASE_URL is not a URL"}}
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = map[string]string{"https": "443", "http": "80"}[u.Scheme]
	}
	source := "MOENGAGE_BASE_URL"
	if cfg.MoEngageBaseURL == "https://api-"+cfg.MoEngageDC+".moengage.com" {
		source = "MOENGAGE_DC=" + cfg.MoEngageDC
	}
	to := opts.Timeout
	transport := sink.NewTransport()
	defer transport.CloseIdleConnections()
	if proxy, err := proxyFor(transport, cfg.MoEngageBaseURL+sink.Path); err != nil || proxy != nil {
		res := Result{Check: "api.proxy", Status: OK, Detail: fmt.Sprintf("requests to %s go through the proxy %s (HTTPS_PROXY/HTTP_PROXY, NO_PROXY: as the worker's): DNS and TLS to the API are the proxy's",
			cfg.MoEngageBaseURL, redactURL(proxy))}
		if err != nil {
			res = Result{Check: "api.proxy", Status: Fail, Detail: "the proxy setting is invalid: " + oneLine(err.Error(), 200)}
			return []Result{res, {Check: "api.credentials", Status: Skip, Detail: "skipped: no usable proxy"}}
		}
		return []Result{res, checkCredentials(ctx, cfg, opts, transport)}
	}

	// DNS.
	var out []Result
	if ip := net.ParseIP(host); ip != nil {
		out = append(out, Result{Check: "api.dns", Status: OK, Detail: fmt.Sprintf("%s is an IP address (%s): nothing to resolve", host, source)})
	} else {
		dctx, cancel := context.WithTimeout(ctx, to)
		addrs, err := net.DefaultResolver.LookupHost(dctx, host)
		cancel()
		if err != nil {
			return append(out,
				Result{Check: "api.dns", Status: Fail, Detail: fmt.Sprintf("cannot resolve %s (from %s): %s", host, source, oneLine(err.Error(), 200))},
				Result{Check: "api.credentials", Status: Skip, Detail: "skipped: the API host does not resolve"})
		}
		out = append(out, Result{Check: "api.dns", Status: OK, Detail: fmt.Sprintf("%s (from %s) resolves to %s", host, source, strings.Join(addrs, ", "))})
	}

	// TCP, and TLS for https.
	addr := net.JoinHostPort(host, port)
	if u.Scheme == "https" {
		res := checkTLS(ctx, addr, host, to)
		out = append(out, res)
		if res.Status == Fail {
			return append(out, Result{Check: "api.credentials", Status: Skip, Detail: "skipped: no TLS connection to the API"})
		}
	} else {
		d := net.Dialer{Timeout: to}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return append(out,
				Result{Check: "api.connect", Status: Fail, Detail: fmt.Sprintf("cannot connect to %s: %s", addr, oneLine(err.Error(), 200))},
				Result{Check: "api.credentials", Status: Skip, Detail: "skipped: no connection to the API"})
		}
		c.Close()
		why := "a loopback host"
		if cfg.MoEngageAllowInsecure {
			why = "MOENGAGE_ALLOW_INSECURE=true"
		}
		out = append(out, Result{Check: "api.connect", Status: OK, Detail: fmt.Sprintf("TCP connection to %s (plain http, accepted for %s: no TLS to check)", addr, why)})
	}

	return append(out, checkCredentials(ctx, cfg, opts, transport))
}

// proxyFor returns the proxy transport would use for a POST to endpoint
// (nil: none).
func proxyFor(transport *http.Transport, endpoint string) (*url.URL, error) {
	if transport.Proxy == nil {
		return nil, nil
	}
	req, err := http.NewRequest(http.MethodPost, endpoint, nil)
	if err != nil {
		return nil, err
	}
	return transport.Proxy(req)
}

// redactURL shows a proxy URL without its password.
func redactURL(u *url.URL) string {
	if u == nil {
		return "(none)"
	}
	return u.Redacted()
}

// checkTLS makes a TLS connection as the worker's client does (system
// roots, TLS 1.2 or later, the host's name) and reports the version and
// the certificate.
func checkTLS(ctx context.Context, addr, host string, to time.Duration) Result {
	d := tls.Dialer{NetDialer: &net.Dialer{Timeout: to}, Config: &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}}
	tctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	c, err := d.DialContext(tctx, "tcp", addr)
	if err != nil {
		return Result{Check: "api.tls", Status: Fail, Detail: fmt.Sprintf("no TLS connection to %s: %s", addr, oneLine(err.Error(), 200))}
	}
	defer c.Close()
	st := c.(*tls.Conn).ConnectionState()
	leaf := st.PeerCertificates[0]
	left := time.Until(leaf.NotAfter)
	detail := fmt.Sprintf("%s to %s: certificate for %s issued by %s, valid until %s",
		tls.VersionName(st.Version), addr, host, leaf.Issuer.CommonName, leaf.NotAfter.UTC().Format(time.DateOnly))
	if left < 14*24*time.Hour {
		return Result{Check: "api.tls", Status: Warn, Detail: detail + fmt.Sprintf(" (expires in %s)", left.Round(time.Hour))}
	}
	return Result{Check: "api.tls", Status: OK, Detail: detail}
}

// probeAnswer is what a probe got: a status and the documented error
// envelope's type and message, when the body had them.
type probeAnswer struct {
	code         int
	typ, message string
	location     string
	transportErr error
	apiBody      bool // the body is a JSON object with a "status", as the API's are
}

func (a probeAnswer) String() string {
	if a.transportErr != nil {
		return oneLine(a.transportErr.Error(), 200)
	}
	s := fmt.Sprintf("%d %s", a.code, http.StatusText(a.code))
	if a.typ != "" || a.message != "" {
		s += fmt.Sprintf(" (%s: %s)", oneLine(a.typ, 60), oneLine(a.message, 120))
	}
	if a.location != "" {
		s += " to " + oneLine(a.location, 120)
	}
	return s
}

func probe(ctx context.Context, client *http.Client, endpoint, workspace, key, version string) probeAnswer {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader([]byte(APIProbe)))
	if err != nil {
		return probeAnswer{transportErr: err}
	}
	req.SetBasicAuth(workspace, key)
	req.Header.Set("MOE-APPKEY", workspace)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "cohortsync-worker-check/"+version)
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the detail already
		}
		return probeAnswer{transportErr: err}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<10))
	a := probeAnswer{code: resp.StatusCode, location: resp.Header.Get("Location")}
	var env struct {
		Status *string `json:"status"`
		Error  struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &env) == nil {
		a.typ, a.message = env.Error.Type, env.Error.Message
		a.apiBody = env.Status != nil
	}
	return a
}

func checkCredentials(ctx context.Context, cfg config.Config, opts Options, transport *http.Transport) Result {
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{
			Timeout:   opts.Timeout,
			Transport: transport, // the worker's (sink.NewTransport): its proxy, its TLS
			// A redirect means the base URL is not the API: report it, do
			// not follow it with the credentials.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	endpoint := cfg.MoEngageBaseURL + sink.Path
	ws := cfg.MoEngageWorkspaceID
	const what = "POST " + sink.Path + " with the body {}"
	got := probe(ctx, client, endpoint, ws, cfg.MoEngageDataAPIKey.Reveal(), opts.Version)
	res := func(st Status, format string, a ...any) Result {
		return Result{Check: "api.credentials", Status: st, Detail: fmt.Sprintf(format, a...)}
	}
	switch c := got.code; {
	case got.transportErr != nil:
		return res(Fail, "%s to %s failed: %s", what, cfg.MoEngageBaseURL, got)
	case c == http.StatusUnauthorized:
		if opts.keyFrom != "" { // a registry workspace (workspaces.go)
			return res(Fail, "credentials rejected: %s answered %s; check %s", what, got, opts.keyFrom)
		}
		return res(Fail, "credentials rejected: %s answered %s; check MOENGAGE_WORKSPACE_ID (%s) and MOENGAGE_DATA_API_KEY (the Data API key), and MOENGAGE_DC", what, got, ws)
	case c == http.StatusForbidden:
		return res(Fail, "refused: %s answered %s: the account is suspended or the key does not cover this API", what, got)
	case c == http.StatusNotFound || c == http.StatusMethodNotAllowed || (c >= 300 && c < 400):
		return res(Fail, "%s answered %s: %s is not the Cohort Sync API (check MOENGAGE_DC and MOENGAGE_BASE_URL)", what, got, cfg.MoEngageBaseURL)
	case c >= 200 && c < 300 && !got.apiBody:
		return res(Fail, "%s answered %s with a body that is not the Cohort Sync API's (a JSON object with a status): %s is a proxy or another service; the worker would stop sending (check MOENGAGE_DC and MOENGAGE_BASE_URL)", what, got, cfg.MoEngageBaseURL)
	case c >= 200 && c < 300:
		return res(OK, "credentials accepted: %s answered %s (that body names no segment, so nothing changed)", what, got)
	case c == http.StatusTooManyRequests:
		return res(Warn, "credentials not verified: %s answered %s (rate limited; the worker will wait for the window)", what, got)
	case c >= 500:
		return res(Warn, "credentials not verified: %s answered %s (the API is failing now; the worker retries such answers)", what, got)
	case c != http.StatusBadRequest:
		return res(Fail, "%s answered %s, which the contract does not give for this request: is a proxy rewriting requests?", what, got)
	}
	// 400: the body was refused, maybe before any authentication. Only a
	// request with another key could tell, and that would be a failed login.
	return res(Warn, "credentials not verified: %s answered %s: the API refused the body, and the contract offers no request that proves a key without changing a segment; "+
		"the worker's first request will (a rejected key stops its line: cohortsync_auth_failing, alert CohortsyncAuthFailing)", what, got)
}
