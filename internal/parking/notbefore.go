package parking

import (
	"fmt"
	"strconv"
	"time"
)

// HeaderNotBefore is the header of a parked record that carries the end of
// the longest unknown-outcome hold of its cohort in the replica that parked
// it (DESIGN.md Non-obvious 11), in Unix milliseconds.
const HeaderNotBefore = "cohortsync-not-before"

// NotBefore is the header value for a record of a cohort whose holds end at
// holdEnds (the ends of the cohort's unknown-outcome holds in this replica;
// none: the zero time). It is rounded up to the millisecond, so that the
// reader never waits less than the hold.
func NotBefore(holdEnds ...time.Time) string {
	var end time.Time
	for _, e := range holdEnds {
		if e.After(end) {
			end = e
		}
	}
	if end.IsZero() {
		return "0"
	}
	ms := end.UnixMilli()
	if time.UnixMilli(ms).Before(end) {
		ms++
	}
	return strconv.FormatInt(ms, 10)
}

// Wait is how long whoever sends a parked record with header value v must
// wait at now before the record's first request goes out. A value that does
// not parse is an error: the caller waits the whole bound instead.
func Wait(v string, now time.Time) (time.Duration, error) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, fmt.Errorf("parking: not-before %q", v)
	}
	if ms == 0 {
		return 0, nil
	}
	return max(0, time.UnixMilli(ms).Sub(now)), nil
}
