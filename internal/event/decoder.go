package event

import (
	"strings"

	"github.com/segmentio/encoding/json"
)

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
//
// Records are decoded by github.com/segmentio/encoding/json, a drop-in
// replacement of encoding/json that can leave the strings without escape
// sequences in the record's memory (DontCopyString) and that matches
// encoding/json's quirks (keys match case-insensitively, Unicode folding
// included; the last of duplicate keys wins; null is absence). Its result
// goes through the rules of decodeSlow (raw.event). Every record it does
// not accept, and every record that fails the rules, is decoded again by
// decodeSlow, which gives the error: so the library decides nothing on its
// own, and FuzzDecodeAgainstSlow checks Decode and a Decoder against
// decodeSlow.
type Decoder struct {
	defaultPartner string

	strs     map[string]string // interned header strings
	strBytes int               // total length of the strings in strs

	r     raw       // the record, as the library decoded it
	slots [6]string // the strings r's pointers point to (see decode)
	uids  []string  // the UIDs of the last Event returned
}

// NewDecoder returns a Decoder that uses defaultPartner when an event names
// no partner.
func NewDecoder(defaultPartner string) *Decoder {
	return &Decoder{defaultPartner: defaultPartner, strs: make(map[string]string)}
}

// Decode is like Decode(value, defaultPartner), except that the returned
// Event's UIDs slice is reused by the next call (the strings in it are not),
// and the header strings (partner, cohort_id, cohort_name,
// cohort_description) are interned in a bounded cache so that repeated
// cohorts allocate nothing.
//
// The next call may overwrite the elements of the UIDs slice: a caller that
// keeps the slice past that must copy it (slices.Clone). The strings
// themselves are never changed; the members of one event share one
// allocation. Appending to the slice does not affect the Decoder.
func (d *Decoder) Decode(value []byte) (Event, error) {
	// Drop the strings of the last event from the slice, so that the
	// Decoder does not keep them alive.
	clear(d.uids)
	ev, ok := d.decode(value)
	if !ok {
		d.forget()
		return decodeSlow(value, d.defaultPartner)
	}
	ev.CohortID = d.intern(ev.CohortID)
	ev.CohortName = d.intern(ev.CohortName)
	ev.CohortDescription = d.intern(ev.CohortDescription)
	ev.Partner = d.intern(ev.Partner)
	ownMembers(ev.UIDs)
	if cap(ev.UIDs) <= maxKeptMembers {
		d.uids = ev.UIDs
	} else {
		d.uids = nil
	}
	ev.UIDs = ev.UIDs[:len(ev.UIDs):len(ev.UIDs)]
	d.forget()
	return ev, nil
}

// absent is what the string slots of a Decoder hold before a call. It is
// not valid UTF-8, and no string of a record that decode passes to the
// library decodes to it (mayHaveBadText: the record is valid UTF-8, and
// its escape sequences stand for valid UTF-8), so a slot that holds it after
// the call was not in the record.
const absent = "\xff"

// decode decodes value with the library and applies the rules of decodeSlow
// to it. When ok, ev is the Event that decodeSlow returns, except that its
// strings may be in value's memory and its UIDs in d.uids' memory: the
// caller must copy them. Otherwise the caller must run decodeSlow.
//
// The pointers of d.r point to d.slots, which hold absent, so that the
// library decodes into them without allocating and decode still tells an
// absent field (the slot still holds absent) from a present one, and from
// null, for which the library sets the pointer to nil as encoding/json does.
func (d *Decoder) decode(value []byte) (ev Event, ok bool) {
	if mayHaveBadText(value) {
		return Event{}, false // for checkText, in decodeSlow
	}
	for i := range d.slots {
		d.slots[i] = absent
	}
	// The elements of r.UIDs are "" (forget): the library decodes a null
	// element by leaving it as it is.
	d.r = raw{Action: &d.slots[0], CohortID: &d.slots[1], CohortName: &d.slots[2], CohortDescription: &d.slots[3],
		Partner: &d.slots[4], UID: &d.slots[5], UIDs: d.r.UIDs[:0]}
	rest, err := json.Parse(value, &d.r, json.DontCopyString|json.DontCopyRawMessage)
	if err != nil || len(rest) != 0 {
		return Event{}, false
	}
	for _, p := range [...]**string{&d.r.Action, &d.r.CohortID, &d.r.CohortName, &d.r.CohortDescription, &d.r.Partner, &d.r.UID} {
		if *p != nil && **p == absent {
			*p = nil
		}
	}
	// r.UIDs is empty, not nil (as encoding/json leaves it), when uids is
	// absent: that only changes the error for a record without members,
	// and decodeSlow gives the errors.
	ev, err = d.r.event(d.defaultPartner, d.uids[:0], unmarshalString)
	return ev, err == nil
}

// unmarshalString is the unmarshal function of raw.event for the library.
func unmarshalString(b []byte, v any) error {
	_, err := json.Parse(b, v, json.DontCopyString)
	return err
}

// forget drops what d.r holds of the last record, so that the Decoder does
// not keep its memory alive, and keeps the memory of r.UIDs for the next
// call unless it is large.
func (d *Decoder) forget() {
	d.slots = [len(d.slots)]string{}
	uids := d.r.UIDs[:cap(d.r.UIDs)]
	clear(uids)
	if cap(uids) > maxKeptMembers {
		uids = nil
	}
	d.r = raw{UIDs: uids[:0]}
}

// ownMembers replaces the members uids, in place, by copies that share one
// new string.
func ownMembers(uids []string) {
	n := 0
	for _, u := range uids {
		n += len(u)
	}
	var b strings.Builder
	b.Grow(n)
	for _, u := range uids {
		b.WriteString(u)
	}
	s := b.String()
	for i, u := range uids {
		uids[i] = take(&s, len(u))
	}
}

// take returns the first n bytes of *s and removes them from it.
func take(s *string, n int) string {
	t := (*s)[:n]
	*s = (*s)[n:]
	return t
}

// intern returns a copy of s (which may be in a record's memory) from the
// cache of the Decoder when it is there, adding it otherwise. The cache
// starts over when it grows past maxInterned strings or maxInternedBytes;
// strings longer than maxInternLen are not cached.
func (d *Decoder) intern(s string) string {
	if s == "" {
		return ""
	}
	if t, ok := d.strs[s]; ok {
		return t
	}
	s = strings.Clone(s)
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
