package event

import "time"

// Bounds of the memory a Decoder keeps between calls.
const (
	// maxInterned is the number of strings after which a Decoder forgets
	// the strings it interned and starts over.
	maxInterned = 4096
	// maxInternedBytes is the total length of the interned strings after
	// which a Decoder starts over.
	maxInternedBytes = 256 << 10
	// maxInternLen is the length above which a string is not interned.
	maxInternLen = 1024
	// maxKeptMembers is the number of members above which a Decoder does not
	// keep its buffers for the next call.
	maxKeptMembers = 4096
)

// A Decoder decodes the records of one partition. It is like Decode, but
// allocates less: it reuses its buffers from one record to the next and
// interns the header strings, which repeat from record to record. A Decoder
// is not safe for concurrent use.
type Decoder struct {
	defaultPartner string

	strs     map[string]string // interned header strings
	strBytes int               // total length of the strings in strs

	spans []span   // scratch for the members' spans
	esc   []byte   // scratch for the values of strings with escapes
	buf   []byte   // scratch for the members' bytes
	uids  []string // the UIDs of the last Event returned
}

// NewDecoder returns a Decoder that uses defaultPartner when an event names
// no partner.
func NewDecoder(defaultPartner string) *Decoder {
	return &Decoder{defaultPartner: defaultPartner, strs: make(map[string]string)}
}

// Decode is like Decode(value, defaultPartner), except that the returned
// Event's UIDs slice is reused by the next call (the strings in it are not),
// and the header strings (partner, cohort_id, cohort_name,
// cohort_description, workspace_id) are interned in a bounded cache so that
// repeated cohorts allocate nothing.
//
// The next call may overwrite the elements of the UIDs slice: a caller that
// keeps the slice past that must copy it (slices.Clone). The strings
// themselves are never changed; the members of one event share one
// allocation. Appending to the slice does not affect the Decoder.
func (d *Decoder) Decode(value []byte) (Event, error) {
	f, ok := scanEvent(value, d.spans[:0], d.esc[:0])
	d.keepSpans(f.uids)
	if cap(f.esc) <= maxKeptMembers*16 {
		d.esc = f.esc[:0]
	} else {
		d.esc = nil
	}
	if ok {
		if ev, ok := d.build(&f, value); ok {
			return ev, nil
		}
	}
	return decodeSlow(value, d.defaultPartner)
}

// build is the rest of decodeFast for a Decoder: it validates f and, if it
// passes, returns the Event of value using the Decoder's memory. The header
// strings are interned by their values, unescaped (in f.esc, which the
// next call reuses: intern copies what it keeps).
func (d *Decoder) build(f *fastFields, value []byte) (ev Event, ok bool) {
	var members []span
	ev.Action, members, ok = f.check(value, d.defaultPartner)
	d.keepSpans(members)
	if !ok {
		return Event{}, false
	}
	ev.CohortID = d.intern(f.bytes(value, fieldCohortID))
	ev.CohortName = d.intern(f.bytes(value, fieldCohortName))
	ev.CohortDescription = d.intern(f.bytes(value, fieldCohortDescription))
	if p := f.bytes(value, fieldPartner); len(p) > 0 {
		ev.Partner = d.intern(p)
	} else {
		ev.Partner = d.defaultPartner
	}
	ev.Workspace = d.intern(f.bytes(value, fieldWorkspaceID))

	// One allocation for the members, and for occurred_at, which is only
	// parsed and is short.
	b, esc := d.buf[:0], f.esc
	for _, u := range members {
		b = append(b, spanText(value, esc, u)...)
	}
	b = append(b, f.bytes(value, fieldOccurredAt)...)
	s := string(b)
	if cap(b) <= maxKeptMembers*16 {
		d.buf = b[:0]
	} else {
		d.buf = nil
	}

	// Drop the strings of the last event from the slice, so that the
	// Decoder does not keep them alive, then fill it with this one's.
	clear(d.uids)
	uids := d.uids[:0]
	for _, u := range members {
		uids = append(uids, take(&s, u.len()))
	}
	if f.present(fieldOccurredAt) {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			clear(uids)
			return Event{}, false
		}
		ev.OccurredAt = t
	}
	if cap(uids) <= maxKeptMembers {
		d.uids = uids
	} else {
		d.uids = nil
	}
	ev.UIDs = uids[:len(uids):len(uids)]
	return ev, true
}

// keepSpans keeps the memory of s for the next call, unless it is large.
func (d *Decoder) keepSpans(s []span) {
	if cap(s) <= maxKeptMembers {
		d.spans = s[:0]
	} else {
		d.spans = nil
	}
}

// intern returns string(b), from the cache of the Decoder when it is there,
// adding it otherwise. The cache starts over when it grows past maxInterned
// strings or maxInternedBytes; strings longer than maxInternLen are not
// cached.
func (d *Decoder) intern(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.strs[string(b)]; ok { // does not allocate
		return s
	}
	s := string(b)
	if len(s) > maxInternLen {
		return s
	}
	if len(d.strs) >= maxInterned || d.strBytes+len(s) > maxInternedBytes {
		clear(d.strs)
		d.strBytes = 0
	}
	if d.strs == nil {
		d.strs = make(map[string]string)
	}
	d.strs[s] = s
	d.strBytes += len(s)
	return s
}
