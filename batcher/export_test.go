package batcher

// SetMaxSlots lowers the most members (slots) a batch holds to n until the
// returned func restores it, so that a test reaches the slot bound with a
// few members. Not for parallel tests.
func SetMaxSlots(n int) (restore func()) {
	old := maxSlots
	maxSlots = n
	return func() { maxSlots = old }
}
