package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/harness/localkafka"
)

// checkRun is one `cohortsync-worker check` run.
type checkRun struct {
	code int
	out  string
}

// line returns the report line of check (the first one), or "".
func (r checkRun) line(check string) string {
	for _, l := range strings.Split(r.out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[1] == check {
			return l
		}
	}
	return ""
}

// runCheck runs the worker binary's check subcommand with env (and nothing
// else from the test's environment).
func runCheck(t *testing.T, env map[string]string, args ...string) checkRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, workerBin, append([]string{"check"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GORACE=halt_on_error=1"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	start := time.Now()
	out, err := cmd.CombinedOutput()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("check: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "WARNING: DATA RACE") {
		t.Fatalf("check: data race:\n%s", out)
	}
	t.Logf("check %s: exit %d in %s\n%s", strings.Join(args, " "), code, time.Since(start).Round(time.Millisecond), out)
	return checkRun{code: code, out: string(out)}
}

// wantLine fails unless the report has check with status (ok, WARN, FAIL,
// skip) and a detail containing each of parts.
func wantLine(t *testing.T, r checkRun, check, status string, parts ...string) {
	t.Helper()
	l := r.line(check)
	if l == "" {
		t.Fatalf("no %s line in:\n%s", check, r.out)
	}
	if f := strings.Fields(l); f[0] != status {
		t.Errorf("%s: status %s, want %s: %s", check, f[0], status, l)
	}
	for _, p := range parts {
		if !strings.Contains(l, p) {
			t.Errorf("%s: %q missing in %s", check, p, l)
		}
	}
}

// TestCheck runs `cohortsync-worker check` against the real broker and the
// emulator: a good configuration passes every check (exit 0), and each
// failure mode (wrong key, unreachable or unresolvable API host, wrong base
// URL, missing topic, missing dead-letter topic, a misspelt variable, an
// invalid value)
// fails the one check it should with a reason (exit 1, or 2 for the
// configuration). Nothing the checks do changes anything: no segment, no
// group, no offset, no topic. The worker itself logs the misspelt variable
// at start, and logs durations as "300ms", not nanoseconds.
func TestCheck(t *testing.T) {
	topic, dlq := newTopic(t, 3)
	a := startAPI(t, nil)
	group := "g-" + topic
	env := func(kv ...string) map[string]string {
		e := workerEnv(a, topic, dlq, group)
		for i := 0; i+1 < len(kv); i += 2 {
			e[kv[i]] = kv[i+1]
		}
		return e
	}

	t.Run("good", func(t *testing.T) {
		before := len(a.Requests())
		r := runCheck(t, env())
		if r.code != 0 {
			t.Fatalf("exit %d, want 0", r.code)
		}
		// One request, with the configured key: never a deliberately wrong
		// one (issue 19 §3). The emulator authenticates first: 400.
		if reqs := a.Requests()[before:]; len(reqs) != 1 || reqs[0].Status != 400 {
			t.Errorf("the check sent %d requests (%+v), want one answered 400", len(reqs), reqs)
		}
		wantLine(t, r, "config", "ok", "every variable valid")
		wantLine(t, r, "kafka.brokers", "ok", "connected with plaintext, no SASL", brokerAddr)
		wantLine(t, r, "kafka.topic", "ok", topic+" exists: 3 partitions")
		wantLine(t, r, "kafka.dlq", "ok", dlq+" exists", "max.message.bytes")
		wantLine(t, r, "kafka.group", "ok", group+" does not exist yet", "joins no group and commits nothing")
		wantLine(t, r, "kafka.parking", "skip", "without MOENGAGE_WORKSPACES_DIR")
		wantLine(t, r, "kafka.acls", "ok", "READ on topic "+topic, "READ on group "+group, "WRITE on topic "+dlq)
		if strings.Contains(r.line("kafka.acls"), ".parked") {
			t.Errorf("kafka.acls asks for the parking topic without a registry: %s", r.line("kafka.acls"))
		}
		r = runCheck(t, env("MOENGAGE_WORKSPACES_DIR", t.TempDir()))
		wantLine(t, r, "kafka.parking", "ok", group+".parked does not exist yet; the worker creates it with 12 partitions",
			"replication factor 1 (PARKING_TOPIC_REPLICATION 3, capped at the 1 broker)", "the controller validated this creation")
		wantLine(t, r, "kafka.acls", "ok", "READ on topic "+topic, "READ on group "+group, "WRITE on topic "+dlq, "CREATE on topic "+group+".parked")
		wantLine(t, r, "api.connect", "ok")
		wantLine(t, r, "api.credentials", "WARN", "credentials not verified", "400")
		if strings.Contains(r.out, apiKey) {
			t.Error("the API key is in the report")
		}
	})

	t.Run("offline", func(t *testing.T) {
		before := len(a.Requests())
		r := runCheck(t, env("KAFKA_BROKERS", "127.0.0.1:1"), "--offline")
		if r.code != 0 || len(a.Requests()) != before {
			t.Fatalf("--offline: exit %d, %d API requests; want 0 and none", r.code, len(a.Requests())-before)
		}
		wantLine(t, r, "config", "ok", "every variable valid")
		wantLine(t, r, "kafka", "skip", "--offline")
		wantLine(t, r, "api", "skip", "--offline")
	})

	t.Run("json", func(t *testing.T) {
		r := runCheck(t, env(), "--output", "json")
		var rep struct {
			ExitCode int  `json:"exit_code"`
			OK       bool `json:"ok"`
			Checks   []struct{ Check, Status, Detail string }
		}
		if err := json.Unmarshal([]byte(r.out), &rep); err != nil {
			t.Fatalf("not one JSON object: %v\n%s", err, r.out)
		}
		if r.code != 0 || rep.ExitCode != 0 || !rep.OK || len(rep.Checks) < 8 {
			t.Fatalf("exit %d: %+v", r.code, rep)
		}
	})

	t.Run("wrong-key", func(t *testing.T) {
		r := runCheck(t, env("MOENGAGE_DATA_API_KEY", "not-the-key-0c9f"))
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "api.credentials", "FAIL", "credentials rejected", "401", "App Secret key mismatch", "MOENGAGE_DATA_API_KEY")
		wantLine(t, r, "kafka.topic", "ok")
		if strings.Contains(r.out, "not-the-key-0c9f") {
			t.Error("the key is in the report")
		}
	})

	t.Run("unreachable-api-host", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := ln.Addr().String()
		ln.Close()
		r := runCheck(t, env("MOENGAGE_BASE_URL", "http://"+closed), "--timeout=3s")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "api.connect", "FAIL", "cannot connect to "+closed, "connection refused")
		wantLine(t, r, "api.credentials", "skip")
	})

	t.Run("wrong-base-url", func(t *testing.T) {
		r := runCheck(t, env("MOENGAGE_BASE_URL", a.URL+"/api"))
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "api.credentials", "FAIL", "404", "is not the Cohort Sync API", "MOENGAGE_BASE_URL")
	})

	t.Run("unresolvable-api-host", func(t *testing.T) {
		// A host that cannot resolve (RFC 2606 .invalid), as a mistyped DC
		// host or proxy would be; the real DC hosts are not called from
		// tests.
		r := runCheck(t, env("MOENGAGE_BASE_URL", "https://api-07.moengage.invalid"), "--timeout=5s")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "api.dns", "FAIL", "cannot resolve api-07.moengage.invalid (from MOENGAGE_BASE_URL)")
		wantLine(t, r, "api.credentials", "skip")
	})

	t.Run("missing-topic", func(t *testing.T) {
		missing := topic + "-missing"
		r := runCheck(t, env("KAFKA_TOPIC", missing))
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.topic", "FAIL", missing+" (KAFKA_TOPIC) does not exist")
		wantLine(t, r, "kafka.dlq", "ok")
		// Asking about it did not create it (the broker auto-creates topics).
		r = runCheck(t, env("KAFKA_TOPIC", missing))
		wantLine(t, r, "kafka.topic", "FAIL", "does not exist")
	})

	t.Run("missing-dlq", func(t *testing.T) {
		r := runCheck(t, env("KAFKA_DLQ_TOPIC", dlq+"-missing"))
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.dlq", "FAIL", dlq+"-missing (KAFKA_DLQ_TOPIC) does not exist", "no dead letter can be written")
		wantLine(t, r, "kafka.topic", "ok")
	})

	t.Run("typo-variable", func(t *testing.T) {
		r := runCheck(t, env("MAX_INFLIGHT", "8"))
		if r.code != 2 {
			t.Fatalf("exit %d, want 2", r.code)
		}
		wantLine(t, r, "config.unknown", "FAIL", "MAX_INFLIGHT", "did you mean MAX_IN_FLIGHT?")
		wantLine(t, r, "kafka.topic", "ok") // the other checks still run
		r = runCheck(t, env("MAX_INFLIGHT", "8"), "--allow-unknown")
		if r.code != 0 {
			t.Fatalf("--allow-unknown: exit %d, want 0", r.code)
		}
		wantLine(t, r, "config.unknown", "WARN", "did you mean MAX_IN_FLIGHT?")
	})

	t.Run("invalid-value", func(t *testing.T) {
		r := runCheck(t, env("BATCH_WINDOW", "soon"))
		if r.code != 2 {
			t.Fatalf("exit %d, want 2", r.code)
		}
		wantLine(t, r, "config", "FAIL", `BATCH_WINDOW: invalid duration "soon"`)
		wantLine(t, r, "kafka", "skip")
	})

	t.Run("changed-nothing", func(t *testing.T) {
		if segs := a.Segments(); len(segs) != 0 {
			t.Errorf("the probes created segments: %+v", segs)
		}
		for _, rec := range a.Requests() {
			if rec.Status != 400 && rec.Status != 401 && rec.Status != 404 {
				t.Errorf("a probe got %d: %+v", rec.Status, rec)
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		client := &kafka.Client{Addr: kafka.TCP(brokerAddr), Timeout: 20 * time.Second}
		res, err := client.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err != nil || len(res.Groups) != 1 || (res.Groups[0].GroupState != "Dead" && res.Groups[0].GroupState != "") {
			t.Errorf("group %s after the checks: %+v %v", group, res, err)
		}
		md, err := client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic + "-missing", dlq + "-missing"}})
		if err != nil {
			t.Fatal(err)
		}
		for _, tp := range md.Topics {
			if tp.Error == nil {
				t.Errorf("topic %s exists after the checks", tp.Name)
			}
		}
		if _, committed, err := offsets(ctx, topic, group); err != nil || anyCommitted(committed) {
			t.Errorf("offsets committed for %s: %v %v", group, committed, err)
		}
	})

	t.Run("worker-warns-at-start", func(t *testing.T) {
		w := startWorker(t, "typo", env("MAX_INFLIGHT", "8"))
		var warned, human bool
		for _, l := range w.logs() {
			if l["msg"] == "unknown environment variable ignored" && l["var"] == "MAX_INFLIGHT" && l["did_you_mean"] == "MAX_IN_FLIGHT" && l["level"] == "WARN" {
				warned = true
			}
			if cfg, ok := l["config"].(map[string]any); ok && l["msg"] == "starting cohortsync-worker" {
				human = cfg["batch_window"] == "300ms" && cfg["shutdown_timeout"] == "20s" && cfg["retry_max_elapsed"] == "0s"
				if !human {
					t.Errorf("durations in the start-up line: %v", cfg)
				}
			}
		}
		if !warned {
			t.Errorf("no warning for MAX_INFLIGHT:\n%s", tail(w.out.String(), 20))
		}
		if !human {
			t.Errorf("no start-up line with human durations")
		}
		if err := w.stop(30 * time.Second); err != nil {
			t.Error(err)
		}
	})
}

