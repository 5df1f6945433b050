package tracker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// checkpointer keeps one bind's checkpoint. It holds the positions the
// assembler passes (marks, each with the lane sequence of the last event
// before it), the lane's acknowledgement watermark, and the checkpoint last
// written; it saves the newest position whose events are all acknowledged
// (once they have been for the checkpoint delay), under the bind's lease,
// and then confirms it to the source.
//
// Goroutines: the assembler marks positions from the source's goroutine,
// the lane acknowledges from its own (ack), Stats reads from any. mu
// guards what they share and is never held across I/O. Saves are made
// one at a time, by construction: by the writer (run) while it runs, and
// by the pipeline's teardown once it has returned; the assembler's one
// save (a new bind's first position, see keepalive) goes through the
// writer while there is one.
type checkpointer struct {
	key   string // the store key (CheckpointKey)
	owner string // this instance (WithOwner), written into each checkpoint
	store CheckpointStore
	lease Lease                            // nil when the store does not lease
	src   interface{ Confirm(pos string) } // told each position saved
	delay time.Duration                    // WithCheckpointDelay
	log   *slog.Logger

	// acked is the lane's watermark: the events with LaneSeq 1..acked are
	// stored.
	acked atomic.Uint64

	asks    chan chan<- error // saveNow's requests to the writer
	stopped chan struct{}     // closed when the writer has returned

	mu      sync.Mutex
	pending []mark      // positions whose events are not all acknowledged, oldest first
	acks    []ackedMark // acknowledged positions waiting out the delay, oldest first
	ready   mark        // the newest position past the delay, saved or not
	// readySnaps is the newest snapshot progress past the delay, nil
	// while none was noted.
	readySnaps *[]SnapshotProgress
	last       mark        // the last mark added, for snapshot progress
	cp         Checkpoint  // the checkpoint last written (or loaded)
	saves      uint64      // checkpoints written since the bind started
	clock      commitClock // for Lag.Behind
}

// mark is a position the bind may resume from once the lane has
// acknowledged every event up to seq.
//
// It also carries what a checkpoint keeps beside the position: the
// snapshots' progress (snaps, nil when unchanged since the mark before),
// noted once the events of a chunk are published, saved with the position
// under the same compare-and-set.
type mark struct {
	seq     uint64
	pos     string
	commits uint64 // the commits handed over up to pos (see commitClock)
	snaps   *[]SnapshotProgress
}

// ackedMark is a mark whose events were all seen acknowledged at at.
type ackedMark struct {
	mark
	at time.Time
}

func newCheckpointer(key, owner string, store CheckpointStore, lease Lease, src interface{ Confirm(string) }, delay time.Duration, log *slog.Logger) *checkpointer {
	return &checkpointer{key: key, owner: owner, store: store, lease: lease, src: src, delay: delay, log: log,
		asks: make(chan chan<- error), stopped: make(chan struct{})}
}

// commit notes a transaction committed at at (zero when the source does
// not say) whose events end with the event seq: pos may be saved once they
// are acknowledged. A commit without a position is nowhere to resume from.
func (c *checkpointer) commit(seq uint64, pos string, at time.Time) {
	if pos == "" {
		return
	}
	c.mu.Lock()
	c.add(mark{seq: seq, pos: pos, commits: c.clock.commit(at)})
	c.mu.Unlock()
}

// keepalive notes pos, reached with no transaction open, after the event
// seq. The bind's very first position (a source that keeps no position on
// its server, like a binlog reader, starts with it) is saved at once,
// before the source reads on, so that a stop before the first commit
// resumes there.
func (c *checkpointer) keepalive(ctx context.Context, seq uint64, pos string) error {
	c.mu.Lock()
	c.add(mark{seq: seq, pos: pos, commits: c.clock.count()})
	first := seq == 0 && c.cp.Position == ""
	c.mu.Unlock()
	if first {
		return c.saveNow(ctx)
	}
	return nil
}

