package nats

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// How a lane publishes (JetStream mode).
//
// Publish encodes the event into a free slot of the lane's window (a ring
// of MaxInflight slots indexed by LaneSeq, holding at most MaxInflightBytes
// of messages, but always at least one) and returns; it blocks only while
// the window is full. The lane's sender goroutine sends the queued slots in
// LaneSeq order, each with a reply subject of the lane's inbox, on which
// the stream answers. The ack handler (the reply subscription's goroutine)
// marks slots stored and moves the watermark: the highest n such that 1..n
// are all stored. The notifier goroutine reports the watermark to the
// tracker (acked), coalescing, so that a slow acked never delays reading
// acks. Nothing waits for an ack between two sends.
//
// nats.go's jetstream PublishMsgAsync is not used: its own documentation
// (the Publisher interface) warns that messages it publishes asynchronously
// may be stored out of order when retried, and keeping a bind's order is
// what a lane is for; nor does nats.go (v1.55) publish fast batches.
//
// The parts: the window (window.go) holds every piece of state described
// below — the slots, the watermark, the rounds, the open fast batch — and
// decides, doing no I/O; the lane owns the goroutines, the connection's
// sends and the stream's answers (batch.go and puback.go read and write
// those messages), and a lifetime context that Close cancels.
//
// Order, on streams that allow fast batch publishing (allow_batched,
// nats-server 2.14 and later; trackerd creates its stream so there): the
// lane sends its events as a fast batch in gap-fail mode (batch.go), in
// which the stream stores message n of a batch only right after message
// n-1 of the same batch, stored or dropped as a duplicate. When a message
// is lost or refused the stream ends the batch there, telling how many
// messages it stored, and the lane starts a new batch at the first event
// not stored, whose predecessor is. So every stored event follows its
// predecessor, whatever fails: a refused publish, a server restart, a
// stream leader lost mid-window, messages of an earlier batch arriving
// late. After a failure whose outcome is unknown (no answer within
// AckTimeout, a broken connection), the lane first asks the old batch's
// state (a ping), to learn what it stored or that it is whole (then it goes
// on with it). The stream acknowledges a batch every few hundred messages;
// when the lane has nothing more to send (commitIdle, maxTailWait) it ends
// the batch, which acknowledges the rest, and opens a new one with the
// next event once the old one's end is confirmed.
//
// Order, on other streams (servers before 2.14, or a stream without
// allow_batched): each message is published on its own, with the reply
// subject "<inbox>.<laneseq>.<round>", and answered by a PubAck. There, one
// case still reorders: message k fails (refused, no responders, no answer
// within AckTimeout) while later messages k+1.., already sent, are stored;
// k is stored after them when it is sent again. The lane counts such
// events (Stats.Reordered: an event stored at a lower stream sequence than
// an earlier event of its lane, as the PubAcks tell), logs them, and marks
// every change event with the header Trackerd-Order (wire.HeaderOrder:
// run, its place among the run's change events and among its phase's),
// by which
// changefeed puts them back in order. A reordered event is displaced by fewer than MaxInflight
// events: k+MaxInflight cannot be published before k is stored.
//
// In both modes, a failure stops sending; the lane lets what is in flight
// settle (answered, or AckTimeout after the last send; in a batch, the
// ping's answer), waits with back-off until the connection is up, and
// starts a new round: every message not yet stored is sent again, in
// LaneSeq order, with the same Nats-Msg-Id and bytes. JetStream drops those
// it already holds as duplicates (Stats.Duplicates); a batch whose first
// message is one ends at once, and the lane opens the next at the message
// after it. Outside a batch, the new round sends its first message alone
// and waits for its answer, so that a stream that is still unavailable
// refuses one message, not the window. Messages re-sent after the
// duplicate window has passed are stored twice.
//
// Memory: only the encoded bytes of unacknowledged messages are kept, at
// most MaxInflight of them and MaxInflightBytes per lane (plus the one
// event that crosses it); while NATS is down the window fills and Publish
// blocks, which pauses the database reader.

// orderHeaderLen is the most wire.HeaderOrder adds to a message: a run
// token of at most 16 bytes and two counts.
const orderHeaderLen = len(wire.HeaderOrder+": ") + 16 + 1 + 20 + 1 + 20 + len("\r\n")

