package emulator

import (
	"bytes"
	"sync"

	"github.com/cohortsync/cohortsync-worker/internal/jsonstr"
)

// parseFast decodes a valid body in one pass over its bytes, without
// reflection and with a handful of allocations. It handles what the worker
// sends (wire.AppendBody: compact JSON, every escape AppendQuoted writes)
// and more: keys in any order, whitespace between tokens, any string
// escape. It gives up, returning ok false, on anything else: an unknown,
// duplicated or escaped key, a value that is not of the expected type (null
// included), a member with keys other than "uid", invalid JSON or UTF-8, and
// any value the shared checks reject, such as an empty field or a forbidden
// cohort_name. [validator.parse] then hands the body to parseSlow, which
// tells what is wrong; parseFast never decides an error.
//
// When ok is true, req is exactly what parseSlow returns for body, with a
// nil error; FuzzParseFast checks this. The member uids share one string,
// which holds the uids only; the other fields have their own.
func (v validator) parseFast(body []byte) (req cohortRequest, ok bool) {
	s := fastScratchPool.Get().(*fastScratch)
	defer s.release()
	p := fastParser{b: body, s: s}
	if !p.request(&req) {
		return cohortRequest{}, false
	}
	// The value checks of parseSlow, in its order. Members are known to be
	// objects whose only key is a non-empty uid, so strict mode has nothing
	// to reject.
	if checkAction(req.Action) != nil ||
		checkNonEmpty("partner", req.Partner) != nil ||
		checkNonEmpty("cohort_name", req.CohortName) != nil || v.checkName(req.CohortName) != nil ||
		checkNonEmpty("cohort_id", req.CohortID) != nil ||
		checkMemberCount(len(s.ends)) != nil {
		return cohortRequest{}, false
	}
	req.Members = s.members()
	return req, true
}

// fastScratch is the reusable memory of one parseFast call.
type fastScratch struct {
	uids []byte // the decoded uids, back to back
	ends []int  // ends[i] is the end of member i's uid in uids
	tmp  []byte // decoding buffer for an escaped non-member string
}

var fastScratchPool = sync.Pool{New: func() any { return new(fastScratch) }}

// maxPooledScratch bounds the buffers kept for reuse, so that one huge body
// (with a large Config.MaxBodyBytes) does not pin its memory.
const maxPooledScratch = 1 << 20

func (s *fastScratch) release() {
	if cap(s.uids) > maxPooledScratch || cap(s.ends) > maxPooledScratch/8 || cap(s.tmp) > maxPooledScratch {
		return
	}
	s.uids, s.ends, s.tmp = s.uids[:0], s.ends[:0], s.tmp[:0]
	fastScratchPool.Put(s)
}

// members returns the uids as strings. They are substrings of one string
// holding exactly the uid bytes, which costs two allocations in all and
// keeps no JSON syntax alive.
func (s *fastScratch) members() []string {
	all := string(s.uids)
	out := make([]string, len(s.ends))
	start := 0
	for i, end := range s.ends {
		out[i] = all[start:end]
		start = end
	}
	return out
}

// fastParser is a cursor over a body for parseFast. Its methods return
// false as soon as the input leaves the accepted subset.
type fastParser struct {
	b []byte
	i int // the next byte to read
	s *fastScratch
}

// Keys of the top-level and parameters objects, as bits of a set.
const (
	keyAction uint8 = 1 << iota
	keyPartner
	keyParameters
	keyCohortName
	keyCohortID
	keyCohortDescription
	keyMembers
)

// request reads the whole body: one object, with nothing but whitespace
// around it.
func (p *fastParser) request(req *cohortRequest) bool {
	p.ws()
	if !p.eat('{') {
		return false
	}
	var seen uint8
	for {
		key, ok := p.key()
		if !ok {
			return false
		}
		var bit uint8
		switch string(key) {
		case "action":
			bit = keyAction
			ok = p.action(req)
		case "partner":
			bit = keyPartner
			req.Partner, ok = p.stringValue()
		case "parameters":
			bit = keyParameters
			ok = p.parameters(req, &seen)
		default:
			return false
		}
		if !ok || seen&bit != 0 {
			return false
		}
		seen |= bit
		more, ok := p.next('}')
		if !ok {
			return false
		}
		if !more {
			break
		}
	}
	const required = keyAction | keyPartner | keyParameters | keyCohortName | keyCohortID | keyMembers
	p.ws()
	return p.i == len(p.b) && seen&required == required
}