// add appends m; a mark with no event since the last one replaces it.
// c.mu is held.
func (c *checkpointer) add(m mark) {
	c.last = m
	if n := len(c.pending); n > 0 && c.pending[n-1].seq == m.seq {
		if m.snaps == nil {
			m.snaps = c.pending[n-1].snaps
		}
		c.pending[n-1] = m
		return
	}
	c.pending = append(c.pending, m)
}

// snapshots notes the snapshots' progress after the event seq: it is saved
// with the next checkpoint once that event is acknowledged. Called from
// the assembler's goroutine.
func (c *checkpointer) snapshots(seq uint64, progress []SnapshotProgress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.last
	m.seq, m.snaps = seq, &progress
	if m.pos == "" {
		m.pos = c.cp.Position
	}
	c.add(m)
}

// ack moves the watermark to n and reports whether it moved. The lane
// calls it (through the pipeline) never concurrently with itself.
func (c *checkpointer) ack(n uint64) bool {
	if n <= c.acked.Load() {
		return false
	}
	c.acked.Store(n)
	return true
}

// readyAt returns the newest position whose events were all acknowledged
// at least delay before now, and the checkpoint last written.
func (c *checkpointer) readyAt(now time.Time, delay time.Duration) (mark, Checkpoint) {
	acked := c.acked.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	i := 0
	for i < len(c.pending) && c.pending[i].seq <= acked {
		i++
	}
	if i > 0 {
		// Only the newest position acknowledged by now matters, with the
		// newest snapshot progress.
		m := c.pending[i-1]
		for k := i - 1; k >= 0 && m.snaps == nil; k-- {
			m.snaps = c.pending[k].snaps
		}
		c.acks = append(c.acks, ackedMark{mark: m, at: now})
		c.pending = append(c.pending[:0], c.pending[i:]...)
	}
	j := 0
	for j < len(c.acks) && !c.acks[j].at.After(now.Add(-delay)) {
		c.ready = c.acks[j].mark
		if c.ready.snaps != nil {
			c.readySnaps = c.ready.snaps
		}
		j++
	}
	if j > 0 {
		c.acks = append(c.acks[:0], c.acks[j:]...)
	}
	return c.ready, c.cp
}

// errLeaseUncertain is why no checkpoint is written while the bind's lease
// could not be renewed for most of its time to live.
var errLeaseUncertain = errors.New("the bind's lease could not be renewed lately: no checkpoint until it is")

// save writes the newest position whose events were all acknowledged at
// least delay ago, and tells the source. It writes nothing once the bind's
// lease is lost, nor while it is uncertain (see Lease.Held): a fenced
// instance must not move the checkpoint under the new holder's feet. One
// save at a time (see checkpointer).
func (c *checkpointer) save(ctx context.Context, delay time.Duration) error {
	if c.lease != nil {
		select {
		case <-c.lease.Lost():
			return fmt.Errorf("%w: the bind's lease was taken over: checkpoint not written", ErrFenced)
		default:
		}
		if !c.lease.Held() {
			return errLeaseUncertain
		}
	}
	ready, cp := c.readyAt(time.Now(), delay)
	c.mu.Lock()
	snaps := c.readySnaps
	c.mu.Unlock()
	snapsMoved := snaps != nil && !equalProgress(*snaps, cp.Snapshots)
	if ready.pos == "" {
		return nil
	}
	if ready.pos == cp.Position && !snapsMoved {
		c.mu.Lock()
		c.clock.confirmed(ready.commits) // saved and confirmed before
		c.mu.Unlock()
		return nil
	}
	cp.Position, cp.Time, cp.Owner = ready.pos, time.Now().UTC(), c.owner
	if snaps != nil {
		cp.Snapshots = *snaps
	}
	saved, err := c.store.Save(ctx, c.key, cp)
	if errors.Is(err, ErrCheckpointConflict) {
		saved, err = c.overwriteStray(ctx, cp)
	}
	if errors.Is(err, ErrCheckpointConflict) {
		return fmt.Errorf("%w: checkpoint %s was written by someone else (%w): another trackerd is running this bind; stopping",
			ErrFenced, c.key, ErrCheckpointConflict)
	}
	if err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	c.mu.Lock()
	c.cp = saved
	c.saves++
	c.mu.Unlock()
	c.src.Confirm(ready.pos)
	c.mu.Lock()
	c.clock.confirmed(ready.commits)
	c.mu.Unlock()
	return nil
}

