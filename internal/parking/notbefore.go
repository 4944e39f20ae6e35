package parking

import (
	"fmt"
	"strconv"
	"time"
)

// HeaderNotBefore is the header of a parked record that carries how long its
// cohort was still held in the replica that parked it, in milliseconds,
// measured right before the write (DESIGN.md Non-obvious 11: the longest
// unknown-outcome hold of the cohort). It is a duration, not a time of day:
// whoever sends the record waits that long from its own reading of the
// record, which comes after the write, so the wait outlasts the hold with no
// assumption about the two replicas' clocks (PARKING.md).
const HeaderNotBefore = "cohortsync-not-before-ms"

// NotBefore is the header value for a record parked at now, of a cohort
// whose holds in this replica end at holdEnds (none: "0"). It is rounded up
// to the millisecond, so that the reader never waits less than the hold.
func NotBefore(now time.Time, holdEnds ...time.Time) string {
	var d time.Duration
	for _, e := range holdEnds {
		d = max(d, e.Sub(now))
	}
	return strconv.FormatInt(ceilMillis(d), 10)
}

// Wait is how long, from its reading of a parked record with header value
// v, the reader holds the record's cohort before its first request. A value
// that does not parse is an error: the caller waits the whole bound
// (MOENGAGE_MAX_PROCESSING_TIME) instead.
func Wait(v string) (time.Duration, error) {
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms < 0 {
		return 0, fmt.Errorf("parking: not-before %q", v)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
