package batcher

import (
	"hash/maphash"
	"slices"
	"unsafe"
)

// A batch stores its members compactly: the uids side by side in one byte
// arena, a 24-byte slot per member, and an open-addressing table of slot
// numbers for the compaction look-up. Per pending member that is about a
// third of what a map[string]… index and a slot holding a string header
// cost, and it gives the garbage collector almost no pointers to follow.
//
// A superseded member keeps its slot with a nil ack (and its bytes in the
// arena) until the table is next rebuilt; if superseded slots are the
// majority then, they are compacted away (rehash).

// slot is one member of a batch. ack is nil once the member was superseded.
type slot struct {
	off uint32 // the uid is arena[off : off+n]
	n   uint32
	ack Ack
}

// members is the member store of one batch.
type members struct {
	arena []byte
	slots []slot
	table []uint32        // per bucket: 0 = empty, else tag<<24 | slot index+1; len is a power of two
	more  map[int32][]Ack // acks of the records a slot's change superseded or repeated
	used  int             // occupied buckets (live and superseded slots)
}

// uid returns the uid of slot i. The string shares the arena's memory,
// which changes only while the batch is open (add appends to it, and a
// rehash may compact it in place). So a uid string is kept only once the
// batch was dispatched (the request, rejections); while it is open, uid is
// used only by code that is done with the string before the next add.
func (m *members) uid(i int32) string {
	s := &m.slots[i]
	if s.n == 0 {
		return ""
	}
	return unsafe.String(&m.arena[s.off], int(s.n))
}

// A table entry packs the slot number (plus one, so that 0 is empty) into
// its low 24 bits and 8 bits of the uid's hash above them, so that most
// probes that miss compare integers, not uids. A batch never holds more
// than maxSlots slots (see full).
const (
	slotBits = 24
	slotMask = 1<<slotBits - 1
)

// maxSlots is the most slots a batch holds: slotMask - 1. Limits.MaxSlots
// may lower it.
const maxSlots = slotMask - 1

func tag(h uint64) uint32 { return uint32(h>>56) << slotBits }

// find returns the live slot holding uid, or -1. h is hashUID(uid).
func (m *members) find(uid string, h uint64) int32 {
	if len(m.table) == 0 {
		return -1
	}
	mask := uint64(len(m.table) - 1)
	t := tag(h)
	for j := h & mask; ; j = (j + 1) & mask {
		e := m.table[j]
		if e == 0 {
			return -1
		}
		if e&^slotMask != t {
			continue
		}
		i := int32(e&slotMask) - 1
		if s := &m.slots[i]; s.ack != nil && int(s.n) == len(uid) && string(m.arena[s.off:s.off+s.n]) == uid {
			return i
		}
	}
}

// full reports whether the batch must take no more members: it holds limit
// slots (Limits.MaxSlots; at most maxSlots, beyond which its slot numbers
// would no longer fit a table entry: far beyond any body the API accepts,
// it bounds a Batcher configured with a huge MaxBytes).
func (m *members) full(limit int) bool { return len(m.slots) >= limit }

// add appends a live slot for uid, indexes it and returns its number. The
// table grows (and the slots may be compacted) before the slot is added, so
// the number returned stays valid until the next add.
func (m *members) add(uid string, h uint64, ack Ack) int32 {
	if (m.used+1)*2 > len(m.table) {
		m.rehash()
	}
	// Grow by doubling: append's gentler growth for large slices would copy
	// a full batch's slots and bytes several times over.
	if len(m.slots) == cap(m.slots) {
		m.slots = slices.Grow(m.slots, max(16, len(m.slots)))
	}
	if len(m.arena)+len(uid) > cap(m.arena) {
		m.arena = slices.Grow(m.arena, max(256, len(m.arena), len(uid)))
	}
	i := int32(len(m.slots))
	m.slots = append(m.slots, slot{off: uint32(len(m.arena)), n: uint32(len(uid)), ack: ack})
	m.arena = append(m.arena, uid...)
	m.insert(i, h)
	return i
}

func (m *members) insert(i int32, h uint64) {
	mask := uint64(len(m.table) - 1)
	j := h & mask
	for m.table[j] != 0 {
		j = (j + 1) & mask
	}
	m.table[j] = tag(h) | uint32(i+1)
	m.used++
}

// rehash sizes the table for the live slots and indexes them again. When
// superseded slots outnumber the live ones, it first compacts the slots and
// the arena (keeping the members' order), so that a uid flipping between
// add and remove cannot grow an open batch without bound.
func (m *members) rehash() {
	live := 0
	for k := range m.slots {
		if m.slots[k].ack != nil {
			live++
		}
	}
	if dead := len(m.slots) - live; dead > live {
		m.compact()
	}
	size := 16
	for size < (live+1)*4 { // at most 1/4 full after a rehash, 1/2 before the next
		size *= 2
	}
	if size != len(m.table) {
		m.table = make([]uint32, size)
	} else {
		clear(m.table)
	}
	m.used = 0
	for k := range m.slots {
		if m.slots[k].ack != nil {
			m.insert(int32(k), hashUID(m.uid(int32(k))))
		}
	}
}

// compact drops the superseded slots and their arena bytes, in place.
func (m *members) compact() {
	var more map[int32][]Ack
	arena := m.arena[:0]
	n := 0
	for k := range m.slots {
		s := m.slots[k]
		if s.ack == nil {
			continue
		}
		// In place: the write position never passes the read position.
		off := uint32(len(arena))
		arena = append(arena, m.arena[s.off:s.off+s.n]...)
		s.off = off
		if acks := m.more[int32(k)]; acks != nil {
			if more == nil {
				more = make(map[int32][]Ack, len(m.more))
			}
			more[int32(n)] = acks
		}
		m.slots[n] = s
		n++
	}
	clear(m.slots[n:]) // drop the acks they held
	m.slots = m.slots[:n]
	m.arena = arena
	m.more = more
}

// kill marks slot i superseded and returns the acks it carried.
func (m *members) kill(i int32) (Ack, []Ack) {
	s := &m.slots[i]
	ack, more := s.ack, m.more[i]
	s.ack = nil
	if more != nil {
		delete(m.more, i)
	}
	return ack, more
}

// ride adds ack to the acks carried by slot i.
func (m *members) ride(i int32, ack Ack) {
	if m.more == nil {
		m.more = make(map[int32][]Ack)
	}
	m.more[i] = append(m.more[i], ack)
}

// carry records that slot i also settles acks.
func (m *members) carry(i int32, acks []Ack) {
	if len(acks) == 0 {
		return
	}
	if m.more == nil {
		m.more = make(map[int32][]Ack)
	}
	m.more[i] = acks
}

var uidSeed = maphash.MakeSeed()

func hashUID(uid string) uint64 { return maphash.String(uidSeed, uid) }