// overwriteStray handles a conflict on the first writes after this instance
// took the bind over: the instance that held it before may have written
// one last checkpoint after its lease expired (a paused or partitioned
// holder stops writing once it cannot know it still holds the lease, but
// clocks may disagree). Such a write is by another owner, while this
// instance holds the lease: it is overwritten, which is safe, since both
// positions are fully published and a position further back is only read
// again with the same event ids. A write by this owner, or any conflict
// while the lease is not held, is another instance running the bind.
func (c *checkpointer) overwriteStray(ctx context.Context, cp Checkpoint) (Checkpoint, error) {
	if c.lease == nil || !c.lease.Held() {
		return Checkpoint{}, ErrCheckpointConflict
	}
	cur, err := c.store.Load(ctx, c.key)
	if err != nil || cur.Owner == "" || cur.Owner == c.owner {
		return Checkpoint{}, ErrCheckpointConflict
	}
	c.log.Warn("the checkpoint was written by the bind's former holder after this instance took over: overwriting it",
		slog.String("writer", cur.Owner), slog.String("its_position", cur.Position), slog.String("position", cp.Position))
	cp.Revision = cur.Revision
	return c.store.Save(ctx, c.key, cp)
}

// run is the writer: it saves the checkpoint every interval, and when
// asked (saveNow), until ctx ends or the bind's lease is lost. It calls
// tick at each tick first. Only a conflict (another instance) is fatal;
// other failures are retried on the next tick.
func (c *checkpointer) run(ctx context.Context, every time.Duration, tick func(time.Time)) error {
	defer close(c.stopped)
	t := time.NewTicker(every)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-c.lost():
			return nil // the pipeline stops the bind; not one more write
		case now := <-t.C:
			tick(now)
		case reply := <-c.asks:
			reply <- c.save(ctx, 0) // the asker handles the error
			continue
		}
		err := c.save(ctx, c.delay)
		switch {
		case err == nil:
			failures = 0
		case errors.Is(err, ErrCheckpointConflict), errors.Is(err, ErrFenced):
			return err
		case ctx.Err() != nil:
			return nil
		default:
			failures++
			if failures == 1 || failures%50 == 0 {
				c.log.Warn("checkpoint not written; retrying", slog.Any("err", err), slog.Int("attempts", failures))
			}
		}
	}
}

// saveNow saves without the checkpoint delay and waits for it: through the
// writer while it runs, itself once the writer has returned (then nothing
// else saves while a record is processed: the teardown saves after the
// bind stopped reading).
func (c *checkpointer) saveNow(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case c.asks <- reply:
	case <-c.stopped:
		return c.save(ctx, 0)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lost returns the channel closed if the bind's lease is taken away.
func (c *checkpointer) lost() <-chan struct{} {
	if c.lease == nil {
		return nil
	}
	return c.lease.Lost()
}

// position returns the position of the checkpoint last written (or
// loaded).
func (c *checkpointer) position() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cp.Position
}

// checkpointView is what Stats shows of a checkpointer.
type checkpointView struct {
	cp     Checkpoint
	saves  uint64
	acked  uint64
	behind time.Duration
}

func (c *checkpointer) view(now time.Time) checkpointView {
	c.mu.Lock()
	defer c.mu.Unlock()
	return checkpointView{cp: c.cp, saves: c.saves, acked: c.acked.Load(), behind: c.clock.behind(now)}
}

// equalProgress reports whether two lists of snapshot progress are equal.
func equalProgress(a, b []SnapshotProgress) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		x, y := a[i], b[i]
		if x.ID != y.ID || x.After != y.After || x.Rows != y.Rows || x.Resolved != y.Resolved || !slices.Equal(x.Tables, y.Tables) {
			return false
		}
	}
	return true
}
