package postgres

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// Streaming tunables.
const (
	tickInterval   = time.Second            // how often the receiver checks its timers
	keepaliveEvery = time.Second            // at most one keepalive record per this
	linger         = 500 * time.Microsecond // longest a received message waits for more to batch with
	writeTimeout   = 10 * time.Second       // for a standby status update
	maxBatchMsgs   = 512
	maxBatchBytes  = 1 << 20
	slabSize       = 256 << 10
	readBufferSize = 64 << 10
	queuedBatches  = 4
)

// runState is what one Run carries from a connection to the next.
type runState struct {
	// resume is the last position handed to the handler that is safe to
	// restart from: a commit's end LSN or a keepalive position. A new
	// connection starts there (or before, see startAt) and skips
	// transactions ending at or before it.
	resume lsn
	// carry is what the decoders share across connections: the open
	// prepared transactions, those of the start position still to be
	// received again, and the orphans.
	carry *carried
	// replayUntil is resume while a connection reads WAL before it again,
	// for the prepared transactions of the position Run started from;
	// zero otherwise.
	replayUntil lsn
	// seen is the highest position the stream has passed: commit and
	// rollback ends, keepalives, heartbeats.
	seen lsn
}

// startAt is where the next connection starts: resume, or the oldest
// prepare of the start position's prepared transactions still to be
// received, so that the server decodes their PREPARE again.
func (st *runState) startAt() lsn {
	start := st.resume
	for l := range st.carry.relisted {
		start = min(start, l)
	}
	return start
}

// errReplayed ends a connection that read WAL again for prepared
// transactions, once past the start position, so that the next one
// streams in-progress transactions (which could not be told apart from
// those already published while re-reading).
var errReplayed = errors.New("prepared transactions received again")

// Run streams the bind's changes to h, starting after from (an LSN "X/X",
// empty for where the slot stands), until ctx ends (it then returns ctx's
// error) or a permanent error: bad configuration, a slot held by another
// process, an invalidated slot, undecodable data, or an error from h.
// Dropped connections, terminated walsenders and server restarts are
// reconnected with exponential backoff, resuming after the last transaction
// handed to h; a transaction that was partly handed over is sent again from
// its Begin. Run releases the source's connections when it returns.
func (s *Source) Run(ctx context.Context, from string, h tracker.Handler) error {
	s.mu.Lock()
	if s.started || s.closed {
		s.mu.Unlock()
		return s.boundary(errors.New("Run called on a source that was already run or closed"))
	}
	s.started = true
	s.mu.Unlock()
	defer s.release()
	start, err := parsePosition(from)
	if err != nil {
		return s.boundary(tracker.ConfigError(fmt.Errorf("resume position %q: %w", from, err)))
	}
	if err := s.checkNewSlot(start); err != nil {
		return s.boundary(err)
	}
	err = s.run(ctx, start, h)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return s.boundary(err)
}

// release closes what Run used.
func (s *Source) release() {
	s.mu.Lock()
	s.closed = true
	conn := s.conn
	s.conn = nil
	s.mu.Unlock()
	s.closeSnapshots()
	if conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn.Close(ctx)
		cancel()
	}
	if s.pool != nil {
		s.pool.Close()
	}
}

func (s *Source) run(ctx context.Context, from position, h tracker.Handler) error {
	s.raiseConfirmed(max(from.confirm(), s.slotConfirmed))
	st := &runState{resume: from.through, carry: newCarried()}
	for _, l := range from.prepared {
		st.carry.relisted[l] = true
	}
	types := newCatalogTypes(ctx, s.pool, s.b.Pool.Timeout, s.log)

	var wg sync.WaitGroup
	hbCtx, stopHeartbeat := context.WithCancel(ctx)
	defer func() { stopHeartbeat(); wg.Wait() }()
	if s.b.Heartbeat > 0 && s.major >= 14 {
		wg.Go(func() { s.heartbeat(hbCtx) })
	}

	var fencedSince time.Time
	permanent := func(err error) bool {
		if !errors.Is(err, tracker.ErrFenced) {
			fencedSince = time.Time{}
			return srckit.IsPermanent(err)
		}
		// A walsender of a connection that just dropped may hold the
		// slot for a moment.
		if fencedSince.IsZero() {
			fencedSince = time.Now()
		}
		return time.Since(fencedSince) >= s.hooks.fenceGrace
	}
	session := func(ctx context.Context, up func(string)) (bool, error) {
		resume := st.resume
		for {
			err := s.session(ctx, st, types, h, up)
			if errors.Is(err, errReplayed) && ctx.Err() == nil {
				s.log.Info("prepared transactions of the start position received again; reconnecting to stream in-progress transactions", "resume", formatLSN(st.resume))
				continue
			}
			return st.resume != resume, err
		}
	}
	return srckit.Loop(ctx, session, permanent, s.streamState)
}

