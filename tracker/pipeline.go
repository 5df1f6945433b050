package tracker

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
)

// shutdownTimeout bounds how long a stopping bind waits for outstanding acks
// and its final checkpoint.
const shutdownTimeout = 30 * time.Second

// pipeline runs one bind. openPipeline acquires what the bind needs (its
// source, its lease, the checkpoint to resume from); run starts its parts
// and stops them in order:
//
//   - the source, on a goroutine of its own, hands its records to the
//     pipeline's handler, which passes them to the assembler while the bind
//     reads;
//   - the assembler (assembler.go) turns them into events on the sink's
//     lane and receiver calls, and marks the positions it passes;
//   - the lane acknowledges events, on the sink's goroutine (onAck);
//   - the checkpointer (checkpointer.go) saves the newest position whose
//     events are acknowledged, on a goroutine of its own (the writer), and
//     confirms it to the source.
type pipeline struct {
	bind  binds.Bind
	log   *slog.Logger
	src   Source
	sink  Sink // nil: in-process receivers only
	lane  Lane // the sink's lane, while run runs
	lease Lease
	from  string        // where the source starts
	owner string        // this instance's name (WithOwner)
	every time.Duration // CHECKPOINT_INTERVAL
	st    *bindState
	debug *debugRing // nil unless RECORD_QUERIES

	asm     *assembler
	ckpt    *checkpointer
	snaps   *snapshots
	reading gate

	rate meter       // events/s, for Stats
	lat  *ackLatency // commit to ack, for Stats
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
		bind:  b,
		log:   log,
		src:   src,
		sink:  t.sink,
		owner: t.owner,
		every: t.cfg.CheckpointInterval,
		st:    st,
		debug: t.debug,
		lat:   newAckLatency(),
	}
	if p.every <= 0 {
		p.every = config.DefaultCheckpointInterval
	}
	identity := src.Identity()
	key := CheckpointKey(b.Key, identity)
	if l, ok := t.store.(Leaser); ok {
		lease, err := l.Lease(ctx, key, t.owner)
		if err != nil {
			src.Close()
			return nil, fmt.Errorf("bind %s: %w", b.Key, err)
		}
		p.lease = lease
	}
	p.ckpt = newCheckpointer(key, t.owner, t.store, p.lease, src, t.cpDelay, log)
	cp, err := p.resume(ctx, identity)
	if err != nil {
		p.close(ctx)
		return nil, fmt.Errorf("bind %s: %w", b.Key, err)
	}
	p.ckpt.cp = cp // before any goroutine runs
	p.from = cp.Position
	spill := t.cfg.SpillThreshold
	if spill <= 0 {
		spill = config.DefaultSpillThreshold
	}
	p.asm = &assembler{
		bind:            b.Key,
		origin:          cp.Origin,
		log:             log,
		marks:           p.ckpt,
		before:          t.BeforeCommit,
		after:           t.AfterCommit,
		publishBefore:   t.phases[PhaseBeforeCommit],
		publishAfter:    t.phases[PhaseAfterCommit],
		publishRollback: t.phases[PhaseRollback],
		echo:            t.cfg.Echo,
		spillDir:        t.spill,
		spillLimit:      spill,
		debug:           t.debug,
		lat:             p.lat,
		open:            make(map[string]*openTx),
	}
	chunk := t.snapChunk
	if chunk == 0 {
		chunk = t.cfg.SnapshotChunk
	}
	p.snaps = newSnapshots(b, log, src, p.asm, p.ckpt, st, chunk, cp.Snapshots)
	return p, nil
}

