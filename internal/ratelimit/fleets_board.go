package ratelimit

import (
	"context"
	"time"
)

// The board of Fleets: one record per replica, with an entry per active
// workspace, and the view each workspace's Fleet has of it (fleets.go says
// why the entries are enough).

// wsBoard is the board as workspace ws's Fleet sees it: every record
// projected to ws, and Publish keeping its record for this step's one.
type wsBoard struct {
	m  *Fleets
	ws string
}

func (b wsBoard) Records() ([]Record, time.Time) {
	recs, fresh := b.m.cfg.Board.Records()
	out := make([]Record, 0, len(recs))
	for _, r := range recs {
		out = append(out, project(r, b.ws))
	}
	return out, fresh
}

func (b wsBoard) Publish(_ context.Context, r Record) error {
	b.m.pmu.Lock()
	defer b.m.pmu.Unlock()
	if b.m.pending != nil {
		b.m.pending[b.ws] = r
	}
	return nil
}

// project is r as workspace ws's Fleet reads it: the replica's generation,
// assignment and times, and ws's entry (none: share 0, demand 0). A record
// of the version before (no V) lends nothing, shows its share fully used,
// and its pause holds every workspace (fleets.go, "Rolling upgrade").
func project(r Record, ws string) Record {
	p := Record{Replica: r.Replica, Generation: r.Generation, Until: r.Until, At: r.At,
		Assigned: r.Assigned, Total: r.Total, PrevGeneration: r.PrevGeneration,
		PrevAssigned: r.PrevAssigned, PrevTotal: r.PrevTotal}
	if r.V < RecordVersion {
		p.Share, p.Demand, p.PauseUntil = r.Share, r.Share, r.PauseUntil
		return p
	}
	if e, ok := r.Workspaces[ws]; ok {
		p.Share, p.Demand, p.Lent, p.PauseUntil = e.Share, e.Demand, e.Lent, e.PauseUntil
	}
	return p
}

// busyPeers returns the workspaces in which a peer is busy (its entry's
// demand is at least its share, which is positive): this replica must show
// its spare there.
func busyPeers(recs []Record, self string) map[string]bool {
	busy := map[string]bool{}
	for _, r := range recs {
		if r.Replica == self || r.V < RecordVersion {
			continue
		}
		for ws, e := range r.Workspaces {
			if e.Share > 0 && e.Demand >= e.Share {
				busy[ws] = true
			}
		}
	}
	return busy
}

// step makes a state for every workspace of the registry a peer is busy
// in, drops the retired states whose loans have ended, steps every
// workspace's Fleet (each lowers its own rate before anything is
// published) and publishes the one record.
func (m *Fleets) step(ctx context.Context, now time.Time) {
	recs, _ := m.cfg.Board.Records()
	busy := busyPeers(recs, m.cfg.Replica)
	m.mu.Lock()
	for ws := range busy {
		if _, in := m.budgetOf(ws); in {
			m.stateLocked(ws, now)
		}
	}
	m.reap(now)
	states, joined := m.live(), m.joined
	m.mu.Unlock()
	if !joined {
		return
	}
	m.pmu.Lock()
	m.pending = make(map[string]Record, len(states))
	m.pmu.Unlock()
	for _, st := range states {
		st.f.step(ctx, now)
	}
	m.pmu.Lock()
	pending := m.pending
	m.pending = nil
	m.pmu.Unlock()
	err := m.publish(ctx, m.combine(pending, busy, now))
	for _, st := range states {
		st.f.mu.Lock()
		st.f.unwritten = err != nil
		st.f.mu.Unlock()
	}
}

// reap drops the retired states whose loans have ended. Called with mu held.
func (m *Fleets) reap(now time.Time) {
	kept := m.retired[:0]
	for _, st := range m.retired {
		if now.Sub(st.gone) < m.cfg.Lease+m.cfg.Margin {
			kept = append(kept, st)
		}
	}
	clear(m.retired[len(kept):])
	m.retired = kept
}

// combine makes this step's record from what each workspace's Fleet
// published: its entries (those with something to tell, see fleets.go),
// Until and At the earliest of theirs, and the top for the version before.
func (m *Fleets) combine(pending map[string]Record, busy map[string]bool, now time.Time) Record {
	wall := now
	if m.cfg.Clock != nil {
		wall = m.cfg.Clock()
	}
	m.mu.Lock()
	rec := Record{Replica: m.cfg.Replica, V: RecordVersion, Generation: m.gen, Share: m.share, Demand: m.share,
		Assigned: m.assigned, Total: m.total, PrevGeneration: m.prev.Generation,
		PrevAssigned: m.prev.Assigned, PrevTotal: m.prev.Total,
		At: wall.UnixMilli(), Until: wall.Add(m.cfg.Lease).Truncate(time.Millisecond).UnixMilli()}
	m.mu.Unlock()
	for ws, r := range pending {
		rec.At, rec.Until = min(rec.At, r.At), min(rec.Until, r.Until)
		rec.PauseUntil = max(rec.PauseUntil, r.PauseUntil)
		if r.Demand > 0 || len(r.Lent) > 0 || r.PauseUntil > 0 || busy[ws] {
			if rec.Workspaces == nil {
				rec.Workspaces = make(map[string]WorkspaceEntry)
			}
			rec.Workspaces[ws] = WorkspaceEntry{Share: r.Share, Demand: r.Demand, Lent: r.Lent, PauseUntil: r.PauseUntil}
		}
	}
	return rec
}

// publish writes rec to the board.
func (m *Fleets) publish(ctx context.Context, rec Record) error {
	pctx, cancel := context.WithTimeout(ctx, m.cfg.Tick)
	defer cancel()
	err := m.cfg.Board.Publish(pctx, rec)
	if err != nil && ctx.Err() == nil {
		m.cfg.Logger.Debug("budget board: publish failed", "err", err)
	}
	return err
}
