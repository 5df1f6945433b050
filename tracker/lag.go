package tracker

import (
	"time"
)

// commitClock keeps the commit times of the transactions a bind's source
// handed over and the tracker has not yet confirmed to it, for
// Lag.Behind: the time since the oldest of them committed. It is the
// same whatever the source; sources report only Lag.Bytes. Commits are
// numbered in the order they are handed over; a confirmed position
// confirms every commit handed over before it (see mark.commits).
// The checkpointer keeps it, under its mutex.
type commitClock struct {
	n       uint64     // commits handed over so far
	pending []commitAt // oldest first, not yet confirmed
}

type commitAt struct {
	n  uint64
	at time.Time
}

// maxCommitTimes bounds the commit times kept. Beyond it, a newer commit
// takes the place of the newest kept one, which keeps its (older) time:
// Behind may then read a little high until those commits are confirmed,
// never low.
const maxCommitTimes = 1 << 16

// commit notes a transaction handed over with commit time at (zero when
// the source does not know it: it is counted, not timed) and returns the
// number of commits handed over so far.
func (c *commitClock) commit(at time.Time) uint64 {
	c.n++
	switch {
	case at.IsZero():
	case len(c.pending) < maxCommitTimes:
		c.pending = append(c.pending, commitAt{n: c.n, at: at})
	default:
		c.pending[len(c.pending)-1].n = c.n
	}
	return c.n
}

// count returns the number of commits handed over so far.
func (c *commitClock) count() uint64 { return c.n }

// confirmed forgets the first n commits: a position after them was
// confirmed to the source.
func (c *commitClock) confirmed(n uint64) {
	i := 0
	for i < len(c.pending) && c.pending[i].n <= n {
		i++
	}
	if i > 0 {
		c.pending = append(c.pending[:0], c.pending[i:]...)
	}
}

// behind returns how long ago, at now, the oldest commit not yet
// confirmed was; 0 when there is none.
func (c *commitClock) behind(now time.Time) time.Duration {
	if len(c.pending) == 0 {
		return 0
	}
	return max(now.Sub(c.pending[0].at), 0)
}
