package tracker

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/trackerd/trackerd/binds"
)

// shutdownTimeout bounds how long a stopping bind waits for outstanding acks
// and its final checkpoint.
const shutdownTimeout = 30 * time.Second

// pipeline runs one bind: its source's records in, events to its lane,
// checkpoints out. Handle runs on the source's goroutine only; the
// checkpointer and the lane's ack callback run on others.
type pipeline struct {
	t        *Tracker
	bind     binds.Bind
	log      *slog.Logger
	src      Source
	lane     Lane
	store    CheckpointStore
	key      string
	identity string
	origin   string // the origin of event ids (Checkpoint.Origin)
	from     string
	lease    Lease // nil when the store does not lease

	// Owned by Handle.
	laneSeq uint64
	open    map[string]*openTx
	cur     *openTx // the open transaction that is not streamed
	scratch []byte
	// ev and cc are reused for every event: a lane does not keep the
	// event it is given (see Lane.Publish).
	ev Event
	cc Change

	// runCtx ends when the bind must stop; srcCtx, later, ends the source.
	runCtx   context.Context
	srcCtx   context.Context
	handling sync.Mutex

	acked atomic.Uint64

	st *bindState

	mu      sync.Mutex // guards pending, ackedAt, ready, cp
	pending []pendingPos
	// ackedAt holds acknowledged positions (oldest first) with when they were
	// seen acknowledged, while they wait out the checkpoint delay.
	ackedAt []ackedPos
	ready   string // acknowledged position not yet saved
	cp      Checkpoint

	cpMu sync.Mutex // one checkpoint write at a time

	// clock holds the commit times of what is not yet confirmed, for
	// Lag.Behind; pendingPos.commits and ackedPos.commits count the
	// commits each position confirms.
	clock        commitClock
	readyCommits uint64 // the commits ready confirms; guarded by mu

	changes, txs, published, checkpoints, retries atomic.Uint64
	spilled                                       atomic.Int64
	openTxs                                       atomic.Int64

	rate meter       // events/s, for Stats
	lat  *ackLatency // commit to ack, for Stats
}

// pendingPos is a position that may be checkpointed once the lane has acked
// every event up to seq.
type pendingPos struct {
	seq     uint64
	pos     string
	commits uint64 // commits handed over up to pos (see commitClock)
}

// ackedPos is a position whose events were all acknowledged at at.
type ackedPos struct {
	pos     string
	at      time.Time
	commits uint64
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

func (t *Tracker) openPipeline(ctx context.Context, b binds.Bind, st *bindState) (*pipeline, error) {
	log := t.log.With(slog.String("bind", b.Key))
	src, err := t.sources[b.Kind](ctx, b, SourceOptions{
		Logger:        log,
		NativeUnicode: t.cfg.NativeUnicode,
		Report:        st.report,
	})
	if err != nil {
		return nil, fmt.Errorf("bind %s: %w", b.Key, err)
	}
	p := &pipeline{
		t:        t,
		bind:     b,
		log:      log,
		src:      src,
		store:    t.store,
		identity: src.Identity(),
		open:     make(map[string]*openTx),
		st:       st,
		lat:      newAckLatency(),
	}
	p.key = CheckpointKey(b.Key, p.identity)
	if l, ok := p.store.(Leaser); ok {
		lease, err := l.Lease(ctx, p.key, t.owner)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("bind %s: %w", b.Key, err)
		}
		p.lease = lease
	}
	cp, err := p.store.Load(ctx, p.key)
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		cp, err = p.adopt(ctx)
		if err != nil {
			p.close(ctx)
			return nil, fmt.Errorf("bind %s: %w", b.Key, err)
		}
		if cp.Origin == "" {
			// A new bind: its origin is fixed now. The nonce keeps clones
			// apart: PostgreSQL clusters restored from one backup share
			// their system identifier, database and slot names.
			cp.Origin = Origin(p.identity + "\x00" + nonce())
		}
		if sp, ok := src.(StartPositioner); ok && cp.Position == "" {
			cp.Position = sp.StartPosition()
		}
		// Written before any event is published, so that events sent
		// again after a crash carry the same origin (and start).
		cp.Time, cp.Owner = time.Now().UTC(), t.owner
		if cp, err = p.store.Save(ctx, p.key, cp); err != nil {
			p.close(ctx)
			if errors.Is(err, ErrCheckpointConflict) {
				err = fmt.Errorf("%w: %w", ErrFenced, err)
			}
			return nil, fmt.Errorf("bind %s: write the new checkpoint: %w", b.Key, err)
		}
		if cp.Position == "" {
			log.Info("no checkpoint: starting from the source's current position", slog.String("source", p.identity), slog.String("origin", cp.Origin))
		}
	case err != nil:
		p.close(ctx)
		return nil, fmt.Errorf("bind %s: load checkpoint: %w", b.Key, err)
	case cp.Source != p.identity:
		p.close(ctx)
		return nil, ConfigError(fmt.Errorf("bind %s: checkpoint %s belongs to source %q, not %q: remove it or point the bind back",
			b.Key, p.key, cp.Source, p.identity))
	case cp.Position == "":
		log.Info("no position in the checkpoint yet: starting from the source's current position", slog.String("source", p.identity))
	default:
		log.Info("resuming from checkpoint", slog.String("position", cp.Position), slog.Time("written", cp.Time))
	}
	if cp.Origin == "" {
		cp.Origin = Origin(p.identity) // a checkpoint of trackerd before 2026-12
	}
	p.origin = cp.Origin
	p.cp = cp
	p.from = cp.Position
	return p, nil
}

