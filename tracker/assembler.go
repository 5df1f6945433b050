package tracker

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/trackerd/trackerd/internal/backoff"
)

// assembler turns one bind's records into events and receiver calls. It
// numbers each change within its transaction and stamps what the tracker
// owns (see Record); publishes a change's before_commit event as it
// arrives and its after_commit event when its transaction commits, each
// with the receivers of that signal; retracts what a rollback withdraws;
// and tells the checkpointer the positions it passes, each with the lane
// sequence of the last event before it.
//
// It is owned by one goroutine, the source's (through the pipeline's
// handler): nothing in it is locked, and it starts none. Its counters are
// atomics, for Stats.
type assembler struct {
	bind   string
	origin string // the origin of event ids (Checkpoint.Origin)
	log    *slog.Logger
	lane   Lane      // nil without a sink: nothing is published
	marks  positions // the checkpointer
	before *Signal
	after  *Signal
	// Which phases are published (SIGNALS; rollback with before_commit).
	publishBefore, publishAfter, publishRollback bool
	echo                                         bool   // ECHO
	spillDir                                     string // where large transactions spill
	spillLimit                                   int64  // SPILL_THRESHOLD
	debug                                        *debugRing
	lat                                          *ackLatency

	laneSeq uint64             // the LaneSeq of the last event published
	open    map[string]*openTx // by TxKey
	cur     *openTx            // the open transaction that is not streamed
	scratch []byte
	// ev and cc are reused for every event: a lane does not keep the
	// event it is given (see Lane.Publish).
	ev Event
	cc Change

	n counters
}

// positions is where the assembler puts the positions it passes: the
// checkpointer.
type positions interface {
	// commit notes a transaction committed at at, ending at pos, whose
	// events end with the event seq.
	commit(seq uint64, pos string, at time.Time)
	// keepalive notes pos, reached with no transaction open, after the
	// event seq; it may save it before it returns.
	keepalive(ctx context.Context, seq uint64, pos string) error
}

// counters are an assembler's figures for Stats, read from any goroutine.
type counters struct {
	changes, txs, published, retries atomic.Uint64
	snapshotRows                     atomic.Uint64
	spilled, openTxs                 atomic.Int64
}

type openTx struct {
	info   TxInfo
	next   int
	buf    *txBuffer
	source string // the source kind, from its first change
	// index is the Index of the last change, for the check that indexes
	// grow (see Change.Index).
	index int64
	// retractions counts the rollback events published for the
	// transaction: the index of the next one's id.
	retractions int64
}

// handle processes one record. ctx bounds its blocking calls: the lane's
// back-pressure, receivers and their retries, a save.
//
// A record kind that publishes at a point of the stream what is not a
// transaction's (a snapshot's rows, held until the stream reaches the
// place of their read) fits here as one more case: publish its events with
// publish and the after receivers, then note what the checkpoint should
// keep with the position that follows (positions).
func (a *assembler) handle(ctx context.Context, r Record) error {
	switch r.Kind {
	case RecordBegin:
		a.begin(r.Tx)
		return nil
	case RecordChange:
		if r.Change == nil {
			return errors.New("source handed a change record without a change")
		}
		return a.change(ctx, r.Change, r.Decode)
	case RecordCommit:
		return a.commit(ctx, r.Tx, r.Pos)
	case RecordRollback:
		return a.rollback(ctx, r.Tx)
	case RecordKeepalive:
		if a.cur == nil && r.Pos != "" {
			return a.marks.keepalive(ctx, a.laneSeq, r.Pos)
		}
		return nil
	}
	return fmt.Errorf("source handed an unknown record kind %d", r.Kind)
}

func (a *assembler) begin(info TxInfo) {
	if old := a.open[info.TxKey]; old != nil {
		// The source reconnected and sends the transaction again from its
		// start: the events already sent carry the same ids.
		a.discard(old)
	}
	if !info.Streamed && a.cur != nil {
		a.log.Debug("discarding a partly received transaction after a reconnect", slog.String("txkey", a.cur.info.TxKey))
		a.discard(a.cur)
	}
	tx := &openTx{info: info, buf: newTxBuffer(a.spillDir, a.spillLimit)}
	a.open[info.TxKey] = tx
	if !info.Streamed {
		a.cur = tx
	}
	a.n.openTxs.Store(int64(len(a.open)))
}

func (a *assembler) discard(tx *openTx) {
	tx.buf.close()
	delete(a.open, tx.info.TxKey)
	if a.cur == tx {
		a.cur = nil
	}
	a.n.openTxs.Store(int64(len(a.open)))
}

func (a *assembler) txFor(key string) (*openTx, error) {
	if tx := a.open[key]; tx != nil {
		return tx, nil
	}
	if key == "" && a.cur != nil {
		return a.cur, nil
	}
	return nil, fmt.Errorf("source handed a change of transaction %q, which is not open", key)
}

