package batcher

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

type testAck struct{ id int }

func (*testAck) Done() {}

// TestMembersAgainstMap runs random adds, look-ups, rides and kills on one
// member store and checks every step against a map: find must see exactly
// the live uids, slot numbers handed out must stay valid, the members stay
// in insertion order, and the acks carried stay with their slot through
// compactions.
func TestMembersAgainstMap(t *testing.T) {
	for seed := range uint64(50) {
		rng := rand.New(rand.NewPCG(seed, 3))
		var m members
		type want struct {
			ack  Ack
			more int
		}
		live := map[string]*want{}
		var order []string // live uids in insertion order
		universe := 1 + rng.IntN(300)
		for step := range 3000 {
			uid := fmt.Sprintf("u%d", rng.IntN(universe))
			h := hashUID(uid)
			i := m.find(uid, h)
			w := live[uid]
			if (i >= 0) != (w != nil) {
				t.Fatalf("seed %d step %d: find(%q) = %d, live %v", seed, step, uid, i, w != nil)
			}
			if i >= 0 {
				if got := m.uid(i); got != uid {
					t.Fatalf("seed %d step %d: slot %d holds %q, want %q", seed, step, i, got, uid)
				}
				if m.slots[i].ack != w.ack || len(m.more[i]) != w.more {
					t.Fatalf("seed %d step %d: %q carries the wrong acks", seed, step, uid)
				}
				if rng.IntN(2) == 0 {
					m.ride(i, &testAck{step})
					w.more++
					continue
				}
				ack, more := m.kill(i)
				if ack != w.ack || len(more) != w.more {
					t.Fatalf("seed %d step %d: kill(%q) returned the wrong acks", seed, step, uid)
				}
				delete(live, uid)
				for k, u := range order {
					if u == uid {
						order = append(order[:k], order[k+1:]...)
						break
					}
				}
				continue
			}
			a := &testAck{step}
			j := m.add(uid, h, a)
			extra := rng.IntN(3)
			acks := make([]Ack, extra)
			for k := range acks {
				acks[k] = &testAck{-step}
			}
			m.carry(j, acks)
			if m.uid(j) != uid || m.slots[j].ack != a {
				t.Fatalf("seed %d step %d: add returned slot %d holding %q", seed, step, j, m.uid(j))
			}
			live[uid] = &want{ack: a, more: extra}
			order = append(order, uid)
		}
		var got []string
		for k := range m.slots {
			if m.slots[k].ack != nil {
				got = append(got, m.uid(int32(k)))
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(order) {
			t.Fatalf("seed %d: members %v, want %v in insertion order", seed, got, order)
		}
		if len(m.slots) > 2*len(live)+len(m.table) {
			t.Fatalf("seed %d: %d slots for %d live members: superseded slots are not reclaimed", seed, len(m.slots), len(live))
		}
	}
}

// BenchmarkMembersFill fills one batch's store with 6,000 new 10-character
// uids, each looked up first (a miss) as Add does: the backlog case.
func BenchmarkMembersFill(b *testing.B) {
	uids := make([]string, 6000)
	for i := range uids {
		uids[i] = fmt.Sprintf("%010d", i*7919)
	}
	ack := &testAck{}
	b.ReportAllocs()
	for b.Loop() {
		var m members
		for _, u := range uids {
			h := hashUID(u)
			if m.find(u, h) >= 0 {
				b.Fatal("found a uid never added")
			}
			m.add(u, h, ack)
		}
	}
}