// adopt returns the checkpoint a bind without one under its source's
// identity starts from: one of its checkpoints under another identity that
// the source recognises as its own server's (see Adopter), or a new one.
// It never starts afresh in silence beside a checkpoint of the same
// server: the source either adopts it or says why it cannot be resumed.
func (p *pipeline) adopt(ctx context.Context) (Checkpoint, error) {
	fresh := Checkpoint{Bind: p.bind.Key, Source: p.identity}
	lister, ok := p.store.(CheckpointLister)
	if !ok {
		return fresh, nil
	}
	all, err := lister.ListCheckpoints(ctx, p.bind.Key)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("list checkpoints: %w", err)
	}
	var others []StoredCheckpoint
	for _, sc := range all {
		if sc.Key != p.key && sc.Position != "" {
			others = append(others, sc)
		}
	}
	if len(others) == 0 {
		return fresh, nil
	}
	sort.Slice(others, func(i, j int) bool { return others[i].Time.After(others[j].Time) })
	adopter, ok := p.src.(Adopter)
	for _, sc := range others {
		if sc.Holder != "" {
			continue // another running instance's bind, on another server
		}
		if !ok {
			break
		}
		err := adopter.Adopt(ctx, sc.Checkpoint)
		switch {
		case errors.Is(err, ErrOtherSource):
			continue
		case err != nil:
			return Checkpoint{}, ConfigError(fmt.Errorf(
				"no checkpoint for source %q, but checkpoint %s of the same server (as %q, at %s, written %s) cannot be resumed here: %w; "+
					"starting at the server's current position would skip every change since: if that is what you want, remove checkpoint %s (trackerd reset --bind %s --to current)",
				p.identity, sc.Key, sc.Source, sc.Position, sc.Time.Format(time.RFC3339), err, sc.Key, p.bind.Key))
		}
		p.log.Warn("resuming from the checkpoint of this server under its former identity",
			slog.String("former", sc.Source), slog.String("source", p.identity),
			slog.String("position", sc.Position), slog.String("former_key", sc.Key))
		cp := sc.Checkpoint
		cp.Source, cp.Revision = p.identity, 0
		if cp.Origin == "" {
			cp.Origin = Origin(sc.Source) // the ids it published carry its origin
		}
		return cp, nil
	}
	var names []string
	for _, sc := range others {
		names = append(names, fmt.Sprintf("%s (%s, at %s)", sc.Key, sc.Source, sc.Position))
	}
	p.log.Warn("no checkpoint for this source; the bind has checkpoints of other sources, which are left alone: starting from the source's current position",
		slog.String("source", p.identity), slog.Any("others", names))
	return fresh, nil
}

// close releases what openPipeline acquired, for a pipeline that will not
// run.
func (p *pipeline) close(ctx context.Context) {
	p.src.Close()
	if p.lease != nil {
		p.lease.Release(context.WithoutCancel(ctx))
	}
}

