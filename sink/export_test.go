package sink

import (
	"net/http"
	"time"
)

// SetFenceClock replaces the clock the write fence of the default HTTP
// client reads, to play a process paused between the start of an attempt
// and its first write. Call it before the first Send.
func SetFenceClock(c *Client, now func() time.Time) { c.fence.now = now }

// DefaultTransport returns the transport of the default HTTP client (New
// made it: Config.HTTPClient was nil), for a test to trust its server's
// certificate.
func DefaultTransport(c *Client) *http.Transport {
	return c.cfg.HTTPClient.Transport.(*http.Transport)
}

// PermitMaxAge is permitMaxAge.
const PermitMaxAge = permitMaxAge