// resume returns the checkpoint the bind starts from, with its origin: the
// one stored under the source's identity, or one the source adopts (see
// adopt), or a new one, written at once. Errors are the caller's to wrap
// with the bind.
func (p *pipeline) resume(ctx context.Context, identity string) (Checkpoint, error) {
	c := p.ckpt
	cp, err := c.store.Load(ctx, c.key)
	switch {
	case errors.Is(err, ErrNoCheckpoint):
		cp, err = p.adopt(ctx, identity)
		if err != nil {
			return Checkpoint{}, err
		}
		if cp.Origin == "" {
			// A new bind: its origin is fixed now. The nonce keeps clones
			// apart: PostgreSQL clusters restored from one backup share
			// their system identifier, database and slot names.
			cp.Origin = Origin(identity + "\x00" + nonce())
		}
		if cp.Position == "" && cp.Snapshots == nil && p.bind.Snapshot != "" && p.bind.Snapshot != binds.SnapshotNever {
			if _, ok := p.src.(Snapshotter); !ok {
				return Checkpoint{}, ConfigError(fmt.Errorf("snapshot = %q, but the bind's source cannot read snapshots: set snapshot = \"never\"", p.bind.Snapshot))
			}
			cp.Snapshots = []SnapshotProgress{InitialSnapshot()}
		}
		if sp, ok := p.src.(StartPositioner); ok && cp.Position == "" {
			cp.Position = sp.StartPosition()
		}
		// Written before any event is published, so that events sent
		// again after a crash carry the same origin (and start).
		cp.Time, cp.Owner = time.Now().UTC(), c.owner
		if cp, err = c.store.Save(ctx, c.key, cp); err != nil {
			if errors.Is(err, ErrCheckpointConflict) {
				err = fmt.Errorf("%w: %w", ErrFenced, err)
			}
			return Checkpoint{}, fmt.Errorf("write the new checkpoint: %w", err)
		}
		if cp.Position == "" {
			p.log.Info("no checkpoint: starting from the source's current position", slog.String("source", identity), slog.String("origin", cp.Origin))
		}
	case err != nil:
		return Checkpoint{}, fmt.Errorf("load checkpoint: %w", err)
	case cp.Source != identity:
		return Checkpoint{}, ConfigError(fmt.Errorf("checkpoint %s belongs to source %q, not %q: remove it or point the bind back",
			c.key, cp.Source, identity))
	case cp.Position == "":
		p.log.Info("no position in the checkpoint yet: starting from the source's current position", slog.String("source", identity))
	default:
		p.log.Info("resuming from checkpoint", slog.String("position", cp.Position), slog.Time("written", cp.Time))
	}
	if cp.Origin == "" {
		cp.Origin = Origin(identity) // a checkpoint of trackerd before 2026-12
	}
	return cp, nil
}

// adopt returns the checkpoint a bind without one under its source's
// identity starts from: one of its checkpoints under another identity that
// the source recognises as its own server's (see Adopter), or a new one.
// It never starts afresh in silence beside a checkpoint of the same
// server: the source either adopts it or says why it cannot be resumed.
func (p *pipeline) adopt(ctx context.Context, identity string) (Checkpoint, error) {
	key := p.ckpt.key
	fresh := Checkpoint{Bind: p.bind.Key, Source: identity}
	lister, ok := p.ckpt.store.(CheckpointLister)
	if !ok {
		return fresh, nil
	}
	all, err := lister.ListCheckpoints(ctx, p.bind.Key)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("list checkpoints: %w", err)
	}
	var others []StoredCheckpoint
	for _, sc := range all {
		if sc.Key != key && sc.Position != "" {
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
				identity, sc.Key, sc.Source, sc.Position, sc.Time.Format(time.RFC3339), err, sc.Key, p.bind.Key))
		}
		p.log.Warn("resuming from the checkpoint of this server under its former identity",
			slog.String("former", sc.Source), slog.String("source", identity),
			slog.String("position", sc.Position), slog.String("former_key", sc.Key))
		cp := sc.Checkpoint
		cp.Source, cp.Revision = identity, 0
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
		slog.String("source", identity), slog.Any("others", names))
	return fresh, nil
}

// close releases what openPipeline acquired: the source (if Run never
// ran) and the lease.
func (p *pipeline) close(ctx context.Context) {
	p.src.Close()
	if p.lease != nil {
		p.lease.Release(context.WithoutCancel(ctx))
	}
}