// laneSink is what a lane needs of the sink that opened it, and shares
// with the sink's other lanes: the stream, its readiness and limits.
type laneSink interface {
	// awaitReady blocks until the stream (or, in core mode, the
	// connection) is ready, retrying with back-off, or ctx ends.
	awaitReady(ctx context.Context, log *slog.Logger) error
	// limit is the largest message the server and stream accept, 0 when
	// unknown.
	limit() int
	// recheckStream checks the stream again, creating it if it is gone.
	recheckStream(ctx context.Context) error
	// streamBatches reports whether the stream takes fast batches.
	streamBatches() bool
	// batchesRefused records that the stream refused a fast batch.
	batchesRefused()
	// laneClosed forgets a closed lane.
	laneClosed(l *lane)
}

// laneConfig is what a lane is opened with.
type laneConfig struct {
	bind     string
	acked    func(uint64) // nil: nothing to report to
	log      *slog.Logger
	t        transport
	sink     laneSink
	subjects *wire.Subjects
	c        *counters // the bind's
	o        Options   // with the defaults applied (newSink)
}

// lane is one bind's ordered publisher ([tracker.Lane]), as the comment
// at the top of this file describes.
type lane struct {
	bind     string
	acked    func(uint64)
	log      *slog.Logger
	t        transport
	sink     laneSink
	subjects *wire.Subjects
	c        *counters
	core     bool
	echo     bool
	oversize string // OversizePolicy
	inbox    string // reply prefix, ending in "."
	unsub    func() error
	run      string // this run's token in wire.HeaderOrder

	// The lifetime: ctx ends when Close stops the lane, and wg counts the
	// sender and the notifier.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// Publish's own state, guarded by pubMu (the tracker calls Publish from
	// one goroutine; the mutex makes misuse safe, not fast).
	pubMu     sync.Mutex
	subjBuf   []byte
	dataBuf   []byte
	phaseSeqs [3]uint64 // change events published per phase (before_commit, after_commit, rollback)
	orderSeq  uint64    // change events published (lifecycle events aside)
	// interned holds rendered subjects: a table's changes share a few, so
	// a publish need not allocate one.
	interned map[string]string

	// The sender's own state.
	msg      natsgo.Msg
	hdr      natsgo.Header
	replyBuf []byte
	orderBuf []byte

	// mu guards the window and the lane's state below; unlock releases it.
	mu       sync.Mutex
	w        *window
	fatal    error // the lane cannot go on
	closing  bool
	drained  chan struct{} // closed once closing and everything is stored
	dead     chan struct{} // closed when fatal is set
	lastWarn time.Time     // when a failed round was last logged as a warning

	wakeSend  chan struct{}
	wakePub   chan struct{}
	wakeAck   chan struct{}
	closeOnce sync.Once
}