func (a *assembler) change(ctx context.Context, c *Change, decode time.Duration) error {
	var t0 time.Time
	if a.debug != nil {
		t0 = time.Now()
	}
	tx, err := a.txFor(c.TxKey)
	if err != nil {
		return err
	}
	c.Bind = a.bind
	c.Origin = a.origin
	c.Seq = tx.next
	if tx.next > 0 && c.Index <= tx.index {
		// A source that does not number its changes (see Change.Index),
		// or a bug: ids must stay unique within the transaction.
		if c.Index != 0 {
			a.log.Warn("source handed a change index that does not grow; using the next one",
				slog.String("txkey", c.TxKey), slog.Int64("index", c.Index), slog.Int64("previous", tx.index))
		}
		c.Index = tx.index + 1
	}
	tx.index = c.Index
	tx.next++
	if tx.source == "" {
		tx.source = c.Source
	}
	// The transaction's, stamped here (see Record): a source leaves them
	// empty, TxKey where its changes cannot interleave.
	if c.TxKey == "" {
		c.TxKey = tx.info.TxKey
	}
	c.TxID = tx.info.TxID
	c.CommitTime = tx.info.CommitTime
	a.scratch = c.AppendJSON(a.scratch[:0])
	data := bytes.Clone(a.scratch)
	a.n.changes.Add(1)
	if a.echo {
		a.echoChange(ctx, c)
	}
	if a.publishBefore {
		a.ev = Event{Phase: PhaseBeforeCommit, Change: c, Data: data, ID: EventID(a.bind, a.origin, c.TxKey, c.Index, PhaseBeforeCommit)}
		if err := a.publish(ctx, &a.ev, t0, decode); err != nil {
			return err
		}
	}
	if err := a.callChange(ctx, a.before.snapshot(), c); err != nil {
		return err
	}
	if err := tx.buf.add(c, data); err != nil {
		return err
	}
	if tx.buf.file != nil {
		a.n.spilled.Store(tx.buf.spilledBytes())
	}
	return nil
}

// publish hands ev to the bind's lane, as the event after the last one;
// without a sink there is nothing to publish. t0 is when the change
// reached the tracker and decode how long its source took to decode it,
// both for DebugEvents.
func (a *assembler) publish(ctx context.Context, ev *Event, t0 time.Time, decode time.Duration) error {
	if a.lane == nil {
		return nil
	}
	a.laneSeq++
	ev.LaneSeq = a.laneSeq
	slot := -1
	if a.debug != nil {
		// Recorded before the lane sees it: its ack may come at once.
		slot = a.debug.add(a.bind, ev, decode, t0, time.Now())
	}
	if err := a.lane.Publish(ctx, ev); err != nil {
		return fmt.Errorf("publish %s: %w", ev.ID, err)
	}
	a.n.published.Add(1)
	if slot >= 0 {
		a.debug.published(slot, ev.LaneSeq, time.Now())
	}
	return nil
}

func (a *assembler) commit(ctx context.Context, info TxInfo, pos string) error {
	tx := a.open[info.TxKey]
	if tx == nil && info.TxKey == "" && !info.Streamed {
		tx = a.cur
	}
	if tx == nil {
		// Nothing of it reached us (an empty transaction, or a streamed
		// or prepared one none of whose changes was handed over; never
		// the transaction in progress): only its position matters.
		a.marks.commit(a.laneSeq, pos, info.CommitTime)
		return nil
	}
	commitTime := info.CommitTime
	if commitTime.IsZero() {
		commitTime = tx.info.CommitTime
	}
	total := tx.buf.len()
	txv := Tx{Bind: a.bind, TxID: tx.info.TxID, TxKey: tx.info.TxKey, CommitTime: commitTime, Pos: pos, Total: total,
		changes: func(yield func(Change, error) bool) {
			err := tx.buf.each(func(c *Change, _ []byte) error {
				cc := *c
				cc.CommitTime = commitTime
				if !yield(cc, nil) {
					return errStopIter
				}
				return nil
			})
			if err != nil && !errors.Is(err, errStopIter) {
				yield(Change{}, err)
			}
		}}
	before := a.before.snapshot()
	if _, hasTx := hasKinds(before); hasTx {
		if err := a.callTx(ctx, before, txv); err != nil {
			return err
		}
	}
	after := a.after.snapshot()
	err := tx.buf.each(func(c *Change, data []byte) error {
		var t0 time.Time
		if a.debug != nil {
			t0 = time.Now()
		}
		cc := &a.cc
		*cc = *c
		if !cc.CommitTime.Equal(commitTime) || data == nil {
			cc.CommitTime = commitTime
			a.scratch = cc.AppendJSON(a.scratch[:0])
			data = a.scratch // used before the next change reuses it
		}
		if a.publishAfter {
			a.ev = Event{Phase: PhaseAfterCommit, Change: cc, Data: data, TxTotal: total, ID: EventID(a.bind, a.origin, cc.TxKey, cc.Index, PhaseAfterCommit)}
			if err := a.publish(ctx, &a.ev, t0, 0); err != nil {
				return err
			}
		}
		return a.callChange(ctx, after, cc)
	})
	if err != nil {
		return err
	}
	if a.publishAfter && total > 0 && a.lane != nil {
		a.lat.published(a.laneSeq, commitTime)
	}
	if _, hasTx := hasKinds(after); hasTx {
		if err := a.callTx(ctx, after, txv); err != nil {
			return err
		}
	}
	a.discard(tx)
	a.n.spilled.Store(0)
	a.n.txs.Add(1)
	a.marks.commit(a.laneSeq, pos, commitTime)
	return nil
}

