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

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/config"
	"github.com/trackerd/trackerd/internal/backoff"
)

// Snapshot defaults.
const (
	// DefaultSnapshotChunk is how many rows a snapshot reads at a time
	// (SNAPSHOT_CHUNK).
	DefaultSnapshotChunk = config.DefaultSnapshotChunk
	// snapshotLogEvery is how often a running snapshot logs its progress.
	snapshotLogEvery = 10 * time.Second
	// nudgeEvery is how often a runner waiting for the stream nudges it.
	nudgeEvery = 200 * time.Millisecond
	// endedKept is how many ended snapshots a bind keeps for status.
	endedKept = 16
	// readAttempts is how many times in a row a chunk's read may fail
	// (other than for a configuration error: a table gone, a bad
	// condition) before its snapshot fails: about a minute of back-off.
	readAttempts = 10
)

// errStale is a runner's answer for a chunk the stream passed before it
// was ready: it is read again.
var errStale = errors.New("the stream passed the chunk's position: read again")

// snapshots runs a bind's snapshots and backfills (see snapshot.go).
//
// Each snapshot has a runner, on a goroutine of its own, which reads its
// tables chunk by chunk through the source's Snapshotter and hands each
// chunk to the bind's handler (the source's goroutine) through in. The
// handler holds a chunk until the stream reaches its position, publishes
// its rows through the assembler, notes the progress for the checkpoint
// and answers the runner; one chunk per runner is in flight. Lifecycle
// events and progress are the handler's alone: what the checkpoint keeps
// (progress) is written only there.
type snapshots struct {
	bind  binds.Bind
	log   *slog.Logger
	src   Snapshotter // nil when the source cannot read snapshots
	nudge func()
	asm   *assembler
	ckpt  *checkpointer
	st    *bindState
	chunk int

	in     chan snapMsg       // runners to the handler
	resume []SnapshotProgress // the checkpoint's, run by start

	mu     sync.Mutex
	runs   map[string]*snapRun // running, by id
	ended  []SnapshotInfo      // newest last
	parent context.Context     // the runners' parent, while the bind runs
	stopFn context.CancelFunc
	wg     sync.WaitGroup

	// The handler's own, touched on the source's goroutine only.
	waiting    []snapMsg // chunks held until the stream reaches them
	reserved   map[*snapRun]reservation
	lastPos    string // the last commit or keepalive position handled
	lastCommit string // the last commit position handled
	// commitAt is when the handler last handled a commit (unix ns), for
	// the runners' pacing.
	commitAt atomic.Int64
	progress []SnapshotProgress // what the checkpoint keeps
}

// snapRun is one running snapshot, as status shows it.
type snapRun struct {
	id      string
	kind    SnapshotKind
	where   string
	cancel  context.CancelFunc
	started time.Time     // when it was asked for
	begun   time.Time     // when this process began running it
	ready   chan struct{} // closed once the handler has started it
	done    chan struct{} // closed once it has ended
	// Guarded by snapshots.mu.
	cancelled bool
	tables    []string
	estimates map[string]int64
	table     string
	finished  []string
	rows      int64 // in total, with those of earlier processes
	rowsHere  int64 // published by this process
	tableRows map[string]int64
	state     string
	err       string
	endedAt   time.Time
}

// reservation is a read in progress: the stream is held before it passes
// pos until the read's chunk is there. Before the read knows its position
// (pos empty: the read is starting), every commit is held, for at most
// preHold: a commit handled before the read started is before its
// position, so a read that reports its position within preHold is never
// overtaken; one that takes longer (a PostgreSQL slot waits for open
// transactions) lets the stream go on, and may find it passed.
type reservation struct {
	pos   string
	since time.Time // when the read began
	stale bool      // the stream had passed pos already: the chunk is read again
}

// preHold is how long the stream waits for a starting read to report its
// position.
const preHold = 20 * time.Millisecond

type snapMsgKind uint8

const (
	msgStart   snapMsgKind = iota + 1 // progress to keep, a started event if new
	msgChunk                          // a chunk to publish at its position
	msgEnd                            // cancelled or failed
	msgReserve                        // a read's position, before its rows
)

