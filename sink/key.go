package sink

import (
	"encoding/base64"
	"strings"
)

// creds is one API key with everything derived from it. A Client swaps the
// whole value atomically when the key is re-read; it is never modified.
type creds struct {
	key     string
	hvAuth  []string // the Authorization header value
	secrets []string // scrubbed from server-sent strings
}

// newCreds builds the credentials for key. The secrets of prev (the key in
// use until now) stay scrubbed too: an answer to a request sent with the old
// key may still arrive.
func newCreds(workspace, key string, prev *creds) *creds {
	cred := base64.StdEncoding.EncodeToString([]byte(workspace + ":" + key))
	c := &creds{key: key, hvAuth: []string{"Basic " + cred}, secrets: []string{key, cred}}
	if prev != nil {
		c.secrets = append(c.secrets, prev.key, prev.secrets[1])
	}
	return c
}

// reloadKey re-reads the API key with Config.APIKeyFunc, after the API
// rejected the credentials (401, 403, an "Authentication ..." error type):
// Send calls it right after such an answer and again before each retry that
// follows one, so that a rotated secret (a Kubernetes Secret file, say)
// heals the fleet without a restart. It reports whether the key changed: a
// key that differs from the one in use replaces it (the Authorization
// header and the strings scrubbed from errors are rebuilt atomically) and is
// tried at once. A failure to read, or an empty key, is logged (the error's
// text is scrubbed of the known keys; APIKeyFunc's errors must not hold the
// key itself) and the current key is kept. APIKeyFunc may be called from
// several Sends, never concurrently.
func (c *Client) reloadKey() bool {
	if c.cfg.APIKeyFunc == nil || c.cfg.Targets != nil { // with Targets each attempt reads its workspace's key
		return false
	}
	c.keyMu.Lock() // one reader at a time: concurrent 401s re-read once each, in turn
	defer c.keyMu.Unlock()
	key, err := c.cfg.APIKeyFunc()
	cur := c.creds.Load()
	log := c.log.With("workspace", c.cfg.WorkspaceID) // the default workspace's key
	switch {
	case err != nil:
		log.Error("cannot re-read the API key; keeping the current one", "err", c.scrub(err.Error()))
		return false
	case key == "":
		log.Error("the re-read API key is empty; keeping the current one")
		return false
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		log.Error("the re-read API key contains control characters; keeping the current one")
		return false
	case key == cur.key:
		return false
	}
	c.creds.Store(newCreds(c.cfg.WorkspaceID, key, cur))
	log.Warn("the API key changed; the next attempts use the new one")
	return true
}