var errStopIter = errors.New("iteration stopped")

func (a *assembler) rollback(ctx context.Context, info TxInfo) error {
	tx := a.open[info.TxKey]
	if tx == nil {
		return nil
	}
	var ranges []SeqRange
	if info.SubTx == "" {
		if tx.next > 0 {
			ranges = []SeqRange{{From: 0, To: tx.next - 1}}
		}
		a.discard(tx)
	} else {
		ranges = tx.buf.retractSubTx(info.SubTx)
	}
	if len(ranges) == 0 || !a.publishRollback {
		return nil
	}
	c := &Change{Bind: a.bind, Source: tx.source, Origin: a.origin, TxID: tx.info.TxID, TxKey: tx.info.TxKey, SubTx: info.SubTx, Seq: tx.next}
	// Each retraction has an id of its own: a ROLLBACK TO a savepoint
	// followed by the whole transaction's ROLLBACK are two events.
	index := tx.retractions
	tx.retractions++
	a.log.Info("transaction rolled back: retracting its before_commit events",
		slog.String("txkey", c.TxKey), slog.String("subtx", info.SubTx), slog.Any("ranges", ranges))
	a.ev = Event{Phase: PhaseRollback, Change: c, Retract: &Retraction{TxKey: c.TxKey, SubTx: info.SubTx, Ranges: ranges},
		ID: EventID(a.bind, a.origin, c.TxKey, index, PhaseRollback)}
	return a.publish(ctx, &a.ev, time.Now(), 0)
}

// callChange calls per-change receivers in order, each until it succeeds.
func (a *assembler) callChange(ctx context.Context, rs []signalEntry, c *Change) error {
	for _, e := range rs {
		if e.fn == nil {
			continue
		}
		if err := a.retry(ctx, func() error { return e.fn(ctx, *c) }); err != nil {
			return err
		}
	}
	return nil
}

func (a *assembler) callTx(ctx context.Context, rs []signalEntry, tx Tx) error {
	for _, e := range rs {
		if e.tx == nil {
			continue
		}
		if err := a.retry(ctx, func() error { return e.tx(ctx, tx) }); err != nil {
			return err
		}
	}
	return nil
}

// retry calls fn until it returns nil, waiting between attempts as
// backoff.Receiver says, or until ctx ends. A panicking receiver counts as
// an error.
func (a *assembler) retry(ctx context.Context, fn func() error) error {
	var b *backoff.Backoff
	for attempt := 1; ; attempt++ {
		err := safeCall(fn)
		if err == nil {
			return nil
		}
		a.n.retries.Add(1)
		a.log.Warn("receiver failed; holding the bind and retrying", slog.Any("err", err), slog.Int("attempt", attempt))
		if b == nil {
			b = backoff.Receiver.New()
		}
		if err := b.Wait(ctx); err != nil {
			return err
		}
	}
}

func safeCall(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("receiver panicked: %v", r)
		}
	}()
	return fn()
}

// snapshotRows publishes the rows of a snapshot's chunk as after_commit
// events of op snapshot, at this point of the stream (see snapshot.go),
// with the after_commit receivers. pos is the chunk's read position.
func (a *assembler) snapshotRows(ctx context.Context, snapshot, pos string, rows []*Change) error {
	after := a.after.snapshot()
	txKey := "snapshot-" + snapshot
	for _, c := range rows {
		c.Op = OpSnapshot
		c.Bind, c.Origin = a.bind, a.origin
		c.TxKey, c.TxID, c.Pos, c.Seq = txKey, txKey, pos, 0
		a.n.snapshotRows.Add(1)
		if a.publishAfter {
			a.scratch = c.AppendJSON(a.scratch[:0])
			a.ev = Event{Phase: PhaseAfterCommit, Change: c, Data: a.scratch, TxTotal: 1, Snapshot: snapshot,
				ID: SnapshotEventID(a.bind, a.origin, snapshot, c)}
			if err := a.publish(ctx, &a.ev, time.Time{}, 0); err != nil {
				return err
			}
		}
		if err := a.callChange(ctx, after, c); err != nil {
			return err
		}
	}
	return nil
}

// lifecycle publishes a snapshot's lifecycle event.
func (a *assembler) lifecycle(ctx context.Context, l *Lifecycle, source string) error {
	l.Bind = a.bind
	if !a.publishAfter {
		return nil
	}
	a.cc = Change{Bind: a.bind, Origin: a.origin, Source: source}
	a.ev = Event{Phase: PhaseAfterCommit, Change: &a.cc, Lifecycle: l, ID: LifecycleEventID(a.bind, a.origin, l)}
	return a.publish(ctx, &a.ev, time.Time{}, 0)
}
