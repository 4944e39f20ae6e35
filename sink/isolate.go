package sink

import (
	"context"
	"slices"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// isolation is one isolating split: the evidence found so far, and the
// failed parts waiting for it.
type isolation struct {
	accepts      int      // parts accepted so far: evidence (b)
	lastAccepted string   // a member of the last part accepted (the canary)
	waiting      []failed // in member order, but for parts sent again
}

// failed is a part that got an isolable 4xx.
type failed struct {
	req  wire.Request
	serr *StatusError
	d    decision
	seq  int // isolation.accepts when it failed
}

// isolate handles a part that got an isolable 4xx within iso: it is split
// further, or, without evidence yet while an earlier failure already waits
// for some, set aside in iso. A single member waits in iso unless the
// error names a member field (then deliver rejected it already).
func (s *sender) isolate(ctx context.Context, f failed, iso *isolation) error {
	if len(f.req.UIDs) == 1 || iso.accepts == 0 && !f.d.member && len(iso.waiting) > 0 {
		f.seq = iso.accepts
		iso.waiting = append(iso.waiting, f)
		return nil
	}
	s.log().Debug("the API rejected the request; splitting to isolate the members at fault",
		"err", f.serr, "status", f.serr.Code, "members", len(f.req.UIDs))
	return s.deliverHalves(ctx, f.req, f.d.reason, iso)
}

// isolateRoot runs the isolating split of f, a request that got an
// isolable 4xx outside any split. It rejects the single members whose
// failure is bracketed by evidence, and returns the members left
// unresolved, in member order (none when every member was accepted or
// rejected).
//
// Bracketed: a part of the split was accepted before the member failed
// alone, and one after. The first keeps an API fault that ends during the
// split from blaming the members that failed before it ended; a member
// that failed before any acceptance is sent alone once more. The second
// keeps a fault that starts during the split from blaming the members
// that fail after it started: if no part was accepted after such a
// member, a canary (one member already accepted, sent alone again, which
// changes nothing) is sent; if the canary fails too, those members stay
// unresolved.
func (s *sender) isolateRoot(ctx context.Context, f failed) ([]string, error) {
	iso := &isolation{}
	if err := s.isolate(ctx, f, iso); err != nil {
		return nil, err
	}
	for iso.accepts > 0 {
		// A part set aside for want of evidence: split it now.
		if i := slices.IndexFunc(iso.waiting, func(w failed) bool { return len(w.req.UIDs) > 1 }); i >= 0 {
			w := iso.waiting[i]
			iso.waiting = slices.Delete(iso.waiting, i, i+1)
			if err := s.isolate(ctx, w, iso); err != nil {
				return nil, err
			}
			continue
		}
		// A member that failed before any acceptance: send it again.
		if i := slices.IndexFunc(iso.waiting, func(w failed) bool { return w.seq == 0 }); i >= 0 {
			w := iso.waiting[i]
			iso.waiting = slices.Delete(iso.waiting, i, i+1)
			if err := s.deliver(ctx, w.req, "invalid", iso); err != nil {
				return nil, err
			}
			continue
		}
		// Members with no acceptance since they failed: the canary.
		if slices.ContainsFunc(iso.waiting, func(w failed) bool { return w.seq == iso.accepts }) {
			canary := f.req
			canary.UIDs = []string{iso.lastAccepted}
			serr, _, err := s.post(ctx, canary, "invalid")
			if err != nil {
				return nil, err
			}
			if serr == nil {
				iso.accepts++
			}
		}
		break
	}
	var pending []string
	for _, w := range iso.waiting {
		if w.seq > 0 && w.seq < iso.accepts {
			s.log().Warn("member rejected: it fails alone while other parts of its batch are accepted",
				"err", w.serr, "status", w.serr.Code, "members", 1)
			s.reject(w.req.UIDs, w.serr.summary())
			continue
		}
		pending = append(pending, w.req.UIDs...)
	}
	s.inOrder(pending)
	return pending, nil
}

// inOrder sorts uids, members of the batch, in the batch's order.
func (s *sender) inOrder(uids []string) {
	if s.pos == nil {
		s.pos = make(map[string]int, len(s.req.UIDs))
		for i, u := range s.req.UIDs {
			s.pos[u] = i
		}
	}
	if len(uids) < 2 {
		return
	}
	slices.SortStableFunc(uids, func(a, b string) int { return s.pos[a] - s.pos[b] })
}
