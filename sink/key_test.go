package sink_test

// Key rotation: after a 401/403 the client re-reads the API key
// (Config.APIKeyFunc), so that a rotated secret heals the fleet.

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/sink"
)

const rotatedKey = "B-rotated-S3CRET-never-log-me"

// basic is the Authorization header value for key.
func basic(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(testWorkspace+":"+key))
}

// TestKeyRotationAfter401: the API accepts only key B; the client starts
// with key A and APIKeyFunc returns B once the API has rejected A: the next
// attempt, at once, carries B and is accepted. The new key is scrubbed from
// what the server echoes, like the first one.
func TestKeyRotationAfter401(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			rejectedA atomic.Bool
			reads     atomic.Int64
		)
		e := newEnv(t, "mem", func(n int, c call) reply {
			switch c.header.Get("Authorization") {
			case basic(rotatedKey):
				if n == 1 { // echoes the new key: must be scrubbed
					return fail(500, "Server Error", "bad key "+rotatedKey, "")
				}
				return ok()
			case basic(testKey):
				rejectedA.Store(true)
				return fail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", "")
			}
			return reply{status: 418}
		}, func(c *sink.Config) {
			c.APIKeyFunc = func() (string, error) {
				reads.Add(1)
				if rejectedA.Load() {
					return rotatedKey, nil
				}
				return testKey, nil
			}
		})
		start := time.Now()
		rej, err := e.client.Send(t.Context(), request(3))
		if err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		calls := e.api.got()
		if len(calls) != 3 || calls[1].header.Get("Authorization") != basic(rotatedKey) {
			t.Fatalf("%d requests; want 3, from the second on with key B", len(calls))
		}
		if d := time.Since(start); d >= sink.DefaultAuthRetryInterval {
			t.Fatalf("Send took %v: the new key waited AuthRetryInterval", d)
		}
		if reads.Load() == 0 {
			t.Fatal("APIKeyFunc never called")
		}
		if e.client.LineStopped() {
			t.Fatal("still stopped")
		}
		if logs := e.logs.String(); strings.Contains(logs, rotatedKey) || !strings.Contains(logs, "[REDACTED]") {
			t.Fatalf("the logs hold the new key, or do not show it scrubbed:\n%s", logs)
		}
	})
}

// TestKeyRotationDuringOutage: the key file is rotated while the client
// waits out AuthRetryInterval: the next retry re-reads it first.
func TestKeyRotationDuringOutage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var (
			mu  sync.Mutex
			key = testKey
		)
		e := newEnv(t, "mem", func(_ int, c call) reply {
			if c.header.Get("Authorization") == basic(rotatedKey) {
				return ok()
			}
			return fail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", "")
		}, func(c *sink.Config) {
			c.APIKeyFunc = func() (string, error) {
				mu.Lock()
				defer mu.Unlock()
				return key, nil
			}
		})
		res := e.goSend(t.Context(), request(2))
		time.Sleep(sink.DefaultAuthRetryInterval / 2)
		synctest.Wait()
		if !e.client.LineStopped() {
			t.Fatal("not stopped")
		}
		mu.Lock()
		key = rotatedKey
		mu.Unlock()
		r := <-res
		if r.err != nil || len(r.rej) != 0 {
			t.Fatalf("Send = %v, %v", r.rej, r.err)
		}
		if n := len(e.api.got()); n != 2 {
			t.Fatalf("%d requests, want 2", n)
		}
	})
}

// TestKeyReloadErrorKeepsKey: an APIKeyFunc error (or an empty key) is
// logged and the current key kept; sending stays stopped, retried slowly.
func TestKeyReloadErrorKeepsKey(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int64
		e := newEnv(t, "mem", func(n int, c call) reply {
			if n == 2 {
				if c.header.Get("Authorization") != basic(testKey) {
					t.Errorf("request 2 does not carry the original key")
				}
				return ok()
			}
			return fail(401, "Authentication required", "Authentication Header Required", "")
		}, func(c *sink.Config) {
			c.APIKeyFunc = func() (string, error) {
				if calls.Add(1)%2 == 1 {
					return "", errors.New("open /var/run/secrets/key: permission denied")
				}
				return "", nil
			}
		})
		start := time.Now()
		if rej, err := e.client.Send(t.Context(), request(2)); err != nil || len(rej) != 0 {
			t.Fatalf("Send = %v, %v", rej, err)
		}
		if d := time.Since(start); d != stopPauses(2) {
			t.Fatalf("Send took %v, want %v (two stopped-line pauses)", d, stopPauses(2))
		}
		if len(e.logs.lines(t, "cannot re-read the API key")) == 0 || len(e.logs.lines(t, "re-read API key is empty")) == 0 {
			t.Fatalf("reload failures not logged:\n%s", e.logs)
		}
	})
}

// TestKeyRotationFromSecretFile: APIKeyFunc wired to a Kubernetes-style
// secret file (config.SecretFileFunc): replacing the file (atomically, as
// the kubelet does) heals a client that the API rejects, without a restart;
// a missing file is logged by path, and the key kept.
func TestKeyRotationFromSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	write := func(v string) {
		tmp := filepath.Join(dir, "key.tmp")
		if err := os.WriteFile(tmp, []byte(v), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	e := newEnv(t, "http", func(_ int, c call) reply {
		if c.header.Get("Authorization") == basic(rotatedKey) {
			return ok()
		}
		return fail(401, "Authentication required", "App Secret key mismatch. Please login to the dashboard to verify key", "")
	}, func(c *sink.Config) { c.APIKeyFunc = config.SecretFileFunc(path) })
	res := e.goSend(e.ctx(), request(2))
	waitFor(t, "the line to stop", e.client.LineStopped)
	waitFor(t, "the missing file to be logged", func() bool {
		return len(e.logs.lines(t, "cannot re-read the API key")) > 0
	})
	write(rotatedKey + "\n")
	r := <-res
	if r.err != nil || len(r.rej) != 0 {
		t.Fatalf("Send = %v, %v", r.rej, r.err)
	}
	if e.client.LineStopped() {
		t.Fatal("still stopped")
	}
	logs := e.logs.String()
	if !strings.Contains(logs, path) || strings.Contains(logs, rotatedKey) {
		t.Fatalf("the logs should name the file and never the key:\n%s", logs)
	}
}