// newLane opens a lane: it subscribes to its acknowledgements (JetStream)
// and starts its sender and notifier, which run until Close.
func newLane(cfg laneConfig) (*lane, error) {
	if cfg.acked == nil {
		cfg.acked = func(uint64) {}
	}
	core := cfg.o.Mode == Core
	ctx, cancel := context.WithCancel(context.Background())
	l := &lane{
		bind: cfg.bind, acked: cfg.acked, log: cfg.log, t: cfg.t, sink: cfg.sink, subjects: cfg.subjects, c: cfg.c,
		core: core, echo: cfg.o.Echo, oversize: cfg.o.OversizePolicy,
		run:    strconv.FormatUint(rand.Uint64()|1<<63, 36),
		ctx:    ctx,
		cancel: cancel,
		w: newWindow(uint64(cfg.o.MaxInflight), cfg.o.MaxInflightBytes, cfg.o.AckTimeout, core,
			!core && cfg.sink.streamBatches(), cfg.c),
		dead:     make(chan struct{}),
		wakeSend: make(chan struct{}, 1),
		wakePub:  make(chan struct{}, 1),
		wakeAck:  make(chan struct{}, 1),
		hdr:      natsgo.Header{wire.HeaderContentType: {wire.ContentType}, wire.HeaderMsgID: {""}},
	}
	if !core {
		l.inbox = l.t.newInbox() + "."
		unsub, err := l.t.subscribe(l.inbox+">", l.onAck)
		if err != nil {
			cancel()
			return nil, fmt.Errorf("nats: lane %s: subscribe to acks: %w", cfg.bind, err)
		}
		l.unsub = unsub
	}
	l.wg.Add(2)
	go l.sender()
	go l.notifier()
	return l, nil
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// unlock releases l.mu after a change to the window, and then acts on what
// the window noted: it wakes Publish, the notifier and the sender, logs
// failures, reorders and recoveries, and ends a Close that waits for the
// window to drain.
func (l *lane) unlock() {
	n := l.w.takeNotes()
	var drained chan struct{}
	if l.closing && l.drained != nil && l.w.empty() {
		drained, l.drained = l.drained, nil
	}
	if n.noBatch {
		l.sink.batchesRefused() // before any new round reads it
	}
	warn := false
	if n.failed != nil {
		// Loud, never a silent stall: a warning at the first failure,
		// then at most every warnEvery while the failures go on.
		if now := time.Now(); !n.again || now.Sub(l.lastWarn) >= warnEvery {
			l.lastWarn, warn = now, true
		}
	}
	l.mu.Unlock()

	if n.failed != nil {
		if warn {
			l.log.Warn("publish failed: re-sending every unacknowledged event", slog.Any("err", n.failed), slog.Uint64("unacked", n.unacked))
		} else {
			l.log.Debug("publish failed again", slog.Any("err", n.failed), slog.Uint64("unacked", n.unacked))
		}
	}
	if r := n.reorder; r != nil {
		l.log.Warn("events stored out of order: a failed publish let later events of this bind into the stream before an earlier one (the stream does not allow batch publishing); changefeed restores their order by the Trackerd-Order header",
			slog.Uint64("events", r.events), slog.String("first_event", r.firstID), slog.String("last_event", r.lastID),
			slog.String("stored_after_them", r.lateID), slog.Uint64("lane_seq", r.lateSeq))
	}
	if n.resumed {
		l.log.Info("publishing resumed")
	}
	if n.noBatch {
		l.log.Info("the stream does not allow batch publishing any more: publishing events one by one")
	}
	if n.stored {
		signal(l.wakePub)
		signal(l.wakeAck)
	}
	if n.wakeSend {
		signal(l.wakeSend)
	}
	if drained != nil {
		close(drained)
	}
}

// Publish encodes ev into the lane's window and returns without waiting for
// its acknowledgement. See [tracker.Lane].
func (l *lane) Publish(ctx context.Context, ev *tracker.Event) error {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	if err := l.check(ev); err != nil {
		return err
	}
	if err := l.sink.awaitReady(ctx, l.log); err != nil {
		return fmt.Errorf("nats: lane %s: %w", l.bind, err)
	}
	// Wait for a free slot, and for room in the byte budget (an empty
	// window takes any event).
	for {
		l.mu.Lock()
		fatal, closing, full := l.fatal, l.closing, l.w.full()
		l.mu.Unlock()
		switch {
		case fatal != nil:
			return fatal
		case closing:
			return ErrLaneClosed
		case !full:
		default:
			select {
			case <-l.wakePub:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		break
	}
	// The slot at next is free, and only Publish touches a free slot.
	seq := ev.LaneSeq
	sl := l.w.slot(seq)
	oldCap := cap(sl.data)
	data, err := l.encode(sl.data[:0], ev)
	if err != nil {
		return err
	}
	l.subjBuf = l.subjects.AppendEvent(l.subjBuf[:0], ev)
	subject := l.intern(l.subjBuf)
	*sl = slot{seq: seq, subject: subject, id: ev.ID, data: data, state: slotQueued}
	if ev.Lifecycle == nil {
		// Lifecycle events are on control subjects that a subscriber to a
		// bind's changes does not read: they stay out of the order its
		// Trackerd-Order header counts, or it would wait for them.
		l.orderSeq++
		sl.orderSeq, sl.phaseSeq = l.orderSeq, l.nextPhaseSeq(ev.Phase)
	}
	l.mu.Lock()
	l.w.hold(int64(cap(data) - oldCap))
	if l.closing {
		// Close began while the event was encoded, and may have found
		// the lane drained: the event must not slip in behind its back.
		l.unlock()
		return ErrLaneClosed
	}
	l.w.queue(len(data))
	l.unlock()
	l.c.published.Add(1)
	l.c.inFlight.Add(1)
	if l.echo {
		l.log.LogAttrs(ctx, slog.LevelInfo, "published", slog.String("subject", subject), slog.String("event_id", ev.ID))
	}
	return nil
}

// nextPhaseSeq counts an event of phase p and returns its place among the
// run's events of that phase. pubMu is held.
func (l *lane) nextPhaseSeq(p tracker.Phase) uint64 {
	i := 0
	switch p {
	case tracker.PhaseAfterCommit:
		i = 1
	case tracker.PhaseRollback:
		i = 2
	}
	l.phaseSeqs[i]++
	return l.phaseSeqs[i]
}

// check refuses events the lane cannot publish: they are bugs upstream.
func (l *lane) check(ev *tracker.Event) error {
	switch {
	case ev == nil || ev.Change == nil:
		return fmt.Errorf("nats: lane %s: event without a change", l.bind)
	case !ev.Phase.Valid():
		return fmt.Errorf("nats: lane %s: event %s: unknown phase %q", l.bind, ev.ID, ev.Phase)
	case !validMsgID(ev.ID):
		return fmt.Errorf("nats: lane %s: event id %q: want printable ASCII without spaces", l.bind, ev.ID)
	}
	l.mu.Lock()
	next := l.w.next
	l.mu.Unlock()
	if ev.LaneSeq != next {
		return fmt.Errorf("nats: lane %s: event %s has LaneSeq %d, want %d (events must come in LaneSeq order from 1)", l.bind, ev.ID, ev.LaneSeq, next)
	}
	return nil
}

func validMsgID(id string) bool {
	if id == "" {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] >= 0x7f {
			return false
		}
	}
	return true
}

// headerLen is the size of the headers a message with this id carries, as
// the server counts them: "NATS/1.0\r\n", one "Key: value\r\n" line per
// header, and a blank line.
func headerLen(id string) int {
	return len("NATS/1.0\r\n") + len(wire.HeaderContentType+": "+wire.ContentType+"\r\n") +
		len(wire.HeaderMsgID+": \r\n") + len(id) + len("\r\n")
}

// maxHeaderLen is the most headers a message with this id carries: with
// wire.HeaderOrder, sent on streams without batch publishing.
func maxHeaderLen(id string) int { return headerLen(id) + orderHeaderLen }

// encode appends ev's message to b, applying the oversize policy.
func (l *lane) encode(b []byte, ev *tracker.Event) ([]byte, error) {
	b = wire.AppendEvent(b, ev, wire.EventData(ev))
	limit := l.sink.limit()
	size := len(b) + maxHeaderLen(ev.ID)
	if limit <= 0 || size <= limit {
		return b, nil
	}
	if l.oversize == OversizeTruncate && ev.Phase != tracker.PhaseRollback && ev.Lifecycle == nil {
		out, cols, ok := l.truncate(b[:0], ev, size, limit)
		if ok {
			l.c.truncated.Add(1)
			l.log.Warn("event too large: column values left out", slog.String("event_id", ev.ID),
				slog.String("table", ev.Change.Schema+"."+ev.Change.Table), slog.Any("columns", cols),
				slog.Int("size", size), slog.Int("new_size", len(out)+maxHeaderLen(ev.ID)), slog.Int("limit", limit))
			return out, nil
		}
		return nil, fmt.Errorf("nats: event %s (%s.%s) is %d bytes with its headers, over the limit of %d bytes (the server's max_payload or the stream's max_msg_size), and still too large with every non-key column left out: raise max_payload: %w",
			ev.ID, ev.Change.Schema, ev.Change.Table, size, limit, ErrTooLarge)
	}
	return nil, fmt.Errorf("nats: event %s (%s.%s) is %d bytes with its headers, over the limit of %d bytes (the server's max_payload or the stream's max_msg_size): raise max_payload, or set OVERSIZE_POLICY=truncate to leave the largest column values out: %w",
		ev.ID, ev.Change.Schema, ev.Change.Table, size, limit, ErrTooLarge)
}

// maxInterned bounds the subject cache (subjects that hold key values are
// all different).
const maxInterned = 4096

// intern returns b as a string, shared with earlier identical subjects.
func (l *lane) intern(b []byte) string {
	if s, ok := l.interned[string(b)]; ok {
		return s
	}
	if l.interned == nil || len(l.interned) >= maxInterned {
		l.interned = make(map[string]string)
	}
	s := string(b)
	l.interned[s] = s
	return s
}

// sender sends queued slots in order and runs the retry rounds, until the
// lane's context ends.
func (l *lane) sender() {
	defer l.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	bo := backoff.Publish.New()
	for {
		select {
		case <-l.ctx.Done():
			return
		case <-l.wakeSend:
		case <-timer.C:
		}
		wait, ok := l.work(bo)
		for ok && wait == 0 {
			wait, ok = l.work(bo)
		}
		if !ok {
			return
		}
		if wait > 0 {
			timer.Reset(wait)
		}
	}
}

// work does one step of the sender, as the window decides it: it returns
// how long to wait before the next step (0: go on now, -1: until woken),
// and false when the lane stops.
func (l *lane) work(bo *backoff.Backoff) (time.Duration, bool) {
	now := time.Now()
	l.mu.Lock()
	if l.fatal != nil {
		l.mu.Unlock()
		return -1, true
	}
	a := l.w.step(now)
	switch a.kind {
	case actSend:
		// Sent with l.mu held: a slot's bytes may not change while they
		// are sent.
		reply := ""
		if a.batchID != "" {
			l.replyBuf = appendBatchReply(l.replyBuf[:0], l.inbox, a.batchID, flowFor(l.w.size), a.bseq, a.op)
			reply = string(l.replyBuf)
		}
		if err := l.send(a.sl, reply); err != nil {
			l.sendFailed(err)
		} else {
			l.w.sent(a, now)
		}
		l.unlock()
		return 0, true
	case actControl:
		if a.op == batchOpPing && !l.t.connected() {
			// Not connected: back off, then ask.
			l.unlock()
			return 0, bo.Wait(l.ctx) == nil
		}
		if err := l.sendControl(a); err != nil {
			if a.op == batchOpPing {
				l.log.Debug("cannot ask the stream about the batch", slog.Any("err", err))
				l.w.batchOver()
			} else {
				l.sendFailed(err)
			}
		} else {
			l.w.sent(a, now)
		}
		l.unlock()
		return 0, true
	case actRecover:
		return l.recover(a, bo)
	}
	l.unlock()
	return a.wait, true
}

// send hands one message to the connection, with reply as its reply
// subject ("" for the per-message one). l.mu is held.
func (l *lane) send(sl *slot, reply string) error {
	l.hdr[wire.HeaderMsgID][0] = sl.id
	l.msg = natsgo.Msg{Subject: sl.subject, Data: sl.data, Header: l.hdr}
	switch {
	case l.core:
	case reply != "":
		delete(l.hdr, wire.HeaderOrder)
		l.msg.Reply = reply
	default:
		l.replyBuf = appendPubReply(l.replyBuf[:0], l.inbox, sl.seq, l.w.gen)
		l.msg.Reply = string(l.replyBuf)
		if sl.orderSeq == 0 {
			delete(l.hdr, wire.HeaderOrder)
			break
		}
		l.orderBuf = wire.AppendOrder(l.orderBuf[:0], l.run, sl.orderSeq, sl.phaseSeq)
		l.hdr[wire.HeaderOrder] = []string{string(l.orderBuf)}
	}
	return l.t.publishMsg(&l.msg)
}

// sendControl sends the EOB or ping message of a batch a asks for: no
// payload, not stored. l.mu is held.
func (l *lane) sendControl(a act) error {
	l.replyBuf = appendBatchReply(l.replyBuf[:0], l.inbox, a.batchID, flowFor(l.w.size), a.bseq, a.op)
	l.msg = natsgo.Msg{Subject: a.subject, Reply: string(l.replyBuf)}
	return l.t.publishMsg(&l.msg)
}

// sendFailed handles a message the connection refused. l.mu is held.
func (l *lane) sendFailed(err error) {
	if errors.Is(err, natsgo.ErrConnectionClosed) {
		l.setFatal(fmt.Errorf("nats: lane %s: %w", l.bind, err))
		return
	}
	l.w.fail(err)
}

// recover ends a failed round that has settled: it backs off, waits for
// the connection, has the sink check the stream again when none answered,
// and starts a new round. l.mu is held; it unlocks it.
func (l *lane) recover(a act, bo *backoff.Backoff) (time.Duration, bool) {
	if a.progressed {
		bo.Reset() // the failed round made progress
	}
	noStream := errors.Is(l.w.failed, errNoStream)
	l.unlock()
	if bo.Wait(l.ctx) != nil {
		return 0, false
	}
	if !l.t.connected() {
		return 0, true
	}
	if noStream && !l.core {
		// The stream went away (deleted, or a server without its
		// store): check it again, creating it as at start.
		if err := l.sink.recheckStream(l.ctx); err != nil {
			if errors.Is(err, tracker.ErrConfig) {
				l.mu.Lock()
				l.setFatal(fmt.Errorf("nats: lane %s: %w", l.bind, err))
				l.unlock()
				return -1, true
			}
			l.log.Debug("stream check failed", slog.Any("err", err))
		}
	}
	l.mu.Lock()
	l.w.newRound(l.sink.streamBatches(), time.Now())
	l.unlock()
	return 0, true
}

// setFatal stops the lane for good. l.mu is held.
func (l *lane) setFatal(err error) {
	if l.fatal != nil {
		return
	}
	l.fatal = err
	close(l.dead)
	signal(l.wakePub)
}

// onAck handles the stream's answer to one publish (the reply
// subscription's goroutine).
func (l *lane) onAck(m *natsgo.Msg) {
	rest := m.Subject[min(len(l.inbox), len(m.Subject)):]
	if id, bseq, op, ok := parseBatchReply(rest); ok {
		var status string
		if m.Header != nil {
			status = m.Header.Get("Status")
		}
		a, perr := parseBatchAnswer(status, m.Data)
		l.mu.Lock()
		l.w.batchAnswer(id, bseq, op, a, perr, time.Now())
		l.unlock()
		return
	}
	seq, gen, ok := parseReply(m.Subject, len(l.inbox))
	if !ok {
		return
	}
	dup, sseq, err := parsePubAck(m)
	l.mu.Lock()
	l.w.pubAck(seq, gen, dup, sseq, err, time.Now())
	l.unlock()
}

// streamRecreated is called by the sink when it has created the stream
// again: it logs which of this run's events the old stream took with it,
// and forgets the old stream's sequences.
func (l *lane) streamRecreated(stream string) {
	l.mu.Lock()
	lost := l.w.streamRecreated()
	l.mu.Unlock()
	if lost.firstID != "" {
		l.log.Warn("events of this bind acknowledged by the deleted stream are gone with it, and the checkpoint is past them: they are not sent again",
			slog.String("stream", stream), slog.Uint64("events", lost.events),
			slog.String("first_event", lost.firstID), slog.String("last_event", lost.lastID),
			slog.Time("last_acknowledged_at", lost.lastAt),
			slog.String("also_lost", "every event stored before this trackerd started"))
	}
}

// notifier reports the watermark to the tracker, until the lane's context
// ends (and once more then).
func (l *lane) notifier() {
	defer l.wg.Done()
	var reported uint64
	report := func() {
		l.mu.Lock()
		n := l.w.base - 1
		l.mu.Unlock()
		if n > reported {
			reported = n
			l.acked(n)
		}
	}
	for {
		select {
		case <-l.wakeAck:
			report()
		case <-l.ctx.Done():
			report()
			return
		}
	}
}

// Close waits until every published event is stored or ctx ends, then stops
// the lane. Publish fails with ErrLaneClosed from the moment Close is
// called; later calls return nil. See [tracker.Lane].
func (l *lane) Close(ctx context.Context) error {
	var err error
	l.closeOnce.Do(func() { err = l.close(ctx) })
	return err
}

// close is Close's first call.
func (l *lane) close(ctx context.Context) error {
	l.mu.Lock()
	l.closing = true
	drained := make(chan struct{})
	if l.w.empty() {
		close(drained)
	} else {
		l.drained = drained
	}
	signal(l.wakePub)
	l.mu.Unlock()

	var err error
	select {
	case <-drained:
	case <-l.dead:
	case <-ctx.Done():
	}
	l.mu.Lock()
	if n := l.w.pending(); n > 0 {
		err = fmt.Errorf("nats: lane %s: closed with %d events not acknowledged", l.bind, n)
		if l.fatal != nil {
			err = fmt.Errorf("%w: %w", err, l.fatal)
		} else if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
	}
	l.drained = nil
	l.mu.Unlock()

	l.cancel()
	l.wg.Wait()
	l.sink.laneClosed(l)
	if l.unsub != nil {
		if uerr := l.unsub(); uerr != nil && err == nil && !errors.Is(uerr, natsgo.ErrConnectionClosed) {
			err = fmt.Errorf("nats: lane %s: unsubscribe: %w", l.bind, uerr)
		}
	}
	if l.core {
		if ferr := l.t.flush(ctx); ferr != nil && err == nil {
			err = fmt.Errorf("nats: lane %s: flush: %w", l.bind, ferr)
		}
	}
	return err
}