// snapMsg is a runner's request to the handler; the handler answers on
// reply (buffered) once it is done with it.
type snapMsg struct {
	kind     snapMsgKind
	run      *snapRun
	progress SnapshotProgress // msgStart
	fresh    bool             // msgStart: publish the started event
	skipped  []string         // msgStart: tables without a key, left out
	table    string           // msgChunk
	chunk    Chunk            // msgChunk
	pos      string           // msgReserve
	readErr  error            // msgChunk: the read failed, nothing to publish
	end      string           // msgEnd: the lifecycle type
	err      error            // msgEnd: why it failed
	reply    chan error
}

func newSnapshots(b binds.Bind, log *slog.Logger, src Source, asm *assembler, ckpt *checkpointer, st *bindState, chunk int, progress []SnapshotProgress) *snapshots {
	s := &snapshots{bind: b, log: log, asm: asm, ckpt: ckpt, st: st, chunk: chunk,
		in: make(chan snapMsg, 64), runs: make(map[string]*snapRun), progress: slices.Clone(progress), resume: slices.Clone(progress),
		reserved: make(map[*snapRun]reservation)}
	if s.chunk <= 0 {
		s.chunk = DefaultSnapshotChunk
	}
	s.src, _ = src.(Snapshotter)
	s.nudge = func() {}
	if n, ok := src.(Nudger); ok {
		s.nudge = n.Nudge
	}
	return s
}

// InitialSnapshot returns a new snapshot of every table of a bind, to put
// into its checkpoint (`trackerd reset --to snapshot` does): the bind reads
// its tables at its next start, their rows resolved then.
func InitialSnapshot() SnapshotProgress {
	return SnapshotProgress{ID: "initial-" + nonce()[:8], Kind: SnapshotInitial, Started: time.Now().UTC()}
}

// start runs the snapshots the checkpoint holds. ctx ends with the bind.
func (s *snapshots) start(ctx context.Context) {
	s.mu.Lock()
	s.parent, s.stopFn = context.WithCancel(ctx)
	s.mu.Unlock()
	for _, pr := range s.resume {
		if s.src == nil {
			s.log.Error("the checkpoint holds a snapshot, but the bind's source cannot read snapshots: dropped", slog.String("snapshot", pr.ID))
			continue
		}
		s.launch(pr, false)
	}
}