// nonce returns 64 random bits in hex.
func nonce() string {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func (p *pipeline) setState(s string) { p.st.setPhase(s, nil) }

// run streams until ctx ends, the source or the writer fails, or the
// bind's lease is lost; then it stops the bind's parts in order.
func (p *pipeline) run(ctx context.Context) error {
	defer p.close(ctx)
	if p.sink != nil {
		lane, err := p.sink.OpenLane(ctx, p.bind.Key, p.onAck)
		if err != nil {
			p.setState(StateFailed)
			return fmt.Errorf("open sink lane: %w", err)
		}
		p.lane, p.asm.lane = lane, lane
	}

	// Each part has a context of its own, ended at its step of the
	// teardown below; only reading's ends with ctx too.
	read := p.reading.open(ctx)
	source := start(context.WithoutCancel(ctx), func(ctx context.Context) error { return p.src.Run(ctx, p.from, p.handler(read)) })
	writer := start(context.WithoutCancel(ctx), func(ctx context.Context) error { return p.ckpt.run(ctx, p.every, p.tick) })
	p.setState(StateStreaming)
	p.log.Info("streaming", slog.String("from", p.from))
	p.snaps.start(ctx)

	var runErr error
	select {
	case <-ctx.Done():
	case <-source.done:
		runErr = source.err
	case <-writer.done:
		runErr = writer.err
	case <-p.ckpt.lost():
		runErr = fmt.Errorf("%w: the bind's lease was taken over by another instance; stopping", ErrFenced)
	}
	p.setState(StateStopping)
	keep := func(err error) { // the first error wins; a clean stop's context.Canceled is none
		if runErr == nil && err != nil && !errors.Is(err, context.Canceled) {
			runErr = err
		}
	}

	// The teardown, in this order:
	//
	//  1. Stop reading: the record in progress, if any, gives up its
	//     blocking calls and finishes; no record is processed after it
	//     (the handler holds the source's next one until step 5), so
	//     nothing more is published.
	//  2. Drain the lane: wait, up to shutdownTimeout, until every event
	//     published is acknowledged.
	//  3. Stop the writer (the checkpoint ticker), so that the final save
	//     is the only one.
	//  4. Save the final checkpoint, without the checkpoint delay: the
	//     newest position whose events are all acknowledged.
	//  5. Stop the source: it kept its connection (and its status
	//     updates) until now, so the final position is confirmed to its
	//     server.
	p.snaps.stop()
	p.reading.close()
	drainCtx, cancelDrain := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancelDrain()
	p.drainLane(drainCtx)
	keep(writer.stop())
	keep(p.ckpt.save(drainCtx, 0))
	keep(source.stop())

	if runErr != nil && ctx.Err() == nil {
		p.st.setPhase(StateFailed, runErr)
		return runErr
	}
	p.setState(StateStopped)
	p.log.Info("stopped", slog.String("checkpoint", p.ckpt.position()))
	return nil
}

// handler is the source's Handler. While the bind reads, it hands each
// record to the assembler, whose blocking calls end with read, which ends
// when the bind stops reading (teardown step 1): the ctx the source passes
// lasts longer, until the source is stopped (step 5). Once the bind has
// stopped reading, or the source's ctx has ended, it processes nothing
// more: it blocks until the source's ctx ends, so the source keeps its
// connection (and its status updates) while the final checkpoint is
// written, and returns its error.
func (p *pipeline) handler(read context.Context) Handler {
	return HandlerFunc(func(ctx context.Context, r Record) error {
		if ctx.Err() == nil && read.Err() == nil && p.reading.enter() {
			err := p.snaps.before(read, r)
			if err == nil {
				err = p.asm.handle(read, r)
				p.snaps.after(r)
			}
			p.reading.exit()
			if err == nil || read.Err() == nil {
				return err
			}
		}
		<-ctx.Done()
		return ctx.Err()
	})
}

// drainLane closes the lane once every event published is acknowledged,
// or ctx ends.
func (p *pipeline) drainLane(ctx context.Context) {
	if p.lane == nil {
		return
	}
	if err := p.lane.Close(ctx); err != nil {
		p.log.Warn("stopping with unacknowledged events; they are sent again on restart", slog.Any("err", err))
	}
}

// onAck is the lane's acknowledgement callback: events 1..n are stored.
func (p *pipeline) onAck(n uint64) {
	if !p.ckpt.ack(n) {
		return
	}
	now := time.Now()
	p.lat.acked(n, now)
	if p.debug != nil {
		p.debug.acked(p.bind.Key, n, now)
	}
}

// tick runs at each of the writer's ticks.
func (p *pipeline) tick(now time.Time) { p.rate.sample(now, p.eventCount()) }

// gate lets a source's records in, one at a time, until it is closed.
type gate struct {
	cancel context.CancelFunc // ends the context open returned
	mu     sync.Mutex         // held while a record is processed
	closed bool
}

// open returns the context records are processed under: it ends with ctx,
// or when the gate is closed.
func (g *gate) open(ctx context.Context) context.Context {
	ctx, g.cancel = context.WithCancel(ctx)
	return ctx
}

// enter reports whether a record may be processed; if so, the caller
// processes it and then calls exit.
func (g *gate) enter() bool {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return false
	}
	return true
}