func anyCommitted(committed map[int]int64) bool {
	for _, o := range committed {
		if o >= 0 {
			return true
		}
	}
	return false
}

// The SASL user of the ACL broker, and its password.
const (
	aclUser     = "carol"
	aclPassword = "C4rol-s3cret-6e2d8a1f"
)

// TestCheckACLs runs check over SASL against a broker with an authorizer
// (KRaft's StandardAuthorizer; the PLAINTEXT listener, used to set up, is a
// super user): with no ACLs the topics cannot even be described; with READ
// on the topic and the group but not WRITE on the dead-letter topic,
// kafka.acls names the missing grant; with every grant, check passes, over
// SASL_PLAINTEXT and SASL_SSL; a CA that did not sign the broker's
// certificate and a wrong password fail kafka.brokers with the reason.
func TestCheckACLs(t *testing.T) {
	if os.Getenv("KAFKA_BROKERS") != "" {
		t.Skip("KAFKA_BROKERS is set: this test starts its own broker with an authorizer")
	}
	jaas := `org.apache.kafka.common.security.plain.PlainLoginModule required ` +
		fmt.Sprintf(`user_%s="%s";`, aclUser, aclPassword)
	dir := t.TempDir()
	ca := newTestCA(t, "cohortsync-check-ca")
	chain, key := ca.issueServer(t, "localhost")
	caFile := writeTestFile(t, dir, "ca.pem", ca.pem)
	otherCA := writeTestFile(t, dir, "other-ca.pem", newTestCA(t, "cohortsync-check-other-ca").pem)
	extra := map[string]string{
		"sasl.enabled.mechanisms":                               "PLAIN",
		"authorizer.class.name":                                 "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
		"super.users":                                           "User:ANONYMOUS", // PLAINTEXT and CONTROLLER: setup and the broker itself
		"allow.everyone.if.no.acl.found":                        "false",
		"listener.name.sasl_ssl.ssl.keystore.type":              "PEM",
		"listener.name.sasl_ssl.ssl.keystore.certificate.chain": string(chain),
		"listener.name.sasl_ssl.ssl.keystore.key":               string(key),
	}
	for _, l := range []string{"sasl_plaintext", "sasl_ssl"} {
		extra["listener.name."+l+".sasl.enabled.mechanisms"] = "PLAIN"
		extra["listener.name."+l+".plain.sasl.jaas.config"] = jaas
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b, err := localkafka.Start(ctx, localkafka.Options{
		Partitions:  2,
		Listeners:   []localkafka.Listener{{Name: "SASL_PLAINTEXT"}, {Name: "SASL_SSL"}},
		ExtraConfig: extra,
		JVMArgs:     []string{"-Xms256m", "-Xmx512m"},
		Logger:      slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		t.Fatalf("starting the broker with an authorizer: %v", err)
	}
	t.Cleanup(func() { _ = b.Stop() })
	admin := &kafka.Client{Addr: kafka.TCP(b.Addr()), Timeout: 20 * time.Second}
	topic, dlq, group := "acl-in", "acl-in.dlq", "acl-group"
	if err := b.CreateTopic(ctx, topic, 2); err != nil {
		t.Fatal(err)
	}
	if err := b.CreateTopic(ctx, dlq, 1); err != nil {
		t.Fatal(err)
	}
	a := startAPI(t, nil)
	env := workerEnv(a, topic, dlq, group)
	env["KAFKA_BROKERS"] = b.ListenerAddr("SASL_PLAINTEXT")
	env["KAFKA_SASL_MECHANISM"] = "PLAIN"
	env["KAFKA_SASL_USERNAME"] = aclUser
	env["KAFKA_SASL_PASSWORD"] = aclPassword
	// A registry (empty: the default workspace's key is MOENGAGE_DATA_API_KEY):
	// with one, the worker parks, and the check asks for the parking topic's ACLs.
	env["MOENGAGE_WORKSPACES_DIR"] = t.TempDir()

	grant := func(resType kafka.ResourceType, name string, ops ...kafka.ACLOperationType) {
		t.Helper()
		var acls []kafka.ACLEntry
		for _, op := range ops {
			acls = append(acls, kafka.ACLEntry{ResourceType: resType, ResourceName: name, ResourcePatternType: kafka.PatternTypeLiteral,
				Principal: "User:" + aclUser, Host: "*", Operation: op, PermissionType: kafka.ACLPermissionTypeAllow})
		}
		res, err := admin.CreateACLs(ctx, &kafka.CreateACLsRequest{ACLs: acls})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range res.Errors {
			if e != nil {
				t.Fatal(e)
			}
		}
	}

	t.Run("no-acls", func(t *testing.T) {
		r := runCheck(t, env)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.brokers", "ok", "SASL PLAIN as "+aclUser)
		wantLine(t, r, "kafka.topic", "FAIL", "not authorized to describe")
		wantLine(t, r, "kafka.group", "FAIL", "not authorized")
	})

	grant(kafka.ResourceTypeTopic, topic, kafka.ACLOperationTypeRead, kafka.ACLOperationTypeDescribe)
	grant(kafka.ResourceTypeGroup, group, kafka.ACLOperationTypeRead)
	grant(kafka.ResourceTypeTopic, dlq, kafka.ACLOperationTypeDescribe)

	t.Run("no-dlq-write", func(t *testing.T) {
		var r checkRun
		waitFor(t, 30*time.Second, "the grants", func() bool {
			r = runCheck(t, env)
			return strings.HasPrefix(r.line("kafka.topic"), "ok")
		})
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.acls", "FAIL", "not granted: WRITE on topic "+dlq, "READ on topic "+topic, "READ on group "+group)
		wantLine(t, r, "kafka.dlq", "WARN", "max.message.bytes not verified") // the worker needs no DESCRIBE_CONFIGS
		wantLine(t, r, "kafka.parking", "FAIL", group+".parked", "not authorized to describe it")
	})

	grant(kafka.ResourceTypeTopic, dlq, kafka.ACLOperationTypeWrite)
	grant(kafka.ResourceTypeTopic, group+".parked", kafka.ACLOperationTypeDescribe)

	t.Run("no-parking-create", func(t *testing.T) {
		var r checkRun
		waitFor(t, 30*time.Second, "the DESCRIBE grant on the parking topic", func() bool {
			r = runCheck(t, env)
			return !strings.Contains(r.line("kafka.parking"), "not authorized to describe")
		})
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.parking", "FAIL", group+".parked does not exist yet", "the worker may not create it")
		wantLine(t, r, "kafka.acls", "FAIL", "not granted: CREATE on topic "+group+".parked")
	})

	grant(kafka.ResourceTypeTopic, group+".parked", kafka.ACLOperationTypeCreate, kafka.ACLOperationTypeRead, kafka.ACLOperationTypeWrite)

	t.Run("granted", func(t *testing.T) {
		var r checkRun
		waitFor(t, 30*time.Second, "the WRITE grant", func() bool {
			r = runCheck(t, env)
			return r.code == 0
		})
		wantLine(t, r, "kafka.acls", "ok", "granted: READ on topic "+topic, "READ on group "+group, "WRITE on topic "+dlq, "CREATE on topic "+group+".parked")
		wantLine(t, r, "kafka.parking", "ok", group+".parked does not exist yet", "the controller validated this creation")
		if strings.Contains(r.out, aclPassword) {
			t.Error("the SASL password is in the report")
		}
	})

	t.Run("sasl-ssl", func(t *testing.T) {
		e := maps.Clone(env)
		e["KAFKA_BROKERS"] = b.ListenerAddr("SASL_SSL")
		e["KAFKA_TLS_CA_FILE"] = caFile
		r := runCheck(t, e)
		if r.code != 0 {
			t.Fatalf("exit %d, want 0", r.code)
		}
		wantLine(t, r, "kafka.brokers", "ok", "connected with TLS (CA "+caFile+"), SASL PLAIN as "+aclUser, b.ListenerAddr("SASL_SSL"))
		wantLine(t, r, "kafka.acls", "ok", "WRITE on topic "+dlq)
	})

	t.Run("unknown-ca", func(t *testing.T) {
		e := maps.Clone(env)
		e["KAFKA_BROKERS"] = b.ListenerAddr("SASL_SSL")
		e["KAFKA_TLS_CA_FILE"] = otherCA
		r := runCheck(t, e, "--timeout=5s")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.brokers", "FAIL", "no bootstrap broker reachable with TLS", "certificate")
	})

	t.Run("wrong-password", func(t *testing.T) {
		e := maps.Clone(env)
		e["KAFKA_SASL_PASSWORD"] = "n0t-C4rol-7f1b"
		r := runCheck(t, e, "--timeout=5s")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1", r.code)
		}
		wantLine(t, r, "kafka.brokers", "FAIL", "no bootstrap broker reachable", "SASL")
		if strings.Contains(r.out, "n0t-C4rol-7f1b") {
			t.Error("the password is in the report")
		}
	})
}
