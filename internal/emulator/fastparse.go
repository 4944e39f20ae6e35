package emulator

import (
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/segmentio/encoding/json"
)

// parseFast decodes a valid body with github.com/segmentio/encoding/json, a
// drop-in replacement of encoding/json that can leave the strings in the
// body's memory (the request copies them), so that a full body costs a
// handful of allocations. It takes what the worker sends (wire.AppendBody)
// and more: keys in any order, whitespace between tokens, any string
// escape, duplicate keys. It gives up, returning ok false, on anything
// else: an unknown key or one in another case, a value that is not of the
// expected type, null, a member with keys other than "uid", invalid JSON or
// UTF-8, and any value the shared checks reject, such as an empty field or
// a forbidden cohort_name. [validator.parse] then hands the body to
// parseSlow, which tells what is wrong; parseFast never decides an error.
//
// When ok is true, req is exactly what parseSlow returns for body, with a
// nil error; FuzzParseFast checks this. The member uids share one string,
// which holds the uids only; the other fields have their own.
func (v validator) parseFast(body []byte) (req cohortRequest, ok bool) {
	if !utf8.Valid(body) {
		return cohortRequest{}, false // the library would take it as U+FFFD
	}
	s := fastScratchPool.Get().(*fastScratch)
	defer s.release()
	if !s.decode(body) {
		return cohortRequest{}, false
	}
	top, p := &s.top, &s.params
	switch *top.Action {
	case ActionAdd:
		req.Action = ActionAdd
	case ActionRemove:
		req.Action = ActionRemove
	default:
		return cohortRequest{}, false
	}
	req.Partner, req.CohortName, req.CohortID = *top.Partner, *p.CohortName, *p.CohortID
	// The value checks of parseSlow, in its order. Members are known to be
	// objects whose only key is a non-empty uid, so strict mode has nothing
	// to reject.
	if checkNonEmpty("partner", req.Partner) != nil ||
		checkNonEmpty("cohort_name", req.CohortName) != nil || v.checkName(req.CohortName) != nil ||
		checkNonEmpty("cohort_id", req.CohortID) != nil ||
		checkMemberCount(len(p.Members)) != nil {
		return cohortRequest{}, false
	}
	if p.Description != nil {
		req.Description, req.HasDescription = strings.Clone(*p.Description), true
	}
	req.Partner, req.CohortName, req.CohortID = strings.Clone(req.Partner), strings.Clone(req.CohortName), strings.Clone(req.CohortID)
	req.Members = s.members()
	return req, true
}

// The JSON of a request, for the library: the pointers tell null (nil) from
// a value. parameters is decoded apart (fastScratch.decode).
type (
	fastBody struct {
		Action     *string         `json:"action"`
		Partner    *string         `json:"partner"`
		Parameters json.RawMessage `json:"parameters"`
	}
	fastParams struct {
		CohortName  *string      `json:"cohort_name"`
		CohortID    *string      `json:"cohort_id"`
		Description *string      `json:"cohort_description"`
		Members     []fastMember `json:"members"`
	}
	fastMember struct {
		UID *string `json:"uid"`
	}
)

// fastFlags makes the library match keys exactly, as parseSlow's maps do,
// and give up on unknown keys; strings and parameters stay in the body's
// memory.
const fastFlags = json.DontCopyString | json.DontCopyRawMessage | json.DontMatchCaseInsensitiveStructFields | json.DisallowUnknownFields

// absent is what the strings the pointers of fastScratch point to hold
// before a call. It is not valid UTF-8, so no string of a body that
// parseFast decodes decodes to it: a string that still holds it after the
// call was not in the body.
const absent = "\xff"

// fastScratch is the reusable memory of one parseFast call.
type fastScratch struct {
	top    fastBody
	params fastParams
	slots  [5]string // what the pointers of top and params point to
	uids   []byte    // the uids, back to back
}

var fastScratchPool = sync.Pool{New: func() any { return new(fastScratch) }}

// maxPooledScratch bounds the buffers kept for reuse, so that one huge body
// (with a large Config.MaxBodyBytes) does not pin its memory.
const maxPooledScratch = 1 << 20

// decode decodes body into s.top and s.params, and reports whether it has
// every field parseFast needs, none of them null, and members that all
// have a non-empty uid.
//
// The pointers point to memory of s that holds absent, so that the
// library decodes into it without allocating, and a field that was not in
// the body still holds absent. The library sets a pointer to nil for null,
// and decodes an object given twice into the same struct: that is why
// parameters is decoded apart, from the last of them (a json.RawMessage, as
// in parseSlow).
func (s *fastScratch) decode(body []byte) bool {
	for i := range s.slots {
		s.slots[i] = absent
	}
	s.top = fastBody{Action: &s.slots[0], Partner: &s.slots[1]}
	s.params = fastParams{CohortName: &s.slots[2], CohortID: &s.slots[3], Description: &s.slots[4], Members: s.params.Members[:0]}
	if rest, err := json.Parse(body, &s.top, fastFlags); err != nil || len(rest) != 0 {
		return false
	}
	if rest, err := json.Parse(s.top.Parameters, &s.params, fastFlags); err != nil || len(rest) != 0 {
		return false
	}
	for _, p := range [...]**string{&s.top.Action, &s.top.Partner, &s.params.CohortName, &s.params.CohortID} {
		if *p == nil || **p == absent {
			return false // null or missing
		}
	}
	if d := &s.params.Description; *d != nil && **d == absent {
		*d = nil
	}
	// An empty uid is rejected by parseSlow.
	for _, m := range s.params.Members {
		if m.UID == nil || *m.UID == absent || *m.UID == "" {
			return false
		}
	}
	return true
}

// members returns the uids as strings. They are substrings of one string
// holding exactly the uid bytes, which costs two allocations in all and
// keeps no JSON syntax alive.
func (s *fastScratch) members() []string {
	ms := s.params.Members
	b := s.uids[:0]
	for _, m := range ms {
		b = append(b, *m.UID...)
	}
	s.uids = b
	all := string(b)
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i], all = all[:len(*m.UID)], all[len(*m.UID):]
	}
	return out
}

// release resets s, so that it keeps nothing of the body, and puts it back
// in the pool unless its buffers are large. The strings of members that
// the library allocated are kept for the next call (with absent in them).
func (s *fastScratch) release() {
	s.slots = [len(s.slots)]string{}
	s.top, s.params.CohortName, s.params.CohortID, s.params.Description = fastBody{}, nil, nil, nil
	ms := s.params.Members[:cap(s.params.Members)]
	for _, m := range ms {
		if m.UID != nil {
			*m.UID = absent
		}
	}
	if cap(s.uids) > maxPooledScratch || cap(ms) > maxPooledScratch/8 {
		return
	}
	s.uids = s.uids[:0]
	fastScratchPool.Put(s)
}
