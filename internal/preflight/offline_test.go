package preflight

import (
	"bufio"
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// listener counts the connections made to it.
func countingListener(t *testing.T) (addr string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), accepted
}

// TestOffline (issue 19 §2): `check --offline` validates the configuration
// and reads the files it names, and touches no network: neither the brokers
// nor the API see a connection. The full check does reach both.
func TestOffline(t *testing.T) {
	broker, brokerConns := countingListener(t)
	rc := &recorder{answer: func(string) (int, string) { return 401, secretMismatch }}
	api := httptest.NewServer(rc)
	defer api.Close()
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte(testKey+"\n"), 0o400); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"KAFKA_BROKERS": broker, "KAFKA_GROUP_ID": "g", "MOENGAGE_BASE_URL": api.URL,
		"MOENGAGE_WORKSPACE_ID": testWorkspace, "MOENGAGE_DATA_API_KEY_FILE": keyFile}
	getenv := func(k string) string { return env[k] }
	var out, errOut bytes.Buffer
	code := Main(t.Context(), []string{"--offline"}, getenv, nil, "test", &out, &errOut)
	if code != ExitOK || !strings.Contains(out.String(), "ok    config") || !strings.Contains(out.String(), "key read from "+keyFile) ||
		!strings.Contains(out.String(), "skip  kafka") || !strings.Contains(out.String(), "skip  api") {
		t.Fatalf("--offline: exit %d\n%s%s", code, out.String(), errOut.String())
	}
	time.Sleep(100 * time.Millisecond)
	if n, m := brokerConns.Load(), len(rc.bodies); n != 0 || m != 0 {
		t.Fatalf("--offline made %d broker connections and %d API requests, want none", n, m)
	}

	// An unreadable key file fails it: exit 2, still without network.
	env["MOENGAGE_DATA_API_KEY_FILE"] = filepath.Join(t.TempDir(), "missing")
	out.Reset()
	if code := Main(t.Context(), []string{"--offline"}, getenv, nil, "test", &out, &errOut); code != ExitBadConfig ||
		!strings.Contains(out.String(), "MOENGAGE_DATA_API_KEY_FILE") {
		t.Fatalf("--offline with a missing key file: exit %d\n%s", code, out.String())
	}
	env["MOENGAGE_DATA_API_KEY_FILE"] = keyFile

	// The full check does use the network (the premise of the counts above).
	out.Reset()
	Main(t.Context(), []string{"--timeout=2s"}, getenv, nil, "test", &out, &errOut)
	if brokerConns.Load() == 0 || len(rc.bodies) != 1 {
		t.Fatalf("the full check made %d broker connections and %d API requests, want some and 1:\n%s",
			brokerConns.Load(), len(rc.bodies), out.String())
	}
}

// TestProxyHonoured (issue 19 §2): with HTTPS_PROXY set, the API check
// reaches the API through the proxy, as the worker's transport does, and
// does not try DNS or TLS to the API host itself (which, behind an egress
// proxy, would fail while the worker works). net/http reads the proxy
// variables once per process, so the check runs in a child process.
func TestProxyHonoured(t *testing.T) {
	if os.Getenv("PREFLIGHT_PROXY_CHILD") == "1" {
		c := apiConfig(t, "https://api-01.moengage.com", testKey)
		res := checkAPI(t.Context(), c, Options{Timeout: 5 * time.Second})
		for _, r := range res {
			t.Logf("RESULT %s %s %s", r.Check, r.Status, r.Detail)
		}
		return
	}
	var mu sync.Mutex
	var connects []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		connects = append(connects, r.Method+" "+r.Host)
		mu.Unlock()
		http.Error(w, "no", http.StatusForbidden) // refuse the tunnel: nothing leaves this machine
	}))
	defer proxy.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyHonoured$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "PREFLIGHT_PROXY_CHILD=1", "HTTPS_PROXY="+proxy.URL, "NO_PROXY=", "no_proxy=", "https_proxy=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	var results []string
	for sc := bufio.NewScanner(bytes.NewReader(out)); sc.Scan(); {
		if _, r, ok := strings.Cut(sc.Text(), "RESULT "); ok {
			results = append(results, r)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(connects) != 1 || connects[0] != "CONNECT api-01.moengage.com:443" {
		t.Fatalf("the proxy saw %q, want one CONNECT to the API; results:\n%s", connects, strings.Join(results, "\n"))
	}
	joined := strings.Join(results, "\n")
	if strings.Contains(joined, "api.dns") || strings.Contains(joined, "api.tls") || !strings.Contains(joined, "api.proxy ok") {
		t.Fatalf("direct DNS/TLS checks despite the proxy, or no proxy line:\n%s", joined)
	}
}
