package app

import "testing"

func TestShare(t *testing.T) {
	cases := []struct {
		rpm             float64
		assigned, total int
		want            float64
	}{
		{300, 6, 6, 300},
		{300, 2, 6, 100},
		{300, 3, 7, 128}, // 128.57 rounded down: 128 + 171 <= 300
		{300, 4, 7, 171},
		{300, 1, 1000, 0.3},
		{300, 0, 6, 300 / 1e6},
		{0, 2, 6, 0},
		{300, 2, 0, 300},
	}
	for _, c := range cases {
		if got := share(c.rpm, c.assigned, c.total); got != c.want {
			t.Errorf("share(%v, %d, %d) = %v, want %v", c.rpm, c.assigned, c.total, got, c.want)
		}
	}
	// The shares of any split never add up to more than the budget (a
	// replica with nothing assigned sends nothing).
	for total := 2; total <= 24; total++ {
		for a := 1; a < total; a++ {
			if sum := share(300, a, total) + share(300, total-a, total); sum > 300 {
				t.Fatalf("split %d/%d of %d: shares add up to %v", a, total-a, total, sum)
			}
		}
	}
}
