package parking_test

import (
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

func TestCommitRoundTrip(t *testing.T) {
	c := parking.Commit{Offset: 3, Mark: 40, Gen: 9, Held: map[string]int64{"ws,1;x": 3, "ws2": 17},
		HeldGen: map[string]int64{"ws,1;x": 4, "ws2": 8}, Hold: 2500*time.Microsecond + 1}
	meta := "clean:7;wait=120;" + c.Encode()
	got, err := parking.ParseCommit(3, meta)
	if err != nil {
		t.Fatal(err)
	}
	if got.Mark != 40 || got.Gen != 9 || got.Hold != 3*time.Millisecond || len(got.Held) != 2 ||
		got.Held["ws,1;x"] != 3 || got.Held["ws2"] != 17 || got.HeldGen["ws,1;x"] != 4 || got.HeldGen["ws2"] != 8 {
		t.Fatalf("ParseCommit(%q) = %+v", meta, got)
	}
	if !got.Settled("ws2", 16) || got.Settled("ws2", 17) || !got.Settled("ws3", 39) || got.Settled("ws3", 40) {
		t.Fatalf("Settled wrong for %+v", got)
	}
	if none, err := parking.ParseCommit(12, "clean:3"); err != nil || none.Mark != 12 || len(none.Held) != 0 {
		t.Fatalf("a commit without parking metadata: %+v, %v", none, err)
	}
	for _, bad := range []string{"m=x", "m=10;h=a", "m=10;h=a:2", "m=10;h=a:11:0", "m=10;hold=-1", "m=10;g=x"} {
		if _, err := parking.ParseCommit(5, bad); err == nil {
			t.Errorf("ParseCommit(5, %q) accepted", bad)
		}
	}
}

// TestMetadataBound: past the bound a parking partition stops holding new
// workspaces (its main cursor stops), and what it encodes stays within
// MaxMetadata however far the held offsets grow.
func TestMetadataBound(t *testing.T) {
	p := parking.NewPartition(parking.Commit{})
	n := 0
	for ; ; n++ {
		w := fmt.Sprintf("WORKSPACE%08d", n)
		if !p.Hold(w, 0) {
			if p.Classify(w, 0) != parking.Deliver {
				t.Fatalf("a workspace refused by Hold is held")
			}
			break
		}
	}
	if n < 60 || n > 200 {
		t.Fatalf("%d workspaces fit, want about 65", n)
	}
	c := p.Commit(time.Hour)
	for w := range c.Held {
		c.Held[w] = 1<<63 - 1
	}
	for w := range c.HeldGen {
		c.HeldGen[w] = 1<<63 - 1
	}
	c.Mark, c.Gen = 1<<63-1, 1<<63-1
	if l := len(c.Encode()) + parking.Reserve; l > parking.MaxMetadata {
		t.Fatalf("metadata %d bytes with the reserve, bound %d", l, parking.MaxMetadata)
	}
}

// TestStaleWrites: a record written in an older generation than one before
// it in the partition is a late write of an expelled owner: dropped by the
// main cursor, and by a resume cursor that judges it by the records before
// it (not by the main cursor's generation, which may be higher by then).
func TestStaleWrites(t *testing.T) {
	p := parking.NewPartition(parking.Commit{Mark: 10, Gen: 3})
	if p.Classify("a", 2) != parking.Stale || p.Classify("a", 3) != parking.Deliver {
		t.Fatal("main cursor: stale by the generation it started with")
	}
	if !p.Hold("a", 10) {
		t.Fatal("Hold")
	}
	p.Done(10, 3)
	p.Done(11, 5) // another workspace's record, a newer owner
	if p.Classify("b", 4) != parking.Stale || p.Classify("a", 5) != parking.Pass {
		t.Fatalf("main cursor after generation 5")
	}
	c, err := parking.ParseCommit(10, p.Commit(0).Encode())
	if err != nil {
		t.Fatal(err)
	}
	q := parking.NewPartition(c) // a new owner
	if off, ok := q.Resume("a"); !ok || off != 10 || q.ResumeClassify("a", "a", 3) != parking.Deliver {
		t.Fatalf("resume at %d, %v: a's record of generation 3 is not stale for its cursor", off, ok)
	}
	q.Advance("a", 10, 3)
	if q.ResumeClassify("a", "b", 5) != parking.Pass {
		t.Fatal("resume cursor: another workspace's record")
	}
	q.Advance("a", 11, 5)
	if _, ok := q.Resume("a"); ok {
		t.Fatal("a not released at the main cursor")
	}
}

func TestSourceDetour(t *testing.T) {
	s, err := parking.NewSource("clean:4;d=ws1", []int64{10, 0})
	if err != nil {
		t.Fatal(err)
	}
	commits := map[int]parking.Commit{0: {Mark: 9}, 1: {}}
	get := func(k int) parking.Commit { return commits[k] }
	if ok, _ := s.CanUndetour("ws1", false, get); !s.Detoured("ws1") || ok {
		t.Fatal("a predecessor's records below the parking end are not settled yet")
	}
	commits[0] = parking.Commit{Mark: 10, Hold: 7 * time.Second}
	if ok, wait := s.CanUndetour("ws1", false, get); !ok || wait != 7*time.Second {
		t.Fatalf("CanUndetour = %v, %v; want true and the parking replica's hold", ok, wait)
	}
	if ok, _ := s.CanUndetour("ws1", true, get); ok {
		t.Fatal("CanUndetour while blocked")
	}
	meta, err := s.StartDetour("ws2")
	if err != nil || meta != "d=ws1,ws2" {
		t.Fatalf("StartDetour = %q, %v", meta, err)
	}
	s.Parked("ws2", 1, 4)
	commits[1] = parking.Commit{Mark: 9, Held: map[string]int64{"ws2": 4}}
	if ok, _ := s.CanUndetour("ws2", false, get); ok {
		t.Fatal("ws2's record at 4 is held at 4")
	}
	s.Undetour("ws1")
	if s.Metadata() != "d=ws2" {
		t.Fatalf("Metadata = %q", s.Metadata())
	}
	for i := 0; ; i++ {
		if _, err := s.StartDetour(fmt.Sprintf("WORKSPACE%08d", i)); errors.Is(err, parking.ErrFull) {
			if len(s.Metadata())+parking.Reserve > parking.MaxMetadata || i < 100 {
				t.Fatalf("full after %d workspaces at %d bytes", i, len(s.Metadata()))
			}
			break
		}
	}
}

// TestNotBefore: the reader of a parked record sends it no earlier than the
// hold of the replica that parked it ended, whatever the two replicas'
// clocks say: the header is a duration the reader waits from its reading
// (which is after the write), rounded up to the millisecond. A time-of-day
// header read by a replica whose clock is 10 s ahead would have let it send
// 10 s early (the design's first wording).
func TestNotBefore(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		holdEnd := time.Now().Add(30*time.Second + time.Microsecond)
		time.Sleep(5 * time.Second)
		v := parking.NotBefore(time.Now(), holdEnd, time.Now().Add(time.Second))
		time.Sleep(10 * time.Second) // the record waits in the parking log
		w, err := parking.Wait(v)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(w)
		if now := time.Now(); now.Before(holdEnd) || now.Sub(holdEnd) > 10*time.Second+time.Millisecond {
			t.Fatalf("sent %v after the hold ended", now.Sub(holdEnd))
		}
		if w, err := parking.Wait(parking.NotBefore(time.Now())); w != 0 || err != nil {
			t.Fatalf("no hold: %v, %v", w, err)
		}
		if w, _ := parking.Wait(parking.NotBefore(time.Now(), holdEnd.Add(-time.Hour))); w != 0 {
			t.Fatalf("a hold already over: %v", w)
		}
		if _, err := parking.Wait("soon"); err == nil {
			t.Fatal("an unreadable header was accepted")
		}
	})
}
