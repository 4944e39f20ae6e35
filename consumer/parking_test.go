package consumer

import (
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// The hand-off mark shares the commit metadata with the parking tokens
// (commitClean joins them): they do not hide the proof.
func TestHandOffWaitIgnoresParkingTokens(t *testing.T) {
	const max = 30 * time.Second
	want := cleanMark(5)
	for _, c := range []struct {
		meta string
		wait time.Duration
	}{
		{"clean:5;d=WS_B", 0},
		{"clean:5;wait=1500;d=WS_B,WS_C", 1500 * time.Millisecond},
		{"clean:5;m=12;g=5;hold=3;h=WS_B:7:4", 0},
		{"clean:4;m=12;g=5", max},
		{"d=WS_B", max},
		{"m=12;g=5", max},
	} {
		if got := handOffWait(c.meta, want, max); got != c.wait {
			t.Errorf("handOffWait(%q, %q) = %s, want %s", c.meta, want, got, c.wait)
		}
	}
}

// The single reader of a parking partition (parked.go): V held at 5, m at
// 10, V not blocked. The reader starts at 5; below 10 it delivers V's
// records only (passing others), from 10 on every record; the commit stays
// at o_V until V's records below m are settled, V is released once its
// cursor reaches m, and settling out of order moves nothing early.
func TestParkedReaderResumes(t *testing.T) {
	cm, err := parking.ParseCommit(5, "m=10;g=3;h=V:5:2")
	if err != nil {
		t.Fatal(err)
	}
	pl := &plumb{c: &Consumer{cfg: Config{}}, seen: map[string]bool{}}
	pk := newParkedPart(pl, &partitionState{topic: "parked", partition: 0}, parking.NewPartition(cm))
	if start := pk.begin(); start != 5 {
		t.Fatalf("start %d, want o_V 5", start)
	}
	type rd struct {
		off  int64
		ws   string
		gen  int64
		want decision
	}
	reads := []rd{
		{5, "V", 2, deliver}, {6, "X", 3, skip}, {7, "V", 1, skip /* stale: gen 1 after 2 */}, {8, "V", 3, deliver},
		{9, "X", 3, skip}, {10, "X", 3, deliver}, {11, "V", 3, deliver}, {12, "Y", 2, skip /* stale: below the main cursor's 3 */},
	}
	seqs := map[int64]int64{}
	for _, r := range reads {
		seq, _ := pk.tr.track(r.off)
		seqs[r.off] = seq
		pk.mu.Lock()
		pk.gens = append(pk.gens, offGen{off: r.off, gen: r.gen})
		d := pk.classify(r.off, r.ws, r.gen)
		pk.mu.Unlock()
		if d != r.want {
			t.Fatalf("record %d of %s (gen %d): %d, want %d", r.off, r.ws, r.gen, d, r.want)
		}
		if d == skip {
			pk.tr.release(seq)
		}
	}
	commit := func() parking.Commit { return pk.commit(0) }
	// 10 and 11 settle first: the main cursor waits for V's records below m.
	pk.tr.release(seqs[10])
	pk.tr.release(seqs[11])
	if c := commit(); c.Offset != 5 || c.Mark != 10 || c.Held["V"] != 5 {
		t.Fatalf("after 10, 11: %+v, want offset 5, m 10, V at 5", c)
	}
	pk.tr.release(seqs[5])
	if c := commit(); c.Offset != 8 || c.Held["V"] != 8 || c.HeldGen["V"] != 3 {
		t.Fatalf("after 5: %+v, want V at 8 (6, 7 passed), its generation 3", c)
	}
	pk.tr.release(seqs[8])
	c := commit()
	if _, held := c.Held["V"]; held || c.Offset != 13 || c.Mark != 13 || c.Gen != 3 {
		t.Fatalf("after 8: %+v, want V released and everything settled to 13", c)
	}
}
