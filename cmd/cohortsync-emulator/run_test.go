package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

func noEnv(string) string { return "" }

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestParseOptions(t *testing.T) {
	dir := t.TempDir()
	credFile := filepath.Join(dir, "creds")
	if err := os.WriteFile(credFile, []byte("# comment\nws3:k3\nws4:k:4, ws5:k5 # trailing\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonFile := filepath.Join(dir, "creds.json")
	if err := os.WriteFile(jsonFile, []byte(`{"wsj":"kj"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	usersFile := filepath.Join(dir, "users.json")
	if err := os.WriteFile(usersFile, []byte(`{"ws1":["u1","u2"]}`), 0o600); err != nil {
		t.Fatal(err)
	}

	o, err := parseOptions([]string{"--credentials", "ws1:k1"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	def := emulator.DefaultConfig()
	if o.listen != "127.0.0.1:8080" || o.cfg.MaxBodyBytes != def.MaxBodyBytes || o.cfg.RateLimit != 300 ||
		o.cfg.RateWindow != time.Minute || !o.cfg.CountRejected || o.cfg.ResetHeader != "delta" || o.cfg.RetryAfter ||
		o.cfg.LeadingPeriod != "reject" || o.cfg.Users != nil || !slices.Equal(o.cfg.Faults.ErrorStatuses, []int{500}) {
		t.Errorf("defaults = %+v", o)
	}

	o, err = parseOptions([]string{
		"--listen=:0", "--credentials=ws1:k1,ws2:k2", "--credentials-file", credFile, "--users-file", usersFile,
		"--max-body-bytes=1000", "--rate-limit=0", "--rate-window=10s", "--count-rejected=false", "--reset-header=epoch",
		"--retry-after", "--leading-period=ignore", "--strict-members", "--error-rate=0.5", "--error-statuses=502,503",
		"--latency=5ms", "--latency-jitter=1ms", "--reset-rate=0.1", "--forbidden", "--forbidden-variant=blocked",
		"--outage", "--outage-reset", "--apply-before-error", "--seed=7", "--request-log-size=-1",
		"--bad-request", "--status-fail", "--reject-uids=u1, u2,,",
	}, envOf(map[string]string{"EMULATOR_RATE_LIMIT": "99", "EMULATOR_RATE_WINDOW": "2s", "EMULATOR_REJECT_UIDS": "env-uid"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"ws1": "k1", "ws2": "k2", "ws3": "k3", "ws4": "k:4", "ws5": "k5"}
	if len(o.cfg.Credentials) != len(want) {
		t.Errorf("credentials = %v", o.cfg.Credentials)
	}
	for k, v := range want {
		if o.cfg.Credentials[k] != v {
			t.Errorf("credentials[%s] = %q, want %q", k, o.cfg.Credentials[k], v)
		}
	}
	f := o.cfg.Faults
	if o.listen != ":0" || o.cfg.MaxBodyBytes != 1000 || o.cfg.RateLimit != 0 || o.cfg.RateWindow != 10*time.Second ||
		o.cfg.CountRejected || o.cfg.ResetHeader != "epoch" || !o.cfg.RetryAfter || o.cfg.LeadingPeriod != "ignore" ||
		!o.cfg.StrictMembers || o.cfg.Seed != 7 || o.cfg.RequestLogSize != -1 || !slices.Equal(o.cfg.Users["ws1"], []string{"u1", "u2"}) ||
		f.ErrorRate != 0.5 || !slices.Equal(f.ErrorStatuses, []int{502, 503}) || f.Latency != 5*time.Millisecond ||
		f.LatencyJitter != time.Millisecond || f.ResetRate != 0.1 || !f.Forbidden || f.ForbiddenVariant != "blocked" ||
		!f.Outage || !f.OutageReset || !f.ApplyBeforeError || !f.BadRequest || !f.StatusFail ||
		!slices.Equal(f.RejectUIDs, []string{"u1", "u2"}) {
		t.Errorf("flags (which win over the environment) = %+v", o)
	}

	// Environment variables fill flags that were not given.
	o, err = parseOptions(nil, envOf(map[string]string{
		"EMULATOR_CREDENTIALS_FILE": jsonFile, "EMULATOR_LISTEN": "127.0.0.1:0", "EMULATOR_RATE_LIMIT": "5",
		"EMULATOR_RETRY_AFTER": "true", "EMULATOR_LATENCY": "1s", "EMULATOR_STATUS_FAIL": "true",
		"EMULATOR_REJECT_UIDS": "a,b",
	}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.cfg.Credentials["wsj"] != "kj" || o.listen != "127.0.0.1:0" || o.cfg.RateLimit != 5 || !o.cfg.RetryAfter ||
		o.cfg.Faults.Latency != time.Second || !o.cfg.Faults.StatusFail || o.cfg.Faults.BadRequest ||
		!slices.Equal(o.cfg.Faults.RejectUIDs, []string{"a", "b"}) {
		t.Errorf("env options = %+v", o)
	}
	o, err = parseOptions(nil, envOf(map[string]string{"EMULATOR_CREDENTIALS": "a:b"}), io.Discard)
	if err != nil || o.cfg.Credentials["a"] != "b" {
		t.Errorf("EMULATOR_CREDENTIALS: %v %v", o.cfg.Credentials, err)
	}
}

func TestInvalidUsageExits2(t *testing.T) {
	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"unknown flag", []string{"--credentials=a:b", "--nope"}, nil, "flag provided but not defined: -nope"},
		{"bad int", []string{"--credentials=a:b", "--rate-limit=lots"}, nil, "rate-limit"},
		{"bad env", []string{"--credentials=a:b"}, map[string]string{"EMULATOR_RATE_WINDOW": "soon"}, "EMULATOR_RATE_WINDOW"},
		{"no credentials", nil, nil, "no credentials"},
		{"bad credentials", []string{"--credentials=a"}, nil, "workspace_id:api_key"},
		{"missing credentials file", []string{"--credentials-file=/nonexistent/x"}, nil, "--credentials-file"},
		{"bad reset header", []string{"--credentials=a:b", "--reset-header=rfc"}, nil, "ResetHeader"},
		{"bad leading period", []string{"--credentials=a:b", "--leading-period=sometimes"}, nil, "LeadingPeriod"},
		{"bad error rate", []string{"--credentials=a:b", "--error-rate=2"}, nil, "error rate"},
		{"bad error status", []string{"--credentials=a:b", "--error-statuses=418"}, nil, "418"},
		{"bad body size", []string{"--credentials=a:b", "--max-body-bytes=0"}, nil, "--max-body-bytes"},
		{"bad log level", []string{"--credentials=a:b", "--log-level=loud"}, nil, "--log-level"},
		{"positional", []string{"--credentials=a:b", "extra"}, nil, "unexpected argument"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := serve(t.Context(), tc.args, envOf(tc.env), &stdout, &stderr, nil)
			if code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			out := stderr.String()
			if strings.Count(out, "\n") != 1 || !strings.HasPrefix(out, "cohortsync-emulator: ") || !strings.Contains(out, tc.want) {
				t.Errorf("stderr = %q, want one line mentioning %q", out, tc.want)
			}
			if strings.Contains(out, "secret") {
				t.Error("stderr leaks a key")
			}
		})
	}
	var stderr bytes.Buffer
	serve(t.Context(), []string{"--credentials=ws:secret,broken"}, noEnv, io.Discard, &stderr, nil)
	if strings.Contains(stderr.String(), "secret") {
		t.Errorf("stderr leaks a key: %s", stderr.String())
	}
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := serve(t.Context(), []string{"--help"}, noEnv, &stdout, &stderr, nil); code != 0 {
		t.Errorf("exit code %d", code)
	}
	for _, want := range []string{"--listen", "EMULATOR_LISTEN", "--credentials", "--credentials-file", "--max-body-bytes",
		"--rate-limit", "--rate-window", "--reset-header", "--retry-after", "--leading-period", "--error-rate", "--latency",
		"--reset-rate", "--forbidden", "--outage", "EMULATOR_CREDENTIALS"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("help lacks %s", want)
		}
	}
}

func TestServeAndShutdown(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	addrFile := filepath.Join(t.TempDir(), "addr")
	addrc := make(chan net.Addr, 1)
	var stderr rig.Buffer
	done := make(chan int, 1)
	go func() {
		done <- serve(ctx, []string{"--listen=127.0.0.1:0", "--addr-file", addrFile, "--rate-limit=2"},
			envOf(map[string]string{"EMULATOR_CREDENTIALS": "ws1:key1"}), io.Discard, &stderr,
			func(a net.Addr) { addrc <- a })
	}()
	var addr string
	select {
	case a := <-addrc:
		addr = a.String()
	case code := <-done:
		t.Fatalf("exited with %d: %s", code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("server did not start")
	}
	if !strings.Contains(stderr.String(), "msg=listening addr="+addr) {
		t.Errorf("log = %q, want a line with listening addr=%s", stderr.String(), addr)
	}
	if b, err := os.ReadFile(addrFile); err != nil || strings.TrimSpace(string(b)) != addr {
		t.Errorf("addr file = %q, %v", b, err)
	}

	base := "http://" + addr
	admin := &emulator.AdminClient{BaseURL: base}
	if err := admin.Healthz(ctx); err != nil {
		t.Fatal(err)
	}
	body := `{"action":"add_members","partner":"p","parameters":{"cohort_name":"N","cohort_id":"c","members":[{"uid":"u1"}]}}`
	for i, want := range []int{200, 200, 429} {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+emulator.APIPath, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("ws1:key1")))
		req.Header.Set("MOE-APPKEY", "ws1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("request %d: status %d, want %d", i, resp.StatusCode, want)
		}
	}
	if members, err := admin.Members(ctx, "ws1", "p", "c"); err != nil || !slices.Equal(members, []string{"u1"}) {
		t.Errorf("members = %v, %v", members, err)
	}
	if err := admin.SetFaults(ctx, emulator.Faults{Forbidden: true}); err != nil {
		t.Fatal(err)
	}
	if f, err := admin.Faults(ctx); err != nil || !f.Forbidden {
		t.Errorf("faults = %+v, %v", f, err)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d after shutdown", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("server did not shut down")
	}
	if !strings.Contains(stderr.String(), "msg=stopped") {
		t.Errorf("log = %q", stderr.String())
	}
}

func TestListenFailureExits1(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var stderr bytes.Buffer
	code := serve(t.Context(), []string{"--credentials=a:b", "--listen", ln.Addr().String()}, noEnv, io.Discard, &stderr, nil)
	if code != 1 || !strings.Contains(stderr.String(), "listen on") {
		t.Errorf("code %d, stderr %q", code, stderr.String())
	}
}