func (g *gate) exit() { g.mu.Unlock() }

// close ends the records' context, so that the record in progress, if
// any, gives up its blocking calls; waits until it is processed; and lets
// none in after it.
func (g *gate) close() {
	g.cancel()
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// task is a function running on a goroutine of its own, with a context of
// its own.
type task struct {
	cancel context.CancelFunc
	done   chan struct{} // closed once the function has returned
	err    error         // what it returned, once done is closed
}

// start runs fn with a context derived from parent, which stop ends.
func start(parent context.Context, fn func(context.Context) error) *task {
	ctx, cancel := context.WithCancel(parent)
	t := &task{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(t.done)
		t.err = fn(ctx)
	}()
	return t
}

// stop ends the function's context, waits for it to return and returns
// its error; it may be called after it returned on its own.
func (t *task) stop() error {
	t.cancel()
	<-t.done
	return t.err
}

func (p *pipeline) snapshot() BindStats {
	if rs, ok := p.sink.(ReadySink); ok {
		p.st.setSinkReady(rs.Ready())
	}
	v := p.st.view()
	now := time.Now()
	c := p.ckpt.view(now)
	s := BindStats{Bind: p.bind.Key, State: v.State, StateDetail: v.Detail, StateSince: v.Since, Reconnects: v.Reconnects,
		LastError: v.LastError, LastErrorAt: v.LastErrorAt, Checkpoint: c.cp.Position, CheckpointAt: c.cp.Time}
	n := &p.asm.n
	s.Changes = n.changes.Load()
	s.Transactions = n.txs.Load()
	s.Published = n.published.Load()
	s.Acked = c.acked
	s.OpenTx = int(n.openTxs.Load())
	s.SpilledBytes = n.spilled.Load()
	s.Checkpoints = c.saves
	s.ReceiverRetry = n.retries.Load()
	s.SourceConnected = v.Connected
	s.EventsPerSecond, s.LastEventAt = p.rate.rate(now, p.eventCount())
	s.CommitToAck = p.lat.histogram()
	if p.lease != nil && v.State != StateStopped && v.State != StateFailed {
		select {
		case <-p.lease.Lost():
		default:
			s.LeaseHolder = p.owner
		}
	}
	s.Snapshots = p.snaps.infos()
	s.Lag = Lag{Bytes: -1}
	if lr, ok := p.src.(LagReporter); ok {
		s.Lag = lr.Lag()
	}
	s.Lag.Behind, s.LagKnown = c.behind, true // the tracker's, for every source
	return s
}

// eventCount is what the events/s rate counts: events handed to the sink,
// or changes read without one.
func (p *pipeline) eventCount() uint64 {
	if p.sink == nil {
		return p.asm.n.changes.Load()
	}
	return p.asm.n.published.Load()
}
