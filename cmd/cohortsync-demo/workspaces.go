package main

// The demo with several workspaces: a registry of workspaces in a
// temporary MOENGAGE_WORKSPACES_DIR, and the revocation of one workspace's
// key mid-run through the emulator's admin API.

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/config"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
	"github.com/cohortsync/cohortsync-worker/internal/parking/parkio"
)

// demoWorkspaces names n workspaces, gives each a key, and returns them as
// the emulator serves them. The first is the default workspace.
func (a *api) demoWorkspaces(n int) map[string]emulator.Workspace {
	names := []string{"ws-alpha", "ws-beta", "ws-gamma"}
	for i := len(names); i < n; i++ {
		names = append(names, fmt.Sprintf("ws-%02d", i+1))
	}
	a.workspaces, a.keys = names[:n], map[string]string{}
	a.workspace = a.workspaces[0]
	out := map[string]emulator.Workspace{}
	for _, ws := range a.workspaces {
		a.keys[ws] = "demo-key-of-" + ws
		out[ws] = emulator.Workspace{Key: a.keys[ws]}
	}
	return out
}

// useRegistry writes the workspaces' keys to a temporary registry
// directory and points cfg at it: MOENGAGE_WORKSPACES_DIR, the first
// workspace the default (MOENGAGE_WORKSPACE_ID, its key the registry's).
func (a *api) useRegistry(cfg *config.Config) error {
	dir, err := os.MkdirTemp("", "cohortsync-demo-workspaces-")
	if err != nil {
		return err
	}
	a.regDir = dir
	for _, ws := range a.workspaces {
		if err := a.writeKey(ws, a.keys[ws]); err != nil {
			return err
		}
	}
	cfg.MoEngageWorkspacesDir = dir
	cfg.MoEngageWorkspaceID = a.workspaces[0]
	cfg.MoEngageDataAPIKey = config.NewSecret("")
	return nil
}

// writeKey writes ws's key file in the registry, atomically (a rename).
func (a *api) writeKey(ws, key string) error {
	tmp := filepath.Join(a.regDir, "."+ws+".key.tmp")
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(a.regDir, ws+".key"))
}

func (a *api) removeRegistry() {
	if a.regDir != "" {
		_ = os.RemoveAll(a.regDir)
	}
}

// revocation is what revokeMidRun did and measured.
type revocation struct {
	victim                string
	revokedAt, restoredAt time.Time
	committed             int64         // source records committed by the group during the revocation
	lag                   int64         // the group's lag when the key was restored
	parked                int64         // the parking topic's lag then: records parked, not yet delivered
	maxInFlight           int           // MAX_IN_FLIGHT
	window                time.Duration // BATCH_WINDOW
}