// savedPosition is the position of the last checkpoint written (or loaded).
func (p *pipeline) savedPosition() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cp.Position
}

// nonce returns 64 random bits in hex.
func nonce() string {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// lost returns the channel closed if the bind's lease is taken away.
func (p *pipeline) lost() <-chan struct{} {
	if p.lease == nil {
		return nil
	}
	return p.lease.Lost()
}

func (p *pipeline) setState(s string) { p.st.setPhase(s, nil) }

// run streams until ctx ends or the source fails, then drains.
func (p *pipeline) run(ctx context.Context) (err error) {
	defer p.close(ctx)
	if p.t.sink != nil {
		lane, err := p.t.sink.OpenLane(ctx, p.bind.Key, p.onAck)
		if err != nil {
			p.setState(StateFailed)
			return fmt.Errorf("open sink lane: %w", err)
		}
		p.lane = lane
	}

	p.runCtx = ctx
	srcCtx, cancelSrc := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSrc()
	p.srcCtx = srcCtx

	srcDone := make(chan error, 1)
	go func() { srcDone <- p.src.Run(srcCtx, p.from, HandlerFunc(p.Handle)) }()
	cpCtx, cancelCP := context.WithCancel(context.WithoutCancel(ctx))
	cpDone := make(chan error, 1)
	go func() { cpDone <- p.checkpointer(cpCtx) }()
	p.setState(StateStreaming)
	p.log.Info("streaming", slog.String("from", p.from))

	var runErr error
	srcReturned := false
	select {
	case <-ctx.Done():
	case runErr = <-srcDone:
		srcReturned = true
	case runErr = <-cpDone:
		cpDone <- nil
	case <-p.lost():
		runErr = fmt.Errorf("%w: the bind's lease was taken over by another instance; stopping", ErrFenced)
	}
	p.setState(StateStopping)

	// Stop reading: Handle no longer processes records, and the one in
	// progress (if any) finishes or gives up on its blocking calls.
	p.handling.Lock()
	p.handling.Unlock() //nolint:staticcheck // a barrier: wait for the record in progress

	drainCtx, cancelDrain := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancelDrain()
	if p.lane != nil {
		if err := p.lane.Close(drainCtx); err != nil {
			p.log.Warn("stopping with unacknowledged events; they are sent again on restart", slog.Any("err", err))
		}
	}
	cancelCP()
	if err := <-cpDone; err != nil && runErr == nil {
		runErr = err
	}
	if err := p.checkpointNow(drainCtx); err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
		runErr = err
	}
	cancelSrc()
	if !srcReturned {
		if err := <-srcDone; err != nil && runErr == nil && !errors.Is(err, context.Canceled) {
			runErr = err
		}
	}
	if runErr != nil && ctx.Err() == nil {
		p.st.setPhase(StateFailed, runErr)
		return runErr
	}
	p.setState(StateStopped)
	p.log.Info("stopped", slog.String("checkpoint", p.cp.Position))
	return nil
}

// Handle is the source's Handler. Once the bind is stopping it processes
// nothing more: it blocks until the source is told to stop, so the source
// keeps its connection (and its status updates) while the final checkpoint
// is written.
func (p *pipeline) Handle(_ context.Context, r Record) error {
	if p.runCtx.Err() == nil {
		p.handling.Lock()
		err := p.handle(p.runCtx, r)
		p.handling.Unlock()
		if err == nil || p.runCtx.Err() == nil {
			return err
		}
	}
	<-p.srcCtx.Done()
	return p.srcCtx.Err()
}

func (p *pipeline) handle(ctx context.Context, r Record) error {
	switch r.Kind {
	case RecordBegin:
		p.begin(r.Tx)
		return nil
	case RecordChange:
		if r.Change == nil {
			return errors.New("source handed a change record without a change")
		}
		return p.change(ctx, r.Change, r.Decode)
	case RecordCommit:
		return p.commit(ctx, r.Tx, r.Pos)
	case RecordRollback:
		return p.rollback(ctx, r.Tx)
	case RecordKeepalive:
		if p.cur == nil && r.Pos != "" {
			p.addPending(r.Pos, p.clock.count())
			if p.laneSeq == 0 && p.savedPosition() == "" {
				// The bind's very first position (a source that keeps no
				// position on the server, like a binlog reader, starts with
				// it): write it now, before anything is read, so that a stop
				// before the first commit resumes here.
				return p.checkpointNow(ctx)
			}
		}
		return nil
	}
	return fmt.Errorf("source handed an unknown record kind %d", r.Kind)
}

