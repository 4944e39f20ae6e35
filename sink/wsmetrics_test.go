package sink_test

import (
	"testing"
	"testing/synctest"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/sink"
)

// TestWorkspaceMetricsAndLogs: requests, changes (sent, accepted,
// rejected) and retries are counted per workspace, and every log line
// about a request names its workspace, the default one's ID for a batch
// that names none.
func TestWorkspaceMetricsAndLogs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTargets("WS_A", "key-a", "WS_B", "key-b")
		e := newEnv(t, "mem", func(n int, c call) reply {
			switch {
			case c.header.Get("Moe-Appkey") == "WS_B" && n == 0:
				return fail(500, "Server Error", "An unexpected error", "")
			case c.req.CohortID == "bad":
				return fail(400, "MissingAttributeError", "cohort_name is not valid", "cohort_name")
			}
			return ok()
		}, func(c *sink.Config) { c.Targets = reg.lookup; c.WorkspaceID = "WS_A" })
		ctx := e.ctx()
		if _, err := e.client.Send(ctx, wsRequest("WS_B", "c1", event.Add, 3)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client.Send(ctx, wsRequest("", "c1", event.Add, 2)); err != nil { // the default: WS_A
			t.Fatal(err)
		}
		if rej, err := e.client.Send(ctx, wsRequest("", "bad", event.Add, 4)); err != nil || len(rej) != 4 {
			t.Fatalf("Send = %v, %v; want 4 rejections", rej, err)
		}
		for _, c := range []struct {
			name string
			got  float64
			want float64
		}{
			{"workspace_requests_total{WS_B,500}", testutil.ToFloat64(e.m.WorkspaceRequests.WithLabelValues("WS_B", "500")), 1},
			{"workspace_requests_total{WS_B,200}", testutil.ToFloat64(e.m.WorkspaceRequests.WithLabelValues("WS_B", "200")), 1},
			{"workspace_requests_total{WS_A,200}", testutil.ToFloat64(e.m.WorkspaceRequests.WithLabelValues("WS_A", "200")), 1},
			{"workspace_requests_total{WS_A,400}", testutil.ToFloat64(e.m.WorkspaceRequests.WithLabelValues("WS_A", "400")), 1},
			{"workspace_changes_total{WS_B,sent}", testutil.ToFloat64(e.m.WorkspaceChanges.WithLabelValues("WS_B", "sent")), 6},
			{"workspace_changes_total{WS_B,accepted}", testutil.ToFloat64(e.m.WorkspaceChanges.WithLabelValues("WS_B", "accepted")), 3},
			{"workspace_changes_total{WS_A,sent}", testutil.ToFloat64(e.m.WorkspaceChanges.WithLabelValues("WS_A", "sent")), 6},
			{"workspace_changes_total{WS_A,accepted}", testutil.ToFloat64(e.m.WorkspaceChanges.WithLabelValues("WS_A", "accepted")), 2},
			{"workspace_changes_total{WS_A,rejected}", testutil.ToFloat64(e.m.WorkspaceChanges.WithLabelValues("WS_A", "rejected")), 4},
			{"workspace_retries_total{WS_B,server_error}", testutil.ToFloat64(e.m.WorkspaceRetries.WithLabelValues("WS_B", "server_error")), 1},
			{"workspace_retries_total{WS_A,server_error}", testutil.ToFloat64(e.m.WorkspaceRetries.WithLabelValues("WS_A", "server_error")), 0},
		} {
			if c.got != c.want {
				t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
			}
		}
		for substr, ws := range map[string]string{"retrying": "WS_B", "every member is rejected": "WS_A"} {
			lines := e.logs.lines(t, substr)
			if len(lines) == 0 {
				t.Fatalf("no log line %q:\n%s", substr, e.logs)
			}
			for _, l := range lines {
				if l["workspace"] != ws {
					t.Errorf("log line %q has workspace %v, want %s", substr, l["workspace"], ws)
				}
			}
		}
	})
}

// TestWorkspaceLabelWithoutTargets: in the single-workspace configuration
// the changes count under WorkspaceID.
func TestWorkspaceLabelWithoutTargets(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newEnv(t, "mem", nil, nil)
		if _, err := e.client.Send(e.ctx(), request(2)); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(e.m.WorkspaceChanges.WithLabelValues(testWorkspace, "accepted")); got != 2 {
			t.Fatalf("workspace_changes_total{%s,accepted} = %v, want 2", testWorkspace, got)
		}
	})
}