// revokeMidRun waits until the last workspace (the victim) has had a
// request accepted, revokes its key (the emulator's admin API), produces
// rest over o.revokeFor meanwhile, then restores it as an operator would:
// a new key in the emulator (admin API) and in the victim's registry file,
// which the worker picks up within its registry poll.
func revokeMidRun(ctx context.Context, say func(string, ...any), a *api, w *kafka.Writer, rest []kafka.Message,
	cfg config.Config, o options) (*revocation, error) {
	r := &revocation{victim: a.workspaces[len(a.workspaces)-1], maxInFlight: cfg.MaxInFlight, window: cfg.BatchWindow}
	admin := &emulator.AdminClient{BaseURL: a.baseURL}
	err := rig.Poll(ctx, func() (bool, error) {
		return slices.ContainsFunc(a.emu.Requests(), func(q emulator.RequestRecord) bool {
			return q.Workspace == r.victim && q.Status == 200
		}), nil
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for %s's first accepted request: %w", r.victim, err)
	}
	kadmin := kafkaadmin.New(cfg.KafkaBrokers, nil)
	before, err := committed(ctx, kadmin, cfg)
	if err != nil {
		return nil, err
	}
	if err := admin.RevokeKey(ctx, r.victim); err != nil {
		return nil, err
	}
	r.revokedAt = time.Now()
	say("revoked %s's key (emulator admin API); producing the other %d events over %s", r.victim, len(rest), o.revokeFor)
	const steps = 8
	for i := range steps {
		if err := writeAll(ctx, w, rest[i*len(rest)/steps:(i+1)*len(rest)/steps]); err != nil {
			return nil, err
		}
		if err := sleep(ctx, o.revokeFor/steps); err != nil {
			return nil, err
		}
	}
	after, err := committed(ctx, kadmin, cfg)
	if err != nil {
		return nil, err
	}
	r.committed = after - before
	if r.lag, err = kadmin.GroupLag(ctx, cfg.KafkaTopics[0], cfg.KafkaGroupID); err != nil {
		return nil, err
	}
	if r.parked, err = kadmin.GroupLag(ctx, parkio.TopicName(cfg.KafkaGroupID), cfg.KafkaGroupID); err != nil {
		return nil, err
	}
	key := a.keys[r.victim] + "-rotated"
	if err := admin.AddWorkspace(ctx, r.victim, emulator.Workspace{Key: key}); err != nil {
		return nil, err
	}
	if err := a.writeKey(r.victim, key); err != nil {
		return nil, err
	}
	a.keys[r.victim], r.restoredAt = key, time.Now()
	say("restored %s with a new key (emulator admin API and %s.key in the registry)", r.victim, r.victim)
	return r, nil
}

// committed sums the group's committed offsets over the topic's partitions.
func committed(ctx context.Context, admin *kafkaadmin.Admin, cfg config.Config) (int64, error) {
	_, offs, err := admin.Offsets(ctx, cfg.KafkaTopics[0], cfg.KafkaGroupID)
	var sum int64
	for _, o := range offs {
		sum += max(o, 0)
	}
	return sum, err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wsFigures is what the API saw of one workspace.
type wsFigures struct {
	requests, ok, unauthorized int
	changes                    int           // members of accepted requests
	during                     int           // of them, during the revocation
	duringRequests             int           // accepted requests during the revocation
	longestGap                 time.Duration // the longest time without an acceptance during the revocation
	firstAfter                 time.Time     // the first acceptance after the restore
}

// apiFigures reads the emulator's request log per workspace.
func apiFigures(log []emulator.RequestRecord, rev *revocation) map[string]*wsFigures {
	out := map[string]*wsFigures{}
	last := map[string]time.Time{}
	for _, q := range log {
		if q.Path != emulator.APIPath {
			continue
		}
		f := out[q.Workspace]
		if f == nil {
			f = &wsFigures{}
			out[q.Workspace] = f
		}
		f.requests++
		switch {
		case q.Status == 401:
			f.unauthorized++
		case q.Status == 200:
			f.ok++
			f.changes += len(q.Members)
		}
		if q.Status != 200 || rev == nil {
			continue
		}
		switch t := q.Time; {
		case !t.Before(rev.revokedAt) && t.Before(rev.restoredAt):
			f.during += len(q.Members)
			f.duringRequests++
			f.longestGap = max(f.longestGap, t.Sub(cmpOr(last[q.Workspace], rev.revokedAt)))
			last[q.Workspace] = t
		case !t.Before(rev.restoredAt) && f.firstAfter.IsZero():
			f.firstAfter = t
		}
	}
	if rev != nil {
		for ws, f := range out {
			f.longestGap = max(f.longestGap, rev.restoredAt.Sub(cmpOr(last[ws], rev.revokedAt)))
		}
	}
	return out
}

func cmpOr(t, def time.Time) time.Time {
	if t.IsZero() {
		return def
	}
	return t
}

// printWorkspaces prints, per workspace, the fold check (every cohort's
// membership in the API against the fold of its events) and what the API
// saw of it, then what happened during the revocation; it returns the
// cohorts that differ.
func printWorkspaces(w io.Writer, a *api, want map[cohortKey]map[string]bool, got map[cohortKey][]string, rev *revocation) (bad int) {
	var figs map[string]*wsFigures
	if a.emu != nil {
		figs = apiFigures(a.emu.Requests(), rev)
	}
	fmt.Fprintf(w, "\n  %-10s %7s %9s %9s %-8s %8s %5s %5s %8s\n",
		"workspace", "cohorts", "expected", "actual", "fold", "requests", "2xx", "401", "changes")
	for _, ws := range a.workspaces {
		var cohorts, exp, act, wrong int
		for k, members := range want {
			if k.workspace != ws {
				continue
			}
			cohorts, exp, act = cohorts+1, exp+len(members), act+len(got[k])
			if !folds(members, got[k]) {
				wrong++
			}
		}
		mark := "ok"
		if wrong > 0 {
			mark = fmt.Sprintf("MISMATCH (%d cohorts)", wrong)
		}
		bad += wrong
		f := figs[ws]
		if f == nil {
			f = &wsFigures{}
		}
		fmt.Fprintf(w, "  %-10s %7d %9d %9d %-8s %8d %5d %5d %8d\n", ws, cohorts, exp, act, mark,
			f.requests, f.ok, f.unauthorized, f.changes)
	}
	if rev != nil && figs != nil {
		printRevocation(w, a, figs, rev)
	}
	return bad
}

// printRevocation says what each workspace got through while the victim's
// key was revoked, as measured: acceptances by the API, and the group's
// commits.
func printRevocation(w io.Writer, a *api, figs map[string]*wsFigures, rev *revocation) {
	window := rev.restoredAt.Sub(rev.revokedAt)
	fmt.Fprintf(w, "\n  %s's key was revoked for %s (then restored with a new key):\n", rev.victim, window.Round(100*time.Millisecond))
	for _, ws := range a.workspaces {
		f := figs[ws]
		if f == nil {
			f = &wsFigures{}
		}
		if ws == rev.victim {
			after := "never accepted after the restore"
			if !f.firstAfter.IsZero() {
				after = fmt.Sprintf("first accepted %s after the restore", f.firstAfter.Sub(rev.restoredAt).Round(10*time.Millisecond))
			}
			fmt.Fprintf(w, "    %-10s stopped: %d requests answered 401 in all, %d changes accepted meanwhile; %s\n",
				ws, f.unauthorized, f.during, after)
			continue
		}
		fmt.Fprintf(w, "    %-10s %d requests and %d changes accepted meanwhile; the longest time without an acceptance %s of %s\n",
			ws, f.duringRequests, f.during, f.longestGap.Round(10*time.Millisecond), window.Round(100*time.Millisecond))
	}
	fmt.Fprintf(w, "  The group committed %d source records meanwhile, and its lag was %d at the restore: %s's\n"+
		"  changes were parked (%d records waiting in the parking topic at the restore), so the partitions they\n"+
		"  share with the others went on committing; they were delivered, in log order, once %s took changes again.\n",
		rev.committed, rev.lag, rev.victim, rev.parked, rev.victim)
}
