package app

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// closedWithin reports whether the server closes conn within d: a read
// returns EOF (or a reset) rather than timing out on our side.
func closedWithin(t *testing.T, conn net.Conn, r *bufio.Reader, d time.Duration) bool {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(d))
	for {
		_, err := r.ReadByte()
		if err == nil {
			continue // the rest of a response, or a 408 before the close
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		return true // io.EOF, ECONNRESET: the server hung up
	}
}

func startTestHTTP(t *testing.T, to httpTimeouts) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	metrics.New(reg)
	addr := make(chan string, 1)
	srv, err := serveHTTP("127.0.0.1:0", reg, testProbes(nil, time.Minute),
		slog.New(slog.NewTextHandler(io.Discard, nil)), func(a string) { addr <- a }, to)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return <-addr
}

// TestHTTPServerClosesSlowClients: the endpoints do not let a client hold
// a connection forever (issue 10 §5): a keep-alive connection left idle after
// a request, a connection that never sends a request, and one that trickles
// its headers a byte at a time are all closed by the server.
func TestHTTPServerClosesSlowClients(t *testing.T) {
	to := httpTimeouts{ReadHeader: 300 * time.Millisecond, Read: 500 * time.Millisecond,
		Write: time.Second, Idle: 300 * time.Millisecond}
	addr := startTestHTTP(t, to)
	checkClosesSlowClients(t, addr)
}

func checkClosesSlowClients(t *testing.T, addr string) {
	const bound = 3 * time.Second // well above every timeout, well below "forever"

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Close {
			t.Fatalf("status %d, close %v: want a kept-alive 200", resp.StatusCode, resp.Close)
		}
		start := time.Now()
		if !closedWithin(t, conn, r, bound) {
			t.Fatalf("an idle keep-alive connection was still open after %v", bound)
		}
		t.Logf("idle connection closed after %v", time.Since(start).Round(time.Millisecond))
	})

	t.Run("no request", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if !closedWithin(t, conn, bufio.NewReader(conn), bound) {
			t.Fatalf("a connection that sent nothing was still open after %v", bound)
		}
	})

	t.Run("trickled headers", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		done := make(chan struct{})
		go func() { // one byte every 50ms: each read is quick, the request never ends
			defer close(done)
			for _, b := range []byte("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("a", 200)) {
				if _, err := conn.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		}()
		if !closedWithin(t, conn, bufio.NewReader(conn), bound) {
			t.Fatalf("a connection trickling its headers was still open after %v", bound)
		}
		conn.Close()
		<-done
	})

	t.Run("normal scrape still works", func(t *testing.T) {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), "cohortsync_") {
			t.Fatalf("/metrics: %d %.200s", resp.StatusCode, b)
		}
	})
}

// TestHTTPDefaultTimeouts: every timeout of the real server is set, and the
// write timeout leaves /metrics room.
func TestHTTPDefaultTimeouts(t *testing.T) {
	to := defaultHTTPTimeouts
	if to.ReadHeader <= 0 || to.Read < to.ReadHeader || to.Write < 10*time.Second || to.Idle <= 0 {
		t.Fatalf("default HTTP timeouts %+v: each must be set, Read >= ReadHeader, Write >= 10s", to)
	}
}