// pluginArgs are pgoutput's options for START_REPLICATION: protocol
// version 3 and two_phase on PostgreSQL 15+ (prepared transactions are
// sent at PREPARE TRANSACTION; starting a slot created without two-phase
// this way turns it on from its confirmed position), streaming of
// in-progress transactions when asked for.
func (s *Source) pluginArgs(streaming bool) []string {
	proto := "1"
	switch {
	case s.twoPhase:
		proto = "3"
	case s.major >= 14:
		proto = "2"
	}
	args := []string{
		"proto_version '" + proto + "'",
		// pgoutput splits the list as SQL identifiers: quote the name,
		// then quote that as a string literal.
		"publication_names " + quoteLiteral(quoteIdent(s.b.Publication)),
	}
	if s.major >= 14 {
		args = append(args, "messages 'true'")
	}
	if streaming {
		args = append(args, "streaming 'on'")
	}
	if s.twoPhase {
		args = append(args, "two_phase 'on'")
	}
	return args
}

// session runs one replication connection until it fails or ctx ends,
// calling up once the server streams.
func (s *Source) session(ctx context.Context, st *runState, types typeResolver, h tracker.Handler, up func(from string)) error {
	conn := s.takeConn()
	if conn == nil {
		var err error
		if conn, err = s.cs.connectRepl(ctx); err != nil {
			return err
		}
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn.Close(cctx)
		cancel()
	}()
	start := st.startAt()
	streaming := s.b.Streaming
	if start < st.resume {
		// Prepared transactions open at the start position: the server
		// sends them again only when decoding starts at their prepare.
		// What ended before resume is skipped, but for streamed
		// transactions that cannot be told before their end: none are
		// streamed until past resume.
		st.replayUntil = st.resume
		streaming = false
		s.log.Info("reading again from the oldest prepared transaction still open at the start position",
			"from", formatLSN(start), "resume", formatLSN(st.resume), "prepared", len(st.carry.relisted))
	}
	err := pglogrepl.StartReplication(ctx, conn, s.b.Slot, start,
		pglogrepl.StartReplicationOptions{Mode: pglogrepl.LogicalReplication, PluginArgs: s.pluginArgs(streaming)})
	if err != nil {
		return s.classifyStream(fmt.Errorf("start replication at %s: %w", formatLSN(start), err))
	}
	s.log.Debug("replication started", "from", formatLSN(start))
	up(st.carry.positionAt(max(st.resume, s.slotConfirmed)).String())
	return s.stream(ctx, conn, st, types, h, streaming)
}

// stream runs the receiver and the processor on a connection in streaming
// (CopyBoth) mode until one fails or ctx ends. It leaves the connection
// open.
func (s *Source) stream(ctx context.Context, conn *pgconn.PgConn, st *runState, types typeResolver, h tracker.Handler, streaming bool) error {
	r := &receiver{src: s, conn: conn, nc: conn.Conn(), statusEvery: s.hooks.statusEvery,
		out: make(chan *batch, queuedBatches), free: make(chan *batch, queuedBatches+2), done: make(chan struct{})}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.run(sctx)
	d := newDecoder(s.b.Tracks, types, st.resume, streaming)
	d.carry, d.log = st.carry, s.log
	d.enc.reformatFloats = s.major < 12
	err := s.process(sctx, st, d, h, r)
	cancel()
	<-r.done
	d.orphan()
	if errors.Is(err, errReceiverDone) {
		err = s.classifyStream(r.err)
	}
	return err
}

