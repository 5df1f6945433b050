package tracker

import (
	"testing"
	"time"
)

func TestCommitClock(t *testing.T) {
	var c commitClock
	now := time.Now()
	if c.behind(now) != 0 {
		t.Fatal("behind with nothing handed over")
	}
	n1 := c.commit(now.Add(-3 * time.Second))
	c.commit(time.Time{}) // a commit time the source does not know: counted only
	n3 := c.commit(now.Add(-time.Second))
	if c.behind(now) != 3*time.Second || c.count() != 3 {
		t.Fatalf("behind %v, count %d", c.behind(now), c.count())
	}
	c.confirmed(n1)
	if c.behind(now) != time.Second {
		t.Fatalf("after confirming the first: %v", c.behind(now))
	}
	c.confirmed(n3)
	if c.behind(now) != 0 || len(c.pending) != 0 {
		t.Fatalf("after confirming all: %v", c.behind(now))
	}
	// Beyond maxCommitTimes the newest kept stands for the newer ones,
	// with its older time: high, never low, and forgotten only with them.
	for i := range maxCommitTimes + 10 {
		c.commit(now.Add(time.Duration(i) * time.Millisecond))
	}
	if len(c.pending) != maxCommitTimes {
		t.Fatalf("%d kept", len(c.pending))
	}
	c.confirmed(c.count() - 1)
	if len(c.pending) != 1 || c.behind(now.Add(time.Hour)) < time.Hour-time.Duration(maxCommitTimes)*time.Millisecond {
		t.Fatalf("kept %d, behind %v", len(c.pending), c.behind(now.Add(time.Hour)))
	}
	c.confirmed(c.count())
	if c.behind(now) != 0 {
		t.Fatal("not forgotten")
	}
}