func (p *pipeline) begin(info TxInfo) {
	if old := p.open[info.TxKey]; old != nil {
		// The source reconnected and sends the transaction again from its
		// start: the events already sent carry the same ids.
		p.discard(old)
	}
	if !info.Streamed && p.cur != nil {
		p.log.Debug("discarding a partly received transaction after a reconnect", slog.String("txkey", p.cur.info.TxKey))
		p.discard(p.cur)
	}
	tx := &openTx{info: info, buf: newTxBuffer(p.t.spill, p.spillLimit())}
	p.open[info.TxKey] = tx
	if !info.Streamed {
		p.cur = tx
	}
	p.openTxs.Store(int64(len(p.open)))
}

func (p *pipeline) spillLimit() int64 {
	if n := p.t.cfg.SpillThreshold; n > 0 {
		return n
	}
	return 16 << 20
}

func (p *pipeline) discard(tx *openTx) {
	tx.buf.close()
	delete(p.open, tx.info.TxKey)
	if p.cur == tx {
		p.cur = nil
	}
	p.openTxs.Store(int64(len(p.open)))
}

func (p *pipeline) txFor(key string) (*openTx, error) {
	if tx := p.open[key]; tx != nil {
		return tx, nil
	}
	if key == "" && p.cur != nil {
		return p.cur, nil
	}
	return nil, fmt.Errorf("source handed a change of transaction %q, which is not open", key)
}