// action reads the action value, using the constants for its two valid
// values (which need no allocation) and giving up on any other.
func (p *fastParser) action(req *cohortRequest) bool {
	raw, escaped, ok := p.str()
	if !ok {
		return false
	}
	if escaped {
		p.s.tmp = jsonstr.AppendUnescaped(p.s.tmp[:0], raw)
		raw = p.s.tmp
	}
	switch string(raw) {
	case ActionAdd:
		req.Action = ActionAdd
	case ActionRemove:
		req.Action = ActionRemove
	default:
		return false
	}
	return true
}

// parameters reads the parameters object, recording its keys in seen.
func (p *fastParser) parameters(req *cohortRequest, seen *uint8) bool {
	if !p.eat('{') {
		return false
	}
	for {
		key, ok := p.key()
		if !ok {
			return false
		}
		var bit uint8
		switch string(key) {
		case "cohort_name":
			bit = keyCohortName
			req.CohortName, ok = p.stringValue()
		case "cohort_id":
			bit = keyCohortID
			req.CohortID, ok = p.stringValue()
		case "cohort_description":
			bit = keyCohortDescription
			req.Description, ok = p.stringValue()
			req.HasDescription = true
		case "members":
			bit = keyMembers
			ok = p.members()
		default:
			return false
		}
		if !ok || *seen&bit != 0 {
			return false
		}
		*seen |= bit
		more, ok := p.next('}')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

// members reads the members array into p.s. Each member must be an object
// whose only key is "uid", with a non-empty string value.
func (p *fastParser) members() bool {
	if !p.eat('[') {
		return false
	}
	for {
		p.ws()
		if !p.member() {
			return false
		}
		more, ok := p.next(']')
		if !ok {
			return false
		}
		if !more {
			return true
		}
	}
}

var (
	uidKey        = []byte(`"uid"`)
	compactMember = []byte(`{"uid":"`) // how AppendBody starts a member
)

func (p *fastParser) member() bool {
	if bytes.HasPrefix(p.b[p.i:], compactMember) {
		p.i += len(compactMember) - 1 // at the opening quote of the uid
	} else {
		if !p.eat('{') {
			return false
		}
		p.ws()
		if !bytes.HasPrefix(p.b[p.i:], uidKey) {
			return false
		}
		p.i += len(uidKey)
		p.ws()
		if !p.eat(':') {
			return false
		}
		p.ws()
	}
	raw, escaped, ok := p.str()
	// An empty uid is rejected by parseSlow; every escape decodes to at
	// least one byte, so the raw length tells.
	if !ok || len(raw) == 0 {
		return false
	}
	s := p.s
	if escaped {
		s.uids = jsonstr.AppendUnescaped(s.uids, raw)
	} else {
		s.uids = append(s.uids, raw...)
	}
	s.ends = append(s.ends, len(s.uids))
	p.ws()
	return p.eat('}')
}

// key reads an object key and the colon after it, with the whitespace
// around them. Keys with escapes are left to parseSlow.
func (p *fastParser) key() ([]byte, bool) {
	p.ws()
	raw, escaped, ok := p.str()
	if !ok || escaped {
		return nil, false
	}
	p.ws()
	if !p.eat(':') {
		return nil, false
	}
	p.ws()
	return raw, true
}

// next reads the separator after an object member or array element: a
// comma (more follows) or the closing byte end.
func (p *fastParser) next(end byte) (more, ok bool) {
	p.ws()
	switch {
	case p.eat(','):
		return true, true
	case p.eat(end):
		return false, true
	}
	return false, false
}

// stringValue reads a string value into a string of its own.
func (p *fastParser) stringValue() (string, bool) {
	raw, escaped, ok := p.str()
	if !ok {
		return "", false
	}
	if escaped {
		p.s.tmp = jsonstr.AppendUnescaped(p.s.tmp[:0], raw)
		raw = p.s.tmp
	}
	return string(raw), true
}

// str reads a string token and returns its raw contents (between the
// quotes, escapes not decoded) and whether it has escapes. It accepts
// exactly the strings encoding/json accepts (valid escapes, no control
// characters) and rejects invalid UTF-8, as parseSlow does for the whole
// body (see [jsonstr.Scan]).
func (p *fastParser) str() (raw []byte, escaped, ok bool) {
	b, i := p.b, p.i
	if i >= len(b) || b[i] != '"' {
		return nil, false, false
	}
	n, escaped, ok := jsonstr.Scan(b[i+1:])
	if !ok {
		return nil, false, false
	}
	p.i = i + 1 + n + 1
	return b[i+1 : i+1+n], escaped, true
}

func (p *fastParser) ws() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// eat consumes c if it is the next byte.
func (p *fastParser) eat(c byte) bool {
	if p.i < len(p.b) && p.b[p.i] == c {
		p.i++
		return true
	}
	return false
}