// classifyStream sorts the errors of a replication stream into permanent
// (configuration, fencing, lost slot) and transient ones.
func (s *Source) classifyStream(err error) error {
	if err == nil {
		return nil
	}
	slot := s.b.Slot
	msg := err.Error()
	switch pgCode(err) {
	case "55006":
		return fencedError(slot, pidFromError(err))
	case "42704":
		if strings.Contains(msg, "publication") {
			return tracker.ConfigError(fmt.Errorf("%w; fix: the publication must exist before the slot's position: recreate publication %s, then drop and recreate slot %s", err, quoteIdent(s.b.Publication), slot))
		}
		if strings.Contains(msg, "slot") {
			return fmt.Errorf("replication slot %s no longer exists: %w: %w", slot, err, tracker.ErrResnapshotRequired)
		}
	case "55000":
		if strings.Contains(msg, "invalidated") || strings.Contains(msg, "no longer get changes") {
			return fmt.Errorf("replication slot %s was invalidated: %w: %w", slot, err, tracker.ErrResnapshotRequired)
		}
		if strings.Contains(msg, "wal_level") {
			return tracker.ConfigError(fmt.Errorf("%w; fix: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL", err))
		}
	case "42501":
		return tracker.ConfigError(fmt.Errorf("%w; fix: ALTER ROLE %s REPLICATION;", err, quoteIdent(s.cs.user)))
	}
	return err
}

// wireMsg is one message from the server: XLogData (data set) or a primary
// keepalive (data nil).
type wireMsg struct {
	walStart lsn
	walEnd   lsn
	data     []byte
}

// batch is a run of messages the receiver hands to the processor at once.
type batch struct {
	msgs []wireMsg
	size int
}

var errReceiverDone = errors.New("receiver stopped")