func (p *pipeline) change(ctx context.Context, c *Change, decode time.Duration) error {
	var t0 time.Time
	if p.t.debug != nil {
		t0 = time.Now()
	}
	tx, err := p.txFor(c.TxKey)
	if err != nil {
		return err
	}
	c.Bind = p.bind.Key
	c.Origin = p.origin
	c.Seq = tx.next
	if tx.next > 0 && c.Index <= tx.index {
		// A source that does not number its changes (see Change.Index),
		// or a bug: ids must stay unique within the transaction.
		if c.Index != 0 {
			p.log.Warn("source handed a change index that does not grow; using the next one",
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
	p.scratch = c.AppendJSON(p.scratch[:0])
	data := bytes.Clone(p.scratch)
	p.changes.Add(1)
	if p.t.cfg.Echo {
		p.echo(ctx, c)
	}
	if p.t.phases[PhaseBeforeCommit] {
		p.ev = Event{Phase: PhaseBeforeCommit, Change: c, Data: data, ID: EventID(p.bind.Key, p.origin, c.TxKey, c.Index, PhaseBeforeCommit)}
		if err := p.publish(ctx, &p.ev, t0, decode); err != nil {
			return err
		}
	}
	if err := p.callChange(ctx, p.t.BeforeCommit.snapshot(), c); err != nil {
		return err
	}
	if err := tx.buf.add(c, data); err != nil {
		return err
	}
	if tx.buf.file != nil {
		p.spilled.Store(tx.buf.spilledBytes())
	}
	return nil
}

// publish hands ev to the bind's lane; without a sink there is nothing to
// publish. t0 is when the change reached the tracker and decode how long its
// source took to decode it, both for DebugEvents.
func (p *pipeline) publish(ctx context.Context, ev *Event, t0 time.Time, decode time.Duration) error {
	if p.lane == nil {
		return nil
	}
	p.laneSeq++
	ev.LaneSeq = p.laneSeq
	slot := -1
	if p.t.debug != nil {
		// Recorded before the lane sees it: its ack may come at once.
		slot = p.t.debug.add(p.bind.Key, ev, decode, t0, time.Now())
	}
	if err := p.lane.Publish(ctx, ev); err != nil {
		return fmt.Errorf("publish %s: %w", ev.ID, err)
	}
	p.published.Add(1)
	if slot >= 0 {
		p.t.debug.published(slot, ev.LaneSeq, time.Now())
	}
	return nil
}

func (p *pipeline) commit(ctx context.Context, info TxInfo, pos string) error {
	tx := p.open[info.TxKey]
	if tx == nil && info.TxKey == "" && !info.Streamed {
		tx = p.cur
	}
	if tx == nil {
		// Nothing of it reached us (an empty transaction, or a streamed
		// or prepared one none of whose changes was handed over; never
		// the transaction in progress): only its position matters.
		if pos != "" {
			p.addPending(pos, p.clock.commit(info.CommitTime))
		}
		return nil
	}
	commitTime := info.CommitTime
	if commitTime.IsZero() {
		commitTime = tx.info.CommitTime
	}
	total := tx.buf.len()
	txv := Tx{Bind: p.bind.Key, TxID: tx.info.TxID, TxKey: tx.info.TxKey, CommitTime: commitTime, Pos: pos, Total: total,
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
	before := p.t.BeforeCommit.snapshot()
	if _, hasTx := hasKinds(before); hasTx {
		if err := p.callTx(ctx, before, txv); err != nil {
			return err
		}
	}
	after := p.t.AfterCommit.snapshot()
	publishAfter := p.t.phases[PhaseAfterCommit]
	err := tx.buf.each(func(c *Change, data []byte) error {
		var t0 time.Time
		if p.t.debug != nil {
			t0 = time.Now()
		}
		cc := &p.cc
		*cc = *c
		if !cc.CommitTime.Equal(commitTime) || data == nil {
			cc.CommitTime = commitTime
			p.scratch = cc.AppendJSON(p.scratch[:0])
			data = p.scratch // used before the next change reuses it
		}
		if publishAfter {
			p.ev = Event{Phase: PhaseAfterCommit, Change: cc, Data: data, TxTotal: total, ID: EventID(p.bind.Key, p.origin, cc.TxKey, cc.Index, PhaseAfterCommit)}
			if err := p.publish(ctx, &p.ev, t0, 0); err != nil {
				return err
			}
		}
		return p.callChange(ctx, after, cc)
	})
	if err != nil {
		return err
	}
	if publishAfter && total > 0 && p.lane != nil {
		p.lat.published(p.laneSeq, commitTime)
	}
	if _, hasTx := hasKinds(after); hasTx {
		if err := p.callTx(ctx, after, txv); err != nil {
			return err
		}
	}
	p.discard(tx)
	p.spilled.Store(0)
	p.txs.Add(1)
	if pos != "" {
		p.addPending(pos, p.clock.commit(commitTime))
	}
	return nil
}

var errStopIter = errors.New("iteration stopped")

func (p *pipeline) rollback(ctx context.Context, info TxInfo) error {
	tx := p.open[info.TxKey]
	if tx == nil {
		return nil
	}
	var ranges []SeqRange
	if info.SubTx == "" {
		if tx.next > 0 {
			ranges = []SeqRange{{From: 0, To: tx.next - 1}}
		}
		p.discard(tx)
	} else {
		ranges = tx.buf.retractSubTx(info.SubTx)
	}
	if len(ranges) == 0 || !p.t.phases[PhaseRollback] {
		return nil
	}
	c := &Change{Bind: p.bind.Key, Source: tx.source, Origin: p.origin, TxID: tx.info.TxID, TxKey: tx.info.TxKey, SubTx: info.SubTx, Seq: tx.next}
	// Each retraction has an id of its own: a ROLLBACK TO a savepoint
	// followed by the whole transaction's ROLLBACK are two events.
	index := tx.retractions
	tx.retractions++
	p.log.Info("transaction rolled back: retracting its before_commit events",
		slog.String("txkey", c.TxKey), slog.String("subtx", info.SubTx), slog.Any("ranges", ranges))
	p.ev = Event{Phase: PhaseRollback, Change: c, Retract: &Retraction{TxKey: c.TxKey, SubTx: info.SubTx, Ranges: ranges},
		ID: EventID(p.bind.Key, p.origin, c.TxKey, index, PhaseRollback)}
	return p.publish(ctx, &p.ev, time.Now(), 0)
}

// addPending records pos as reachable once every event published so far is
// acked; commits is how many commits it confirms. Consecutive positions
// with no event between them collapse into one.
func (p *pipeline) addPending(pos string, commits uint64) {
	p.mu.Lock()
	if n := len(p.pending); n > 0 && p.pending[n-1].seq == p.laneSeq {
		p.pending[n-1].pos, p.pending[n-1].commits = pos, commits
	} else {
		p.pending = append(p.pending, pendingPos{seq: p.laneSeq, pos: pos, commits: commits})
	}
	p.mu.Unlock()
}

func (p *pipeline) onAck(n uint64) {
	if n > p.acked.Load() {
		p.acked.Store(n)
		p.lat.acked(n, time.Now())
		if p.t.debug != nil {
			p.t.debug.acked(p.bind.Key, n, time.Now())
		}
	}
}

// checkpointer writes the checkpoint every CHECKPOINT_INTERVAL while
// acknowledged progress is pending. Only a conflict (another instance) is
// fatal; other failures are retried on the next tick.
func (p *pipeline) checkpointer(ctx context.Context) error {
	every := p.t.cfg.CheckpointInterval
	if every <= 0 {
		every = 200 * time.Millisecond
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-p.lost():
			return nil // run stops the bind; not one more write
		case now := <-tick.C:
			p.rate.sample(now, p.eventCount())
		}
		err := p.checkpoint(ctx)
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
				p.log.Warn("checkpoint not written; retrying", slog.Any("err", err), slog.Int("attempts", failures))
			}
		}
	}
}

// errLeaseUncertain is why no checkpoint is written while the bind's lease
// could not be renewed for most of its time to live.
var errLeaseUncertain = errors.New("the bind's lease could not be renewed lately: no checkpoint until it is")

// checkpoint saves the newest position whose events are all acknowledged
// and tells the source. It writes nothing once the bind's lease is lost,
// nor while it is uncertain (see Lease.Held): a fenced instance must not
// move the checkpoint under the new holder's feet.
func (p *pipeline) checkpoint(ctx context.Context) error {
	p.cpMu.Lock()
	defer p.cpMu.Unlock()
	if p.lease != nil {
		select {
		case <-p.lease.Lost():
			return fmt.Errorf("%w: the bind's lease was taken over: checkpoint not written", ErrFenced)
		default:
		}
		if !p.lease.Held() {
			return errLeaseUncertain
		}
	}
	ready, commits, cp := p.readyPosition(time.Now(), p.t.cpDelay)
	if ready == "" {
		return nil
	}
	if ready == cp.Position {
		p.clock.confirmed(commits) // saved and confirmed before
		return nil
	}
	cp.Position, cp.Time, cp.Owner = ready, time.Now().UTC(), p.t.owner
	saved, err := p.store.Save(ctx, p.key, cp)
	if errors.Is(err, ErrCheckpointConflict) {
		saved, err = p.overwriteStray(ctx, cp)
	}
	if errors.Is(err, ErrCheckpointConflict) {
		return fmt.Errorf("%w: checkpoint %s was written by someone else (%w): another trackerd is running this bind; stopping",
			ErrFenced, p.key, ErrCheckpointConflict)
	}
	if err != nil {
		return fmt.Errorf("save checkpoint: %w", err)
	}
	p.mu.Lock()
	p.cp = saved
	p.mu.Unlock()
	p.checkpoints.Add(1)
	p.src.Confirm(ready)
	p.clock.confirmed(commits)
	return nil
}

// readyPosition returns the newest position whose events were all
// acknowledged at least delay before now, the commits it confirms, and the
// last checkpoint written.
func (p *pipeline) readyPosition(now time.Time, delay time.Duration) (string, uint64, Checkpoint) {
	acked := p.acked.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	i := 0
	for i < len(p.pending) && p.pending[i].seq <= acked {
		i++
	}
	if i > 0 {
		// Only the newest position acknowledged by now matters.
		p.ackedAt = append(p.ackedAt, ackedPos{pos: p.pending[i-1].pos, at: now, commits: p.pending[i-1].commits})
		p.pending = append(p.pending[:0], p.pending[i:]...)
	}
	j := 0
	for j < len(p.ackedAt) && !p.ackedAt[j].at.After(now.Add(-delay)) {
		p.ready, p.readyCommits = p.ackedAt[j].pos, p.ackedAt[j].commits
		j++
	}
	if j > 0 {
		p.ackedAt = append(p.ackedAt[:0], p.ackedAt[j:]...)
	}
	return p.ready, p.readyCommits, p.cp
}

// checkpointNow writes the checkpoint without the checkpoint delay: for a
// stopping bind (the NATS server syncs its store when it is stopped), and
// for a bind's first position, which no event precedes.
func (p *pipeline) checkpointNow(ctx context.Context) error {
	p.readyPosition(time.Now(), 0)
	return p.checkpoint(ctx)
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
func (p *pipeline) overwriteStray(ctx context.Context, cp Checkpoint) (Checkpoint, error) {
	if p.lease == nil || !p.lease.Held() {
		return Checkpoint{}, ErrCheckpointConflict
	}
	cur, err := p.store.Load(ctx, p.key)
	if err != nil || cur.Owner == "" || cur.Owner == p.t.owner {
		return Checkpoint{}, ErrCheckpointConflict
	}
	p.log.Warn("the checkpoint was written by the bind's former holder after this instance took over: overwriting it",
		slog.String("writer", cur.Owner), slog.String("its_position", cur.Position), slog.String("position", cp.Position))
	cp.Revision = cur.Revision
	return p.store.Save(ctx, p.key, cp)
}

// callChange calls per-change receivers in order, each until it succeeds.
func (p *pipeline) callChange(ctx context.Context, rs []signalEntry, c *Change) error {
	for _, e := range rs {
		if e.fn == nil {
			continue
		}
		if err := p.retry(ctx, func() error { return e.fn(ctx, *c) }); err != nil {
			return err
		}
	}
	return nil
}

func (p *pipeline) callTx(ctx context.Context, rs []signalEntry, tx Tx) error {
	for _, e := range rs {
		if e.tx == nil {
			continue
		}
		if err := p.retry(ctx, func() error { return e.tx(ctx, tx) }); err != nil {
			return err
		}
	}
	return nil
}

// retry calls fn until it returns nil, backing off from 100 ms to 30 s, or
// until ctx ends. A panicking receiver counts as an error.
func (p *pipeline) retry(ctx context.Context, fn func() error) error {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := safeCall(fn)
		if err == nil {
			return nil
		}
		p.retries.Add(1)
		p.log.Warn("receiver failed; holding the bind and retrying", slog.Any("err", err), slog.Int("attempt", attempt))
		d := wait/2 + rand.N(wait/2+1)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(d):
		}
		wait = min(wait*2, 30*time.Second)
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

func (p *pipeline) snapshot() BindStats {
	if rs, ok := p.t.sink.(ReadySink); ok {
		p.st.setSinkReady(rs.Ready())
	}
	v := p.st.view()
	p.mu.Lock()
	s := BindStats{Bind: p.bind.Key, State: v.State, StateDetail: v.Detail, StateSince: v.Since, Reconnects: v.Reconnects,
		LastError: v.LastError, LastErrorAt: v.LastErrorAt, Checkpoint: p.cp.Position, CheckpointAt: p.cp.Time}
	p.mu.Unlock()
	s.Changes = p.changes.Load()
	s.Transactions = p.txs.Load()
	s.Published = p.published.Load()
	s.Acked = p.acked.Load()
	s.OpenTx = int(p.openTxs.Load())
	s.SpilledBytes = p.spilled.Load()
	s.Checkpoints = p.checkpoints.Load()
	s.ReceiverRetry = p.retries.Load()
	s.SourceConnected = v.Connected
	s.EventsPerSecond, s.LastEventAt = p.rate.rate(time.Now(), p.eventCount())
	s.CommitToAck = p.lat.histogram()
	if p.lease != nil && v.State != StateStopped && v.State != StateFailed {
		select {
		case <-p.lease.Lost():
		default:
			s.LeaseHolder = p.t.owner
		}
	}
	s.Lag = Lag{Bytes: -1}
	if lr, ok := p.src.(LagReporter); ok {
		s.Lag = lr.Lag()
	}
	s.Lag.Behind, s.LagKnown = p.clock.behind(time.Now()), true // the tracker's, for every source
	return s
}

// eventCount is what the events/s rate counts: events handed to the sink,
// or changes read without one.
func (p *pipeline) eventCount() uint64 {
	if p.t.sink == nil {
		return p.changes.Load()
	}
	return p.published.Load()
}