// stop ends every runner and waits for them; their snapshots resume when
// the bind starts again.
func (s *snapshots) stop() {
	s.mu.Lock()
	if s.stopFn != nil {
		s.stopFn()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// launch starts a runner for pr; fresh is true for a snapshot asked for
// now (its started event is published once it runs).
func (s *snapshots) launch(pr SnapshotProgress, fresh bool) *snapRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	ctx, cancel := context.WithCancel(s.parent)
	now := time.Now()
	r := &snapRun{id: pr.ID, kind: pr.Kind, where: pr.Where, cancel: cancel, started: pr.Started, begun: now,
		ready: make(chan struct{}), done: make(chan struct{}), tables: pr.All, rows: pr.Rows,
		tableRows: make(map[string]int64), estimates: make(map[string]int64), state: SnapshotRunning}
	if len(pr.Tables) > 0 {
		r.table = pr.Tables[0]
	}
	for _, t := range pr.All {
		if !slices.Contains(pr.Tables, t) {
			r.finished = append(r.finished, t)
		}
	}
	s.runs[pr.ID] = r
	if pr.Kind == SnapshotInitial {
		s.st.setPhase(StateSnapshotting, nil)
	}
	s.wg.Add(1)
	go s.run(ctx, r, pr, fresh)
	return r
}

// run is a runner.
func (s *snapshots) run(ctx context.Context, r *snapRun, pr SnapshotProgress, fresh bool) {
	defer s.wg.Done()
	defer close(r.done)
	err := s.read(ctx, r, pr, fresh)
	s.mu.Lock()
	cancelled, stopping := r.cancelled, s.parent.Err() != nil
	s.mu.Unlock()
	if err == nil {
		s.finish(r, SnapshotCompleted, "")
		return
	}
	if stopping && !cancelled {
		s.mu.Lock()
		delete(s.runs, r.id)
		s.mu.Unlock()
		return // resumed from the checkpoint at the next start
	}
	end, state := LifecycleFailed, SnapshotFailed
	if cancelled {
		end, state, err = LifecycleCancelled, SnapshotCancelled, nil
	} else {
		s.log.Error("snapshot failed", slog.String("snapshot", r.id), slog.Any("err", err))
	}
	// Tell the handler, so that the checkpoint forgets it; if the bind
	// stops first, it is resumed (a cancel is then lost: asked again).
	if serr := s.send(s.parent, snapMsg{kind: msgEnd, run: r, end: end, err: err}); serr != nil {
		s.mu.Lock()
		delete(s.runs, r.id)
		s.mu.Unlock()
		return
	}
	msg := ""
	if err != nil {
		msg = err.Error()
	}
	s.finish(r, state, msg)
}

// finish moves r to the ended snapshots.
func (s *snapshots) finish(r *snapRun, state, errMsg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.state, r.err, r.endedAt = state, errMsg, time.Now()
	delete(s.runs, r.id)
	s.ended = append(s.ended, r.infoLocked(s.bind.Key))
	if len(s.ended) > endedKept {
		s.ended = s.ended[len(s.ended)-endedKept:]
	}
	if r.kind == SnapshotInitial {
		s.st.setPhase(StateStreaming, nil)
	}
}

// read reads the snapshot's tables chunk by chunk and has the handler
// publish them.
func (s *snapshots) read(ctx context.Context, r *snapRun, pr SnapshotProgress, fresh bool) error {
	var skipped []string
	if !pr.Resolved {
		tabs, err := s.src.SnapshotTables(ctx, nil)
		if err != nil {
			return fmt.Errorf("list the tables: %w", err)
		}
		var names []string
		for _, t := range tabs {
			if len(t.Key) == 0 {
				s.log.Warn("snapshot: table has no primary key nor unique key of not-null columns, so it cannot be read in chunks: left out; add such a key and backfill it",
					slog.String("snapshot", pr.ID), slog.String("table", t.Name()))
				skipped = append(skipped, t.Name())
				continue
			}
			names = append(names, t.Name())
		}
		pr.Tables, pr.All, pr.Resolved, fresh = names, slices.Clone(names), true, true
		s.mu.Lock()
		r.tables = pr.All
		if len(names) > 0 {
			r.table = names[0]
		}
		s.mu.Unlock()
	}
	if fresh || len(skipped) > 0 {
		if err := s.send(ctx, snapMsg{kind: msgStart, run: r, progress: pr, fresh: fresh, skipped: skipped}); err != nil {
			return err
		}
	}
	close(r.ready)
	if len(pr.Tables) == 0 {
		return s.send(ctx, snapMsg{kind: msgEnd, run: r, end: LifecycleCompleted})
	}
	// Every table's, for the estimates (a resumed snapshot's rows count
	// those read before); the tables left must still be there.
	tabs, err := s.src.SnapshotTables(ctx, pr.All)
	if err != nil || len(pr.All) == 0 {
		tabs, err = s.src.SnapshotTables(ctx, pr.Tables)
	}
	if err != nil {
		return fmt.Errorf("look up the tables: %w", err)
	}
	byName := make(map[string]SnapshotTable, len(tabs))
	s.mu.Lock()
	for _, t := range tabs {
		byName[t.Name()] = t
		r.estimates[t.Name()] = t.Estimate
	}
	s.mu.Unlock()
	nextLog := time.Now().Add(snapshotLogEvery)
	for len(pr.Tables) > 0 {
		name := pr.Tables[0]
		t, ok := byName[name]
		if !ok {
			return fmt.Errorf("table %s is no longer followed", name)
		}
		s.mu.Lock()
		r.table = name
		s.mu.Unlock()
		var cycle time.Duration // the last chunk's, from its read to its publication
		failures := 0           // reads failed in a row
		var retry *backoff.Backoff
		for {
			limit, err := s.pace(ctx, cycle)
			if err != nil {
				return err
			}
			// Once a read is reserved, the stream may wait for it: what
			// follows reaches the handler even if the snapshot is
			// cancelled meanwhile (only the bind's end stops it).
			reserved := false
			reserve := func(pos string) {
				if !reserved {
					reserved = true
					s.post(s.parent, snapMsg{kind: msgReserve, run: r, pos: pos})
				}
			}
			s.post(s.parent, snapMsg{kind: msgReserve, run: r}) // a read starts
			t0 := time.Now()
			ch, err := s.src.ReadChunk(ctx, ChunkRequest{Table: t, After: pr.After, Where: pr.Where, Limit: limit, Reserve: reserve})
			t1 := time.Now()
			if err != nil {
				// Let the stream go on.
				s.post(s.parent, snapMsg{kind: msgChunk, run: r, readErr: err, reply: make(chan error, 1)})
				if ctx.Err() != nil || errors.Is(err, ErrConfig) || failures >= readAttempts {
					return fmt.Errorf("read %s: %w", name, err)
				}
				// A dropped connection, a restarted server: read again.
				failures++
				s.log.Warn("snapshot: reading a chunk failed; retrying", slog.String("snapshot", r.id), slog.String("table", name),
					slog.Int("attempt", failures), slog.Any("err", err))
				if retry == nil {
					retry = backoff.Reconnect.New()
				}
				if err := retry.Wait(ctx); err != nil {
					return err
				}
				continue
			}
			failures, retry = 0, nil
			err = s.deliver(ctx, snapMsg{kind: msgChunk, run: r, table: name, chunk: ch})
			cycle = time.Since(t0)
			s.log.Debug("snapshot chunk", slog.String("snapshot", r.id), slog.String("table", name), slog.Int("rows", len(ch.Rows)),
				slog.String("pos", ch.Pos), slog.Duration("read", t1.Sub(t0)), slog.Duration("published_after", time.Since(t1)), slog.Any("err", err))
			if errors.Is(err, errStale) {
				continue
			}
			if err != nil {
				return err
			}
			pr.After = ch.Next
			if now := time.Now(); now.After(nextLog) {
				nextLog = now.Add(snapshotLogEvery)
				s.logProgress(r)
			}
			if ch.Done {
				break
			}
		}
		pr.Tables, pr.After = pr.Tables[1:], ""
	}
	return nil
}

// pace shares the bind between a snapshot and the stream's changes, which
// go through the same ordered lane: a change committed while a chunk is
// read and published waits for it, and for the rows queued before it.
// While the stream carries changes (a commit in the last 20 ms, or during
// the last chunk), a snapshot reads chunks of a quarter of SNAPSHOT_CHUNK,
// starts one only once the lane has sent almost everything it holds, and
// leaves the stream three times as long after a chunk as the chunk took
// (cycle), to catch up on what it held back meanwhile: the changes keep
// flowing, delayed by about one small chunk. (An equal share let a stream
// of single-row transactions fall seconds behind on a 2-core machine; a
// quarter costs the backfill little, since the lane, not the read, bounds
// it.) An idle
// stream costs the snapshot nothing: whole chunks, the next one read while
// the lane still sends the last. It returns the rows to read.
func (s *snapshots) pace(ctx context.Context, cycle time.Duration) (int, error) {
	const quiet = 20 * time.Millisecond
	start := time.Now()
	small := max(s.chunk/4, 1)
	for {
		now := time.Now()
		// A stream held by the last chunk handles no commit meanwhile:
		// look back over the chunk's time too.
		busy := now.Sub(time.Unix(0, s.commitAt.Load())) < quiet+cycle
		limit, room := s.chunk, s.chunk
		if busy {
			limit, room = small, max(small/4, 64)
		}
		published, acked := s.asm.n.published.Load(), s.ckpt.acked.Load()
		drained := s.asm.lane == nil || published <= acked+uint64(room)
		if drained && (!busy || now.Sub(start) >= 3*cycle) {
			return limit, nil
		}
		select {
		case <-time.After(2 * time.Millisecond):
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// logProgress logs a running snapshot's rows, rate and, where the server
// estimates the rows, the time left.
func (s *snapshots) logProgress(r *snapRun) {
	s.mu.Lock()
	info := r.infoLocked(s.bind.Key)
	s.mu.Unlock()
	attrs := []slog.Attr{slog.String("snapshot", info.ID), slog.String("table", info.Table),
		slog.Int64("rows", info.Rows), slog.String("rate", fmt.Sprintf("%.0f rows/s", info.RowsPerSecond))}
	if info.Estimated > info.Rows && info.RowsPerSecond > 0 {
		eta := time.Duration(float64(info.Estimated-info.Rows) / info.RowsPerSecond * float64(time.Second))
		attrs = append(attrs, slog.Int64("estimated", info.Estimated), slog.String("eta", eta.Round(time.Second).String()))
	}
	s.log.LogAttrs(context.Background(), slog.LevelInfo, "snapshot progress", attrs...)
}

// post hands m to the handler without waiting for an answer.
func (s *snapshots) post(ctx context.Context, m snapMsg) {
	select {
	case s.in <- m:
	case <-ctx.Done():
	}
}

// deliver hands a chunk to the handler, even if ctx has ended (see
// read), and waits for the answer while ctx lasts.
func (s *snapshots) deliver(ctx context.Context, m snapMsg) error {
	m.reply = make(chan error, 1)
	s.post(s.parent, m)
	return s.await(ctx, m)
}

// send hands m to the handler and waits for its answer, nudging the
// stream meanwhile so that an idle one reaches the chunk's position soon.
func (s *snapshots) send(ctx context.Context, m snapMsg) error {
	m.reply = make(chan error, 1)
	select {
	case s.in <- m:
	case <-ctx.Done():
		return ctx.Err()
	}
	return s.await(ctx, m)
}

// await waits for the handler's answer to m, nudging the stream meanwhile.
func (s *snapshots) await(ctx context.Context, m snapMsg) error {
	t := time.NewTicker(nudgeEvery)
	defer t.Stop()
	s.nudge()
	for {
		select {
		case err := <-m.reply:
			return err
		case <-t.C:
			s.nudge()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// before runs on the source's goroutine before each record is processed:
// it takes the runners' requests, and publishes the chunks the stream
// reaches with this record — before a commit past their position, at a
// keepalive at or past it.
func (s *snapshots) before(ctx context.Context, r Record) error {
	if s.src == nil {
		return nil
	}
	for {
		var m snapMsg
		select {
		case m = <-s.in:
		default:
			if err := s.hold(ctx, r); err != nil {
				return err
			}
			return s.release(ctx, r)
		}
		if err := s.arrive(ctx, m); err != nil {
			return err
		}
	}
}

// hold waits, before a commit, until every read in progress whose position
// the commit passes has handed its chunk over.
func (s *snapshots) hold(ctx context.Context, r Record) error {
	if r.Kind != RecordCommit || r.Pos == "" {
		return nil
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		blocked := false
		var until time.Time // the earliest end of a starting read's hold
		for _, res := range s.reserved {
			if res.stale {
				continue
			}
			if res.pos == "" {
				if end := res.since.Add(preHold); time.Now().Before(end) {
					blocked = true
					if until.IsZero() || end.Before(until) {
						until = end
					}
				}
				continue
			}
			c, err := s.src.ComparePos(res.pos, r.Pos)
			if err != nil {
				return fmt.Errorf("snapshot: %w", err)
			}
			if c < 0 {
				blocked, until = true, time.Time{}
				break
			}
		}
		if !blocked {
			return nil
		}
		var expire <-chan time.Time
		if !until.IsZero() {
			if timer == nil {
				timer = time.NewTimer(time.Until(until))
			} else {
				timer.Reset(time.Until(until))
			}
			expire = timer.C
		}
		select {
		case m := <-s.in:
			if err := s.arrive(ctx, m); err != nil {
				return err
			}
		case <-expire:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// after runs on the source's goroutine after each record is processed.
func (s *snapshots) after(r Record) {
	if r.Pos == "" {
		return
	}
	switch r.Kind {
	case RecordCommit:
		s.lastPos, s.lastCommit = r.Pos, r.Pos
		s.commitAt.Store(time.Now().UnixNano())
	case RecordKeepalive:
		s.lastPos = r.Pos
	}
}

// release publishes the waiting chunks that r's position passes.
func (s *snapshots) release(ctx context.Context, r Record) error {
	if len(s.waiting) == 0 || r.Pos == "" || (r.Kind != RecordCommit && r.Kind != RecordKeepalive) {
		return nil
	}
	keep := s.waiting[:0]
	var err error
	for _, m := range s.waiting {
		if err != nil {
			keep = append(keep, m)
			continue
		}
		c, cerr := s.src.ComparePos(m.chunk.Pos, r.Pos)
		if cerr != nil {
			err = fmt.Errorf("snapshot %s: %w", m.run.id, cerr)
			keep = append(keep, m)
			continue
		}
		if c < 0 || (c == 0 && r.Kind == RecordKeepalive) {
			err = s.publish(ctx, m)
			continue
		}
		keep = append(keep, m)
	}
	clear(s.waiting[len(keep):])
	s.waiting = keep
	return err
}

// arrive takes one runner request.
func (s *snapshots) arrive(ctx context.Context, m snapMsg) error {
	switch m.kind {
	case msgStart:
		return s.started(ctx, m)
	case msgEnd:
		return s.stopped(ctx, m)
	case msgReserve:
		if m.pos == "" {
			s.reserved[m.run] = reservation{since: time.Now()}
			return nil
		}
		res := reservation{pos: m.pos}
		if s.lastCommit != "" {
			c, err := s.src.ComparePos(s.lastCommit, m.pos)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", m.run.id, err)
			}
			res.stale = c > 0
		}
		s.reserved[m.run] = res
		return nil
	}
	res, wasReserved := s.reserved[m.run]
	delete(s.reserved, m.run)
	if m.readErr != nil {
		m.reply <- m.readErr
		return nil
	}
	if wasReserved && res.stale {
		m.reply <- errStale
		return nil
	}
	ch := m.chunk
	if s.lastCommit != "" {
		c, err := s.src.ComparePos(s.lastCommit, ch.Pos)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", m.run.id, err)
		}
		if c > 0 {
			// The stream published a transaction the read did not see:
			// the rows could be older than a change already out.
			m.reply <- errStale
			return nil
		}
	}
	if s.lastPos != "" {
		c, err := s.src.ComparePos(ch.Pos, s.lastPos)
		if err != nil {
			return fmt.Errorf("snapshot %s: %w", m.run.id, err)
		}
		if c <= 0 {
			return s.publish(ctx, m) // the stream is there already
		}
	}
	s.waiting = append(s.waiting, m)
	return nil
}

// progressOf returns the index of snapshot id's progress, -1 if none.
func (s *snapshots) progressOf(id string) int {
	return slices.IndexFunc(s.progress, func(p SnapshotProgress) bool { return p.ID == id })
}

// noteProgress has the checkpoint keep the snapshots' progress as of the
// last event published.
func (s *snapshots) noteProgress() {
	out := make([]SnapshotProgress, len(s.progress))
	for i, p := range s.progress {
		p.Tables, p.All = slices.Clone(p.Tables), slices.Clone(p.All)
		out[i] = p
	}
	s.ckpt.snapshots(s.asm.laneSeq, out)
}

func (s *snapshots) started(ctx context.Context, m snapMsg) error {
	pr := m.progress
	if i := s.progressOf(pr.ID); i >= 0 {
		s.progress[i] = pr
	} else {
		s.progress = append(s.progress, pr)
	}
	if m.fresh {
		l := &Lifecycle{Type: LifecycleStarted, Snapshot: pr.ID, Kind: pr.Kind, Tables: pr.All, Skipped: m.skipped, Time: time.Now().UTC()}
		if err := s.asm.lifecycle(ctx, l, string(s.bind.Kind)); err != nil {
			return err
		}
		s.log.Info("snapshot started", slog.String("snapshot", pr.ID), slog.String("kind", string(pr.Kind)),
			slog.Any("tables", pr.All), slog.String("where", pr.Where))
	}
	s.noteProgress()
	m.reply <- nil
	return nil
}

func (s *snapshots) stopped(ctx context.Context, m snapMsg) error {
	i := s.progressOf(m.run.id)
	var rows int64
	if i >= 0 {
		rows = s.progress[i].Rows
		s.progress = slices.Delete(s.progress, i, i+1)
	}
	s.dropWaiting(m.run)
	delete(s.reserved, m.run)
	l := &Lifecycle{Type: m.end, Snapshot: m.run.id, Kind: m.run.kind, Rows: rows, Time: time.Now().UTC()}
	if m.err != nil {
		l.Error = m.err.Error()
	}
	if err := s.asm.lifecycle(ctx, l, string(s.bind.Kind)); err != nil {
		return err
	}
	s.log.Info("snapshot "+m.end, slog.String("snapshot", m.run.id), slog.Int64("rows", rows))
	s.noteProgress()
	m.reply <- nil
	return nil
}

// dropWaiting forgets the chunks of run waiting for the stream.
func (s *snapshots) dropWaiting(run *snapRun) {
	s.waiting = slices.DeleteFunc(s.waiting, func(m snapMsg) bool { return m.run == run })
}

// publish publishes a chunk's rows now, moves its snapshot's progress,
// publishes table_done and completed where it ends them, and answers the
// runner.
func (s *snapshots) publish(ctx context.Context, m snapMsg) error {
	i := s.progressOf(m.run.id)
	if i < 0 {
		m.reply <- fmt.Errorf("snapshot %s is no longer kept", m.run.id)
		return nil
	}
	ch := m.chunk
	if err := s.asm.snapshotRows(ctx, m.run.id, ch.Pos, ch.Rows); err != nil {
		return err
	}
	n := int64(len(ch.Rows))
	pr := &s.progress[i]
	pr.After, pr.Rows, pr.TableRows = ch.Next, pr.Rows+n, pr.TableRows+n
	s.mu.Lock()
	m.run.rows += n
	m.run.rowsHere += n
	m.run.tableRows[m.table] += n
	s.mu.Unlock()
	tableRows := pr.TableRows // with those of earlier processes
	if ch.Done {
		l := &Lifecycle{Type: LifecycleTableDone, Snapshot: pr.ID, Kind: pr.Kind, Table: m.table, Rows: tableRows, Time: time.Now().UTC()}
		if err := s.asm.lifecycle(ctx, l, string(s.bind.Kind)); err != nil {
			return err
		}
		s.log.Info("snapshot: table done", slog.String("snapshot", pr.ID), slog.String("table", m.table), slog.Int64("rows", tableRows))
		if len(pr.Tables) > 0 {
			pr.Tables = pr.Tables[1:]
		}
		pr.After, pr.TableRows = "", 0
		s.mu.Lock()
		m.run.finished = append(m.run.finished, m.table)
		s.mu.Unlock()
		if len(pr.Tables) == 0 {
			l := &Lifecycle{Type: LifecycleCompleted, Snapshot: pr.ID, Kind: pr.Kind, Rows: pr.Rows, Tables: pr.All, Time: time.Now().UTC()}
			if err := s.asm.lifecycle(ctx, l, string(s.bind.Kind)); err != nil {
				return err
			}
			s.log.Info("snapshot completed", slog.String("snapshot", pr.ID), slog.Int64("rows", pr.Rows))
			s.progress = slices.Delete(s.progress, i, i+1)
		}
	}
	s.noteProgress()
	m.reply <- nil
	return nil
}

// backfill starts a backfill (see Tracker.Backfill).
func (s *snapshots) backfill(ctx context.Context, req BackfillRequest) (SnapshotInfo, error) {
	if s.src == nil {
		return SnapshotInfo{}, fmt.Errorf("bind %s: %w", s.bind.Key, ErrSnapshotUnsupported)
	}
	tabs, err := s.src.SnapshotTables(ctx, req.Tables)
	if err != nil {
		return SnapshotInfo{}, fmt.Errorf("bind %s: %w", s.bind.Key, err)
	}
	var names []string
	for _, t := range tabs {
		if len(t.Key) == 0 {
			if len(req.Tables) > 0 {
				return SnapshotInfo{}, ConfigError(fmt.Errorf("bind %s: table %s has no primary key nor unique key of not-null columns, so it cannot be read in chunks: add one (ALTER TABLE ... ADD PRIMARY KEY)", s.bind.Key, t.Name()))
			}
			s.log.Warn("backfill: table has no primary key nor unique key of not-null columns: left out", slog.String("table", t.Name()))
			continue
		}
		names = append(names, t.Name())
	}
	if len(names) == 0 {
		return SnapshotInfo{}, ConfigError(fmt.Errorf("bind %s: no table to backfill", s.bind.Key))
	}
	if req.Where != "" {
		// The condition is checked on every table before anything starts.
		for _, t := range tabs {
			if len(t.Key) == 0 {
				continue
			}
			if _, err := s.src.ReadChunk(ctx, ChunkRequest{Table: t, Where: req.Where, Limit: 1}); err != nil {
				return SnapshotInfo{}, fmt.Errorf("bind %s: --where on %s: %w", s.bind.Key, t.Name(), err)
			}
		}
	}
	s.mu.Lock()
	if s.parent == nil || s.parent.Err() != nil {
		s.mu.Unlock()
		return SnapshotInfo{}, fmt.Errorf("bind %s is not running", s.bind.Key)
	}
	for _, r := range s.runs {
		for _, n := range names {
			if slices.Contains(r.tables, n) && !slices.Contains(r.finished, n) {
				s.mu.Unlock()
				return SnapshotInfo{}, fmt.Errorf("bind %s: table %s: %w (%s); wait for it or cancel it (trackerd backfill --cancel %s)",
					s.bind.Key, n, ErrSnapshotBusy, r.id, r.id)
			}
		}
	}
	s.mu.Unlock()
	pr := SnapshotProgress{ID: "backfill-" + nonce()[:8], Kind: SnapshotBackfill, Tables: names, All: slices.Clone(names),
		Where: req.Where, Started: time.Now().UTC(), Resolved: true}
	r := s.launch(pr, true)
	select {
	case <-r.ready:
	case <-r.done:
	case <-ctx.Done():
		return SnapshotInfo{}, ctx.Err()
	}
	return s.info(r), nil
}

// cancel stops a running snapshot and waits until it has ended.
func (s *snapshots) cancel(ctx context.Context, id string) (SnapshotInfo, error) {
	s.mu.Lock()
	r := s.runs[id]
	if r == nil {
		var running []string
		for k := range s.runs {
			running = append(running, k)
		}
		s.mu.Unlock()
		return SnapshotInfo{}, fmt.Errorf("bind %s: %q: %w (running: %v)", s.bind.Key, id, ErrUnknownSnapshot, running)
	}
	r.cancelled = true
	r.cancel()
	s.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return SnapshotInfo{}, ctx.Err()
	}
	return s.info(r), nil
}

func (s *snapshots) info(r *snapRun) SnapshotInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return r.infoLocked(s.bind.Key)
}

// infos returns the running snapshots and those that ended, for Stats.
func (s *snapshots) infos() []SnapshotInfo {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.ended)
	for _, r := range s.runs {
		out = append(out, r.infoLocked(s.bind.Key))
	}
	slices.SortFunc(out, func(a, b SnapshotInfo) int { return a.Started.Compare(b.Started) })
	return out
}

// infoLocked describes r; snapshots.mu is held.
func (r *snapRun) infoLocked(bind string) SnapshotInfo {
	in := SnapshotInfo{Bind: bind, ID: r.id, Kind: r.kind, State: r.state, Table: r.table, Tables: slices.Clone(r.tables),
		Done: slices.Clone(r.finished), Where: r.where, Rows: r.rows, Estimated: -1, Started: r.started, Ended: r.endedAt,
		Error: r.err, TableRows: make(map[string]int64, len(r.tableRows)), TableEstimated: make(map[string]int64, len(r.estimates))}
	if r.state != SnapshotRunning {
		in.Table = ""
	}
	for k, v := range r.tableRows {
		in.TableRows[k] = v
	}
	var est int64
	known := len(r.estimates) > 0
	for k, v := range r.estimates {
		in.TableEstimated[k] = v
		if v < 0 {
			known = false
		}
		est += max(v, 0)
	}
	if known {
		in.Estimated = est
	}
	end := time.Now()
	if !r.endedAt.IsZero() {
		end = r.endedAt
	}
	if d := end.Sub(r.begun).Seconds(); d > 0 {
		in.RowsPerSecond = float64(r.rowsHere) / d
	}
	return in
}