// process decodes messages and hands their records to h, in order.
func (s *Source) process(ctx context.Context, st *runState, d *decoder, h tracker.Handler, r *receiver) error {
	var fate <-chan time.Time
	if len(st.carry.orphans) > 0 {
		t := time.NewTicker(s.hooks.fateEvery)
		defer t.Stop()
		fate = t.C
	}
	handle := func(b *batch) error {
		for i := range b.msgs {
			if err := s.handleMsg(ctx, st, d, h, &b.msgs[i]); err != nil {
				return err
			}
		}
		r.recycle(b)
		return nil
	}
	for {
		select {
		case b := <-r.out:
			if err := handle(b); err != nil {
				return err
			}
		case <-fate:
			if !d.inTx && !d.inStream {
				if err := s.checkOrphans(ctx, st, h); err != nil {
					return err
				}
			}
			if len(st.carry.orphans) == 0 {
				fate = nil
			}
		case <-r.done:
			// What arrived before the failure is good: use it.
			for {
				select {
				case b := <-r.out:
					if err := handle(b); err != nil {
						return err
					}
				default:
					return errReceiverDone
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s *Source) handleMsg(ctx context.Context, st *runState, d *decoder, h tracker.Handler, m *wireMsg) error {
	if m.data == nil {
		st.seen = max(st.seen, m.walEnd)
		if d.idle() && m.walEnd > st.resume {
			if err := s.hand(ctx, st, h, tracker.Record{Kind: tracker.RecordKeepalive}, m.walEnd); err != nil {
				return err
			}
		}
		return s.replayed(st, d)
	}
	t0 := time.Now()
	if err := d.decode(m.data, m.walStart); err != nil {
		return srckit.Permanent(fmt.Errorf("decode message at %s: %w", formatLSN(m.walStart), err))
	}
	took := time.Since(t0)
	for i := range d.out {
		r := d.out[i]
		pos := d.outPos[i]
		if r.Kind == tracker.RecordKeepalive && pos <= st.resume {
			continue
		}
		if r.Kind == tracker.RecordChange {
			r.Decode = took
		}
		if err := s.hand(ctx, st, h, r, pos); err != nil {
			return err
		}
	}
	st.seen = max(st.seen, d.seen)
	return s.replayed(st, d)
}

// replayed ends the re-reading for the start position's prepared
// transactions once the stream is past the start position: the
// transactions listed and not received again are forgotten, and, when the
// bind streams in-progress transactions, the connection is ended
// (errReplayed) for one that does.
func (s *Source) replayed(st *runState, d *decoder) error {
	if st.replayUntil == 0 || st.seen < st.replayUntil || d.inTx || d.inStream {
		return nil
	}
	st.replayUntil = 0
	if n := len(st.carry.relisted); n > 0 {
		var at []string
		for l := range st.carry.relisted {
			at = append(at, formatLSN(l))
		}
		s.log.Warn("prepared transactions of the start position were not sent again; their COMMIT PREPARED cannot be published",
			"prepared_at", strings.Join(at, ","))
		clear(st.carry.relisted)
	}
	if s.b.Streaming {
		return errReplayed
	}
	return nil
}

// hand passes one record to h and notes the positions it makes safe. A
// commit's or keepalive's Pos is set here, with the prepared transactions
// open now (see position).
func (s *Source) hand(ctx context.Context, st *runState, h tracker.Handler, r tracker.Record, pos lsn) error {
	if r.Kind == tracker.RecordCommit || r.Kind == tracker.RecordKeepalive {
		r.Pos = st.carry.positionAt(max(st.resume, pos)).String()
	}
	if err := h.Handle(ctx, r); err != nil {
		return srckit.HandlerError(err)
	}
	if r.Kind == tracker.RecordCommit || r.Kind == tracker.RecordKeepalive {
		st.resume = max(st.resume, pos)
	}
	return nil
}

// heartbeat writes a logical message every b.Heartbeat while the stream is
// idle, so that an idle slot's position moves on (PostgreSQL 14+).
func (s *Source) heartbeat(ctx context.Context) {
	t := time.NewTicker(s.b.Heartbeat)
	defer t.Stop()
	timeout := s.b.Pool.Timeout
	if timeout <= 0 {
		timeout = defaultConnectTimeout
	}
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if time.Since(time.Unix(0, s.lastData.Load())) < s.b.Heartbeat {
			continue
		}
		qctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := s.pool.Exec(qctx, "SELECT pg_catalog.pg_logical_emit_message(false, '"+heartbeatPrefix+"', now()::text)")
		cancel()
		switch {
		case err == nil:
			failing = false
		case ctx.Err() != nil:
			return
		case !failing:
			s.log.Warn("heartbeat failed", "err", s.cs.safe(err))
			failing = true
		default:
			s.log.Debug("heartbeat failed", "err", s.cs.safe(err))
		}
	}
}

// receiver owns a replication connection: it reads messages, hands them to
// the processor in batches, and sends standby status updates on time even
// while the processor (and so the handler) is blocked; it then stops
// reading, and TCP back-pressure holds the server.
type receiver struct {
	src         *Source
	conn        *pgconn.PgConn
	nc          net.Conn
	statusEvery time.Duration

	out  chan *batch
	free chan *batch
	done chan struct{}
	err  error // set before done is closed

	write      lsn // highest position received
	sentWrite  lsn
	sentFlush  lsn
	nextStatus time.Time
	nextTick   time.Time
	lastRecv   time.Time
	lastKA     time.Time
	pendingKA  lsn // a keepalive end held back by the rate limit, 0 if none
	deadline   time.Time
	slab       []byte
	timer      *time.Timer
	status     [39]byte
}

func (r *receiver) getBatch() *batch {
	select {
	case b := <-r.free:
		return b
	default:
		return &batch{msgs: make([]wireMsg, 0, 64)}
	}
}

// recycle returns a processed batch to the receiver.
func (r *receiver) recycle(b *batch) {
	clear(b.msgs)
	b.msgs, b.size = b.msgs[:0], 0
	select {
	case r.free <- b:
	default:
	}
}

// copyData copies a message out of pgconn's read buffer, which the next
// read reuses. Small messages share slabs: one allocation per 256 KiB.
func (r *receiver) copyData(p []byte) []byte {
	if len(p) > slabSize/4 {
		return append([]byte(nil), p...)
	}
	if cap(r.slab)-len(r.slab) < len(p) {
		r.slab = make([]byte, 0, slabSize)
	}
	n := len(r.slab)
	r.slab = append(r.slab, p...)
	return r.slab[n:len(r.slab):len(r.slab)]
}

// liveness is how long the receiver waits for any message while reading
// before it declares the connection dead; it asks for replies when quiet.
func (r *receiver) liveness() time.Duration { return 3*r.statusEvery + 10*time.Second }

func (r *receiver) run(ctx context.Context) {
	err := r.loop(ctx)
	if err != nil && ctx.Err() != nil {
		// Stopping: tell the server what is confirmed on the way out.
		r.sendStatus(time.Now(), false)
	}
	r.err = err
	close(r.done)
}

func (r *receiver) loop(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { r.nc.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	r.timer = time.NewTimer(time.Hour)
	defer r.timer.Stop()
	now := time.Now()
	r.lastRecv = now
	if err := r.sendStatus(now, false); err != nil {
		return err
	}
	r.nextTick = now.Add(tickInterval)
	cur := r.getBatch()
	var batchStart time.Time
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now = time.Now()
		if !now.Before(r.nextTick) {
			if err := r.tick(now); err != nil {
				return err
			}
			if r.pendingKA != 0 && now.Sub(r.lastKA) >= keepaliveEvery {
				if len(cur.msgs) == 0 {
					batchStart = now
				}
				cur.msgs = append(cur.msgs, wireMsg{walEnd: r.pendingKA})
				r.lastKA, r.pendingKA = now, 0
			}
		}
		// Hand the batch over when it is full or has waited long enough:
		// one wake-up of the processor per batch, not per message.
		if n := len(cur.msgs); n > 0 && (n >= maxBatchMsgs || cur.size >= maxBatchBytes || now.Sub(batchStart) >= linger) {
			if err := r.push(ctx, cur); err != nil {
				return err
			}
			cur = r.getBatch()
			if time.Since(now) > linger {
				r.lastRecv = time.Now() // not reading meanwhile was our choice
			}
		}
		dl := r.nextTick
		if len(cur.msgs) > 0 {
			if p := batchStart.Add(linger); p.Before(dl) {
				dl = p
			}
		}
		if !dl.Equal(r.deadline) {
			if err := r.nc.SetReadDeadline(dl); err != nil {
				return err
			}
			r.deadline = dl
		}
		if ctx.Err() != nil {
			continue // the AfterFunc's deadline may have been overwritten
		}
		msg, err := r.conn.ReceiveMessage(context.Background())
		if err != nil {
			if pgconn.Timeout(err) {
				r.deadline = time.Time{}
				if ctx.Err() == nil && time.Since(r.lastRecv) > r.liveness() {
					return fmt.Errorf("no message from the server in %s", r.liveness())
				}
				continue
			}
			return fmt.Errorf("receive: %w", err)
		}
		now = time.Now()
		r.lastRecv = now
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			empty := len(cur.msgs) == 0
			if err := r.handleCopyData(now, m.Data, cur); err != nil {
				return err
			}
			if empty && len(cur.msgs) > 0 {
				batchStart = now
			}
		case *pgproto3.ErrorResponse:
			return pgconn.ErrorResponseToPgError(m)
		case *pgproto3.CopyDone:
			return errors.New("server ended the replication stream")
		}
	}
}

// handleCopyData handles one CopyData message of the stream.
func (r *receiver) handleCopyData(now time.Time, data []byte, cur *batch) error {
	if len(data) == 0 {
		return nil
	}
	switch data[0] {
	case pglogrepl.XLogDataByteID:
		if len(data) < 25 {
			return srckit.Permanent(malformed("XLogData of %d bytes", len(data)))
		}
		m := wireMsg{
			walStart: lsn(binary.BigEndian.Uint64(data[1:])),
			walEnd:   lsn(binary.BigEndian.Uint64(data[9:])),
			data:     r.copyData(data[25:]),
		}
		r.write = max(r.write, m.walStart)
		r.noteServerEnd(m.walEnd)
		r.src.lastData.Store(now.UnixNano())
		r.pendingKA = 0 // data supersedes a deferred keepalive
		cur.msgs = append(cur.msgs, m)
		cur.size += len(m.data)
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		if len(data) != 18 {
			return srckit.Permanent(malformed("keepalive of %d bytes", len(data)))
		}
		end := lsn(binary.BigEndian.Uint64(data[1:]))
		r.write = max(r.write, end)
		r.noteServerEnd(end)
		if data[17] != 0 {
			if err := r.sendStatus(now, false); err != nil {
				return err
			}
		}
		if now.Sub(r.lastKA) >= keepaliveEvery {
			r.lastKA = now
			r.pendingKA = 0
			cur.msgs = append(cur.msgs, wireMsg{walEnd: end})
		} else {
			// Too soon after the last one: keep it for the next tick, so
			// that an idle slot still reaches the server's latest end.
			r.pendingKA = end
		}
	}
	return nil
}

func (r *receiver) noteServerEnd(end lsn) {
	if uint64(end) > r.src.serverEnd.Load() {
		r.src.serverEnd.Store(uint64(end))
	}
}

// push hands b to the processor, blocking, and keeps the status updates
// going while it waits.
func (r *receiver) push(ctx context.Context, b *batch) error {
	for {
		r.timer.Reset(time.Until(r.nextTick))
		select {
		case r.out <- b:
			return nil
		case <-r.timer.C:
			if err := r.tick(time.Now()); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tick sends a status update when one is due, or when the confirmed or
// received position moved since the last one.
func (r *receiver) tick(now time.Time) error {
	r.nextTick = now.Add(tickInterval)
	flush := lsn(r.src.confirmed.Load())
	if now.Before(r.nextStatus) && flush == r.sentFlush && max(r.write, flush) == r.sentWrite {
		return nil
	}
	// Ask for a reply when the server has been quiet, to notice a dead
	// connection.
	return r.sendStatus(now, now.Sub(r.lastRecv) >= r.statusEvery)
}

// pgEpochUnixMicro is PostgreSQL's time origin, 2000-01-01 UTC, in Unix
// microseconds.
const pgEpochUnixMicro = 946684800 * 1000000

// sendStatus sends a standby status update with write = the highest
// position received and flush = apply = the confirmed position, set
// explicitly (pglogrepl's SendStandbyStatusUpdate would replace a zero flush
// with write, confirming unacknowledged data).
func (r *receiver) sendStatus(now time.Time, reply bool) error {
	flush := lsn(r.src.confirmed.Load())
	write := max(r.write, flush)
	b := appendStatus(r.status[:0], write, flush, now, reply)
	r.nc.SetWriteDeadline(now.Add(writeTimeout))
	err := r.conn.Frontend().SendUnbufferedEncodedCopyData(b)
	r.nc.SetWriteDeadline(time.Time{})
	if err != nil {
		return fmt.Errorf("send standby status: %w", err)
	}
	r.sentWrite, r.sentFlush = write, flush
	r.nextStatus = now.Add(r.statusEvery)
	return nil
}

// appendStatus appends a Standby Status Update in a CopyData message
// (https://www.postgresql.org/docs/current/protocol-replication.html):
// write, flush and apply positions (apply = flush), the client's clock and
// whether a reply is requested.
func appendStatus(b []byte, write, flush lsn, now time.Time, reply bool) []byte {
	b = append(b, 'd', 0, 0, 0, 38, pglogrepl.StandbyStatusUpdateByteID)
	b = binary.BigEndian.AppendUint64(b, uint64(write))
	b = binary.BigEndian.AppendUint64(b, uint64(flush))
	b = binary.BigEndian.AppendUint64(b, uint64(flush))
	b = binary.BigEndian.AppendUint64(b, uint64(now.UnixMicro()-pgEpochUnixMicro))
	if reply {
		return append(b, 1)
	}
	return append(b, 0)
}
