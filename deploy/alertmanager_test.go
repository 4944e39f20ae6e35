package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

// alertmanagerBinary is Alertmanager's binary: $COHORTSYNC_ALERTMANAGER, or
// Debian's prometheus-alertmanager (scripts/lint-deploy installs it and sets
// COHORTSYNC_ALERTMANAGER, so that there the test cannot skip).
func alertmanagerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("COHORTSYNC_ALERTMANAGER"); p != "" {
		return p
	}
	for _, name := range []string{"prometheus-alertmanager", "alertmanager"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no Alertmanager binary (Debian's prometheus-alertmanager; scripts/lint-deploy installs it)")
	return ""
}

func freeLoopbackPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestInhibitionRealAlertmanager: the premise of TestInhibitionPagesOnce
// (how Alertmanager applies inhibit_rules), checked against a real
// Alertmanager running alertmanager.yaml on loopback: given the alerts the
// revoked-key case fires and another deployment's, the alerts it does not
// mark inhibited are CohortsyncAuthFailing of prod and staging's own.
func TestInhibitionRealAlertmanager(t *testing.T) {
	bin := alertmanagerBinary(t)
	addr := freeLoopbackPort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin,
		"--config.file="+alertmanagerFile,
		"--storage.path="+t.TempDir(),
		"--web.listen-address="+addr,
		"--cluster.listen-address=")
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("alertmanager:\n%s", logs.String())
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(base + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager not ready on %s: %v", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	firing := append(revokedKeyAlerts(t), otherDeploymentAlert)
	type postable struct {
		Labels   map[string]string `json:"labels"`
		StartsAt time.Time         `json:"startsAt"`
	}
	var post []postable
	for _, l := range firing {
		post = append(post, postable{Labels: l, StartsAt: time.Now().Add(-time.Minute)})
	}
	body, _ := json.Marshal(post)
	resp, err := http.Post(base+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("POST /api/v2/alerts: %s", resp.Status)
	}

	// Alertmanager marks inhibitions asynchronously (its inhibitor reads
	// the posted alerts from a subscription), so an answer right after the
	// POST may show none yet: ask again until the marks match or 10 s pass.
	var pages, muted []string
	for poll := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		pages, muted = alertPages(t, base, len(firing))
		if slices.Equal(pages, revokedKeyPages) || time.Now().After(poll) {
			break
		}
	}
	if !slices.Equal(pages, revokedKeyPages) {
		t.Errorf("a revoked key notifies %v, want %v (inhibited: %v)", pages, revokedKeyPages, muted)
	}
	t.Logf("inhibited: %v", muted)
}

// alertPages reads the alerts Alertmanager holds (want of them) and splits
// their names into those it would notify and those it marks inhibited.
func alertPages(t *testing.T, base string, want int) (pages, muted []string) {
	t.Helper()
	type gettable struct {
		Labels map[string]string `json:"labels"`
		Status struct {
			State       string   `json:"state"`
			InhibitedBy []string `json:"inhibitedBy"`
		} `json:"status"`
	}
	var got []gettable
	resp, err := http.Get(base + "/api/v2/alerts")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != want {
		t.Fatalf("alertmanager holds %d alerts, %d were posted", len(got), want)
	}
	for _, a := range got {
		name := fmt.Sprintf("%s{%s/%s}", a.Labels["alertname"], a.Labels["namespace"], a.Labels["job"])
		if len(a.Status.InhibitedBy) == 0 {
			pages = append(pages, name)
		} else {
			muted = append(muted, name)
		}
	}
	slices.Sort(pages)
	return pages, muted
}
