package sink

import "time"

// SetFenceClock replaces the clock the write fence of the default HTTP
// client reads, to play a process paused between the start of an attempt
// and its first write. Call it before the first Send.
func SetFenceClock(c *Client, now func() time.Time) { c.fence.now = now }
