package outcomes

// Queued is how many handed-in outcomes no goroutine has gathered yet.
func Queued(b *Batcher) int { return len(b.reqs) }
