package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
// acks. Nothing waits for an ack between two sends. nats.go's jetstream
// PublishMsgAsync is not used: its own documentation warns that messages it
// retries may be stored out of order, and keeping a bind's order is what a
// lane is for.
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
// every message with the header Trackerd-Order (run, LaneSeq and the
// event's place among its phase's events), by which changefeed puts them
// back in order. A reordered event is displaced by fewer than MaxInflight
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

// slotState is where a message of the window is.
type slotState uint8

const (
	slotFree   slotState = iota // not in use
	slotQueued                  // encoded, not sent in this round
	slotSent                    // sent in round gen, no answer yet
	slotFailed                  // its round's answer was an error
	slotStored                  // acknowledged
)

// slot is one message of the window.
type slot struct {
	seq      uint64
	subject  string
	id       string
	data     []byte
	phaseSeq uint64 // the event's 1-based place among this run's events of its phase
	sseq     uint64 // stream sequence from its PubAck, 0 when unknown
	sentAt   time.Time
	gen      uint32
	state    slotState
}

// warnEvery is how often continuing failures are logged as warnings.
const warnEvery = 30 * time.Second

// maxRetainedBuf is the largest message buffer a slot keeps for reuse once
// its message is stored: larger ones are dropped so that a few huge rows
// do not pin window × their size of memory.
const maxRetainedBuf = 64 << 10

// A lane with nothing more to send ends its fast batch, which
// acknowledges the batch's last messages (no flow acknowledgement is due
// for them), once it has sent nothing for commitIdle, or once the oldest
// unacknowledged message is maxTailWait old.
const (
	commitIdle  = 20 * time.Millisecond
	maxTailWait = 100 * time.Millisecond
)

// batchOutstanding is how many flow acknowledgements a fast batch may have
// outstanding: the messages in flight are at most this many times the
// acknowledgement interval the server asks for (and MaxInflight).
const batchOutstanding = 16

// orderHeaderLen is the most wire.HeaderOrder adds to a message: a run
// token of at most 16 bytes and two counts.
const orderHeaderLen = len(wire.HeaderOrder+": ") + 16 + 1 + 20 + 1 + 20 + len("\r\n")

type lane struct {
	s      *Sink
	c      *counters // the bind's
	t      transport
	bind   string
	acked  func(uint64)
	log    *slog.Logger
	core   bool
	window uint64
	inbox  string // reply prefix, ending in "."
	unsub  func() error
	run    string // this run's token in wire.HeaderOrder

	// Publish's own state, guarded by pubMu (the tracker calls Publish from
	// one goroutine; the mutex makes misuse safe, not fast).
	pubMu     sync.Mutex
	subjBuf   []byte
	dataBuf   []byte
	phaseSeqs [3]uint64 // events published per phase (before_commit, after_commit, rollback)
	// subjects interns rendered subjects: a table's changes share a few,
	// so a publish need not allocate one.
	subjects map[string]string

	// The sender's own state.
	msg      natsgo.Msg
	hdr      natsgo.Header
	replyBuf []byte
	orderBuf []byte

	mu          sync.Mutex
	slots       []slot
	base        uint64 // lowest LaneSeq not stored: 1..base-1 are
	next        uint64 // LaneSeq of the next Publish
	sendAt      uint64 // next LaneSeq to send in this round
	gen         uint32 // the round
	outstanding int    // per-message mode: slots sent in this round without an answer
	lastSent    time.Time
	failed      error // why this round failed; nil while healthy
	failing     bool  // set from the first failure until progress
	lastWarn    time.Time
	roundBase   uint64 // base when this round began
	probe       bool   // per-message mode: this round sends base alone until it is stored
	bytes       int64  // encoded bytes of the slots base..next-1
	held        int64  // capacity of every slot's buffer, in use or kept for reuse
	fatal       error  // the lane cannot go on
	closing     bool
	drained     chan struct{} // closed once closing and everything is stored
	dead        chan struct{} // closed when fatal is set

	// Fast batch state (batched rounds).
	batched     bool      // this round publishes in fast batches
	batchID     string    // the open batch, "" when none
	bstart      uint64    // LaneSeq of the batch's message 1
	bsent       uint64    // the batch's last message sent
	backed      uint64    // the batch's messages 1..backed are stored
	flowMsgs    uint64    // the server's acknowledgement interval, 0 before its first answer
	bending     bool      // no more messages go into the batch: it is ending
	bcommitted  bool      // the lane ended the batch itself (EOB)
	cleanEnd    bool      // the last batch ended so, every message stored
	batchErr    error     // why the stream is ending the batch
	pingAt      time.Time // when the failed round's ping was sent; zero: none
	pingAlive   bool      // the ping found the batch whole: go on with it
	lastSubject string    // a subject the stream captures, for EOB and ping messages

	// Order checks (per-message mode): the highest stream sequence among
	// the events stored below base, and which event has it.
	maxSseq   uint64
	maxSseqID string
	maxSseqAt uint64

	// What this run has stored since it started or the stream was last
	// recreated, to name what a deleted stream took with it.
	storedFrom    uint64 // first LaneSeq stored into the current stream
	storedFirstID string
	storedLastID  string
	storedLastAt  time.Time

	wakeSend chan struct{}
	wakePub  chan struct{}
	wakeAck  chan struct{}
	stop     chan struct{}
	wg       sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
}

func (s *Sink) openLane(bind string, acked func(uint64)) (*lane, error) {
	if acked == nil {
		acked = func(uint64) {}
	}
	l := &lane{
		s:          s,
		c:          s.bindCounters(bind),
		t:          s.t,
		bind:       bind,
		acked:      acked,
		log:        s.log.With(slog.String("bind", bind)),
		core:       s.o.Mode == Core,
		window:     uint64(s.o.MaxInflight),
		run:        strconv.FormatUint(rand.Uint64()|1<<63, 36),
		slots:      make([]slot, s.o.MaxInflight),
		base:       1,
		next:       1,
		sendAt:     1,
		gen:        1,
		roundBase:  1,
		storedFrom: 1,
		dead:       make(chan struct{}),
		wakeSend:   make(chan struct{}, 1),
		wakePub:    make(chan struct{}, 1),
		wakeAck:    make(chan struct{}, 1),
		stop:       make(chan struct{}),
		hdr:        natsgo.Header{wire.HeaderContentType: {wire.ContentType}, wire.HeaderMsgID: {""}},
	}
	if !l.core {
		l.batched = s.batched.Load()
		l.inbox = s.t.newInbox() + "."
		unsub, err := s.t.subscribe(l.inbox+">", l.onAck)
		if err != nil {
			return nil, fmt.Errorf("nats: lane %s: subscribe to acks: %w", bind, err)
		}
		l.unsub = unsub
	}
	s.addLane(l)
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

// Publish encodes ev into the lane's window and returns without waiting for
// its acknowledgement. See [tracker.Lane].
func (l *lane) Publish(ctx context.Context, ev *tracker.Event) error {
	l.pubMu.Lock()
	defer l.pubMu.Unlock()
	if err := l.check(ev); err != nil {
		return err
	}
	if err := l.s.awaitReady(ctx, l.log); err != nil {
		return fmt.Errorf("nats: lane %s: %w", l.bind, err)
	}
	// Wait for a free slot, and for room in the byte budget (an empty
	// window takes any event).
	for {
		l.mu.Lock()
		fatal, closing := l.fatal, l.closing
		full := l.next-l.base >= l.window || l.next > l.base && l.bytes >= l.s.o.MaxInflightBytes
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
	sl := &l.slots[seq%l.window]
	oldCap := cap(sl.data)
	data, err := l.encode(sl.data[:0], ev)
	if err != nil {
		return err
	}
	l.subjBuf = l.s.subjects.Append(l.subjBuf[:0], ev.Phase, ev.Change)
	*sl = slot{seq: seq, subject: l.intern(l.subjBuf), id: ev.ID, data: data, state: slotQueued,
		phaseSeq: l.nextPhaseSeq(ev.Phase)}
	l.mu.Lock()
	if l.closing {
		// Close began while the event was encoded, and may have found
		// the lane drained: the event must not slip in behind its back.
		l.held += int64(cap(data) - oldCap)
		l.mu.Unlock()
		return ErrLaneClosed
	}
	l.next = seq + 1
	l.bytes += int64(len(data))
	l.held += int64(cap(data) - oldCap)
	l.mu.Unlock()
	signal(l.wakeSend)
	l.c.published.Add(1)
	l.c.inFlight.Add(1)
	if l.s.o.Echo {
		l.log.LogAttrs(ctx, slog.LevelInfo, "published", slog.String("subject", sl.subject), slog.String("event_id", ev.ID))
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
	next := l.next
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
	limit := l.s.limit()
	size := len(b) + maxHeaderLen(ev.ID)
	if limit <= 0 || size <= limit {
		return b, nil
	}
	if l.s.o.OversizePolicy == OversizeTruncate && ev.Phase != tracker.PhaseRollback {
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
	if s, ok := l.subjects[string(b)]; ok {
		return s
	}
	if l.subjects == nil || len(l.subjects) >= maxInterned {
		l.subjects = make(map[string]string)
	}
	s := string(b)
	l.subjects[s] = s
	return s
}

// sender sends queued slots in order and runs the retry rounds.
func (l *lane) sender() {
	defer l.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var bo backoff
	for {
		select {
		case <-l.stop:
			return
		case <-l.wakeSend:
		case <-timer.C:
		}
		wait, ok := l.work(&bo)
		for ok && wait == 0 {
			wait, ok = l.work(&bo)
		}
		if !ok {
			return
		}
		if wait > 0 {
			timer.Reset(wait)
		}
	}
}

// work does one step of the sender: it returns how long to wait before the
// next step (0: go on now, -1: until woken), and false when the lane stops.
func (l *lane) work(bo *backoff) (time.Duration, bool) {
	now := time.Now()
	l.mu.Lock()
	if l.fatal != nil {
		l.mu.Unlock()
		return -1, true
	}
	if l.failed != nil {
		return l.recover(bo, now)
	}
	if l.sendAt < l.base {
		l.sendAt = l.base
	}
	if l.batched {
		return l.workBatch(now)
	}
	if l.probe && l.base > l.roundBase {
		l.probe = false // the round's first message is stored
	}
	if l.sendAt < l.next && (!l.probe || l.sendAt == l.base) {
		sl := &l.slots[l.sendAt%l.window]
		if sl.state == slotStored {
			// Acknowledged by an earlier round after this one began.
			l.sendAt++
			l.mu.Unlock()
			return 0, true
		}
		if err := l.send(sl, ""); err != nil {
			l.sendFailed(err)
			l.mu.Unlock()
			return 0, true
		}
		sl.sentAt, sl.gen = now, l.gen
		l.lastSent = now
		l.sendAt++
		if l.core {
			sl.state = slotStored
			l.c.acked.Add(1)
			l.advance()
		} else {
			sl.state = slotSent
			l.outstanding++
		}
		l.mu.Unlock()
		return 0, true
	}
	// Everything is sent: watch the oldest unacknowledged message.
	d := l.watchOldest(now)
	l.mu.Unlock()
	return d, true
}

// watchOldest fails the round when the oldest unacknowledged message has
// waited AckTimeout, else returns how long until it will have (-1: nothing
// to watch). l.mu is held.
func (l *lane) watchOldest(now time.Time) time.Duration {
	if l.core || l.base >= l.sendAt {
		return -1
	}
	sl := &l.slots[l.base%l.window]
	if sl.state != slotSent {
		return -1
	}
	d := sl.sentAt.Add(l.s.o.AckTimeout).Sub(now)
	if d <= 0 {
		l.fail(fmt.Errorf("no acknowledgement for event %s within %v", sl.id, l.s.o.AckTimeout))
		return 0
	}
	return d
}

// sendFailed handles a message the connection refused. l.mu is held.
func (l *lane) sendFailed(err error) {
	if errors.Is(err, natsgo.ErrConnectionClosed) {
		l.setFatal(fmt.Errorf("nats: lane %s: %w", l.bind, err))
		return
	}
	l.fail(err)
}

// recover runs a failed round: it lets what is in flight settle, learns
// what a batch stored, backs off, and starts a new round. l.mu is held; it
// unlocks it.
func (l *lane) recover(bo *backoff, now time.Time) (time.Duration, bool) {
	if l.batched && l.batchID != "" && (l.bsent == 0 || l.bcommitted) {
		l.batchOver() // nothing to ask about
	}
	if l.batched && l.batchID != "" && !l.pingAlive {
		// The batch's outcome is unknown: ask the stream (a ping answers
		// with the batch's state: whole, or ended at a gap with the count
		// of messages stored). Without an answer within AckTimeout, the
		// lane gives the batch up.
		if l.pingAt.IsZero() {
			if l.t.connected() {
				if err := l.sendControl(batchOpPing, l.bsent); err != nil {
					l.log.Debug("cannot ask the stream about the batch", slog.Any("err", err))
					l.batchOver()
					l.mu.Unlock()
					return 0, true
				}
				l.pingAt = now
				l.mu.Unlock()
				return l.s.o.AckTimeout, true
			}
			// Not connected: back off, then ask.
			l.mu.Unlock()
			select {
			case <-l.stop:
				return 0, false
			case <-time.After(bo.next()):
			}
			return 0, true
		}
		if d := l.pingAt.Add(l.s.o.AckTimeout).Sub(now); d > 0 {
			l.mu.Unlock()
			return d, true
		}
	} else if !l.batched && l.outstanding > 0 {
		// Let what is in flight settle before sending again.
		if d := l.lastSent.Add(l.s.o.AckTimeout).Sub(now); d > 0 {
			l.mu.Unlock()
			return d, true
		}
	}
	if l.base > l.roundBase || l.pingAlive {
		bo.reset() // the failed round made progress
	}
	noStream := errors.Is(l.failed, errNoStream)
	l.mu.Unlock()
	select {
	case <-l.stop:
		return 0, false
	case <-time.After(bo.next()):
	}
	if !l.t.connected() {
		return 0, true
	}
	if noStream && !l.core {
		// The stream went away (deleted, or a server without its
		// store): check it again, creating it as at start.
		if err := l.restoreStream(); err != nil {
			if errors.Is(err, tracker.ErrConfig) {
				l.mu.Lock()
				l.setFatal(fmt.Errorf("nats: lane %s: %w", l.bind, err))
				l.mu.Unlock()
				return -1, true
			}
			l.log.Debug("stream check failed", slog.Any("err", err))
		}
	}
	l.mu.Lock()
	l.newRound()
	l.mu.Unlock()
	return 0, true
}

// restoreStream makes the sink check its stream again, until Close.
func (l *lane) restoreStream() error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	l.s.ready.Store(false)
	return l.s.checkReady(ctx)
}

// send hands one message to the connection, with reply as its reply
// subject ("" for the per-message one). l.mu is held: a slot's bytes may
// not change while they are sent.
func (l *lane) send(sl *slot, reply string) error {
	l.hdr[wire.HeaderMsgID][0] = sl.id
	l.msg = natsgo.Msg{Subject: sl.subject, Data: sl.data, Header: l.hdr}
	switch {
	case l.core:
	case reply != "":
		delete(l.hdr, wire.HeaderOrder)
		l.msg.Reply = reply
	default:
		l.replyBuf = append(l.replyBuf[:0], l.inbox...)
		l.replyBuf = strconv.AppendUint(l.replyBuf, sl.seq, 10)
		l.replyBuf = append(l.replyBuf, '.')
		l.replyBuf = strconv.AppendUint(l.replyBuf, uint64(l.gen), 10)
		l.msg.Reply = string(l.replyBuf)
		l.orderBuf = wire.AppendOrder(l.orderBuf[:0], l.run, sl.seq, sl.phaseSeq)
		l.hdr[wire.HeaderOrder] = []string{string(l.orderBuf)}
	}
	return l.t.publishMsg(&l.msg)
}

// fail ends the round. l.mu is held.
func (l *lane) fail(err error) {
	if l.failed != nil {
		return
	}
	l.failed = err
	l.pingAt, l.pingAlive = time.Time{}, false
	pending := l.next - l.base
	// Loud, never a silent stall: a warning at the first failure, then
	// at most every warnEvery while the failures go on.
	if now := time.Now(); !l.failing || now.Sub(l.lastWarn) >= warnEvery {
		l.lastWarn = now
		l.log.Warn("publish failed: re-sending every unacknowledged event", slog.Any("err", err), slog.Uint64("unacked", pending))
	} else {
		l.log.Debug("publish failed again", slog.Any("err", err), slog.Uint64("unacked", pending))
	}
	l.failing = true
	signal(l.wakeSend)
}

// newRound starts sending every unstored message again. l.mu is held.
func (l *lane) newRound() {
	l.gen++
	l.failed = nil
	l.outstanding = 0
	l.roundBase = l.base
	wasBatched := l.batched
	l.batched = !l.core && l.s.batched.Load()
	if l.batched && wasBatched && l.pingAlive && l.batchID != "" {
		// The stream holds the batch whole: go on with it, re-sending
		// nothing. The messages in flight keep waiting for their
		// acknowledgement from now on.
		l.pingAt, l.pingAlive = time.Time{}, false
		for seq := l.base; seq < l.bstart+l.bsent; seq++ {
			if sl := &l.slots[seq%l.window]; sl.state == slotSent {
				sl.sentAt = time.Now()
			}
		}
		return
	}
	l.batchID = ""
	l.pingAt, l.pingAlive = time.Time{}, false
	l.probe = !l.batched
	l.sendAt = l.base
	var n uint64
	for seq := l.base; seq < l.next; seq++ {
		sl := &l.slots[seq%l.window]
		if sl.state != slotStored {
			if sl.state != slotQueued {
				n++
			}
			sl.state = slotQueued
		}
	}
	l.c.retried.Add(n)
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

// advance moves base past stored slots, checking their order in the
// stream. l.mu is held.
func (l *lane) advance() {
	start := l.base
	var (
		reordered       uint64
		firstID, lastID string
		lateID          string
		lateSeq         uint64
	)
	for l.base < l.next {
		sl := &l.slots[l.base%l.window]
		if sl.state != slotStored {
			break
		}
		if sl.sseq != 0 {
			if sl.sseq < l.maxSseq {
				// Stored before an earlier event of the lane.
				if reordered == 0 {
					firstID, lateID, lateSeq = sl.id, l.maxSseqID, l.maxSseqAt
				}
				reordered++
				lastID = sl.id
			} else {
				l.maxSseq, l.maxSseqID, l.maxSseqAt = sl.sseq, sl.id, sl.seq
			}
		}
		if l.storedFirstID == "" {
			l.storedFirstID = sl.id
		}
		l.storedLastID = sl.id
		l.bytes -= int64(len(sl.data))
		sl.state = slotFree
		sl.subject, sl.id = "", ""
		if c := int64(cap(sl.data)); c > maxRetainedBuf || l.held > l.s.o.MaxInflightBytes {
			l.held -= c
			sl.data = nil
		}
		l.base++
	}
	n := l.base - start
	if n == 0 {
		return
	}
	l.storedLastAt = time.Now()
	if reordered > 0 {
		l.c.reordered.Add(reordered)
		l.log.Warn("events stored out of order: a failed publish let later events of this bind into the stream before an earlier one (the stream does not allow batch publishing); changefeed restores their order by the Trackerd-Order header",
			slog.Uint64("events", reordered), slog.String("first_event", firstID), slog.String("last_event", lastID),
			slog.String("stored_after_them", lateID), slog.Uint64("lane_seq", lateSeq))
	}
	l.c.inFlight.Add(-int64(n))
	if l.failing && l.failed == nil {
		l.failing = false
		l.log.Info("publishing resumed")
	}
	signal(l.wakePub)
	signal(l.wakeAck)
	if l.closing && l.base == l.next && l.drained != nil {
		close(l.drained)
		l.drained = nil
	}
}

// streamRecreated is called by the sink when it has created the stream
// again: it logs which of this run's events the old stream took with it,
// and forgets the old stream's sequences.
func (l *lane) streamRecreated(stream string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.storedFirstID != "" {
		l.log.Warn("events of this bind acknowledged by the deleted stream are gone with it, and the checkpoint is past them: they are not sent again",
			slog.String("stream", stream), slog.Uint64("events", l.base-l.storedFrom),
			slog.String("first_event", l.storedFirstID), slog.String("last_event", l.storedLastID),
			slog.Time("last_acknowledged_at", l.storedLastAt),
			slog.String("also_lost", "every event stored before this trackerd started"))
	}
	l.storedFrom, l.storedFirstID, l.storedLastID = l.base, "", ""
	l.maxSseq, l.maxSseqID, l.maxSseqAt = 0, "", 0
}

// markStored marks slot sl stored with stream sequence sseq (0: unknown).
// l.mu is held; the caller advances.
func (l *lane) markStored(sl *slot, sseq uint64, dup bool) {
	if sl.state == slotSent && sl.gen == l.gen && !l.batched {
		l.outstanding--
	}
	sl.state = slotStored
	sl.sseq = sseq
	l.c.acked.Add(1)
	if dup {
		l.c.duplicates.Add(1)
	}
}

// onAck handles the stream's answer to one publish.
func (l *lane) onAck(m *natsgo.Msg) {
	rest := m.Subject[min(len(l.inbox), len(m.Subject)):]
	if id, bseq, op, ok := parseBatchReply(rest); ok {
		l.onBatchAnswer(m, id, bseq, op)
		return
	}
	seq, gen, ok := parseReply(m.Subject, len(l.inbox))
	if !ok {
		return
	}
	dup, sseq, err := parsePubAck(m)
	l.mu.Lock()
	defer l.mu.Unlock()
	if seq < l.base || seq >= l.next {
		return
	}
	sl := &l.slots[seq%l.window]
	if sl.seq != seq || sl.state == slotStored || sl.state == slotFree {
		return
	}
	current := sl.state == slotSent && sl.gen == l.gen
	if current && l.failed != nil && l.outstanding == 1 {
		signal(l.wakeSend) // the failed round has settled: no need to wait longer
	}
	if err == nil {
		l.markStored(sl, sseq, dup)
		if current && l.probe {
			signal(l.wakeSend) // the round's first message is in: send the rest
		}
		l.advance()
		return
	}
	if !current || gen != sl.gen {
		return // an error from an earlier round: that round is over
	}
	l.outstanding--
	sl.state = slotFailed
	l.fail(fmt.Errorf("event %s: %w", sl.id, err))
}

// slotID returns the id of the event at LaneSeq seq, if in the window.
func (l *lane) slotID(seq uint64) string {
	if seq < l.base || seq >= l.next {
		return "?"
	}
	return l.slots[seq%l.window].id
}

// parseReply reads "<inbox><seq>.<gen>".
func parseReply(subject string, prefixLen int) (seq uint64, gen uint32, ok bool) {
	if len(subject) <= prefixLen {
		return 0, 0, false
	}
	rest := subject[prefixLen:]
	dot := -1
	for i := 0; i < len(rest); i++ {
		if rest[i] == '.' {
			dot = i
			break
		}
	}
	if dot < 0 {
		return 0, 0, false
	}
	seq, err := strconv.ParseUint(rest[:dot], 10, 64)
	if err != nil {
		return 0, 0, false
	}
	g, err := strconv.ParseUint(rest[dot+1:], 10, 32)
	if err != nil {
		return 0, 0, false
	}
	return seq, uint32(g), true
}

// errNoStream is the answer to a publish no stream captured.
var errNoStream = errors.New("no stream answered (no responders): is the stream there?")

// parsePubAck reads a JetStream publish answer: nil error when the message
// is stored, whether it was a duplicate, and its stream sequence (0 when
// the answer does not say).
func parsePubAck(m *natsgo.Msg) (dup bool, seq uint64, err error) {
	if len(m.Data) == 0 {
		if st := m.Header.Get("Status"); st == "503" {
			return false, 0, errNoStream
		} else if st != "" {
			return false, 0, fmt.Errorf("publish answered with status %s %s", st, m.Header.Get("Description"))
		}
		return false, 0, errors.New("empty publish answer")
	}
	// Fast path: a plain PubAck, {"stream":"S","seq":5} (servers before
	// 2.10 write a space after the comma). The server writes the duplicate
	// flag as `"duplicate": true`, with a space, and leaves it out when
	// false.
	if bytes.HasPrefix(m.Data, []byte(`{"stream":`)) && m.Data[len(m.Data)-1] == '}' &&
		!bytes.Contains(m.Data, []byte(`"error"`)) && !bytes.Contains(m.Data, []byte(`"duplicate"`)) {
		if seq, ok := pubAckSeq(m.Data); ok {
			return false, seq, nil
		}
	}
	var r struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Seq       uint64              `json:"seq"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, 0, fmt.Errorf("read publish answer: %w", err)
	}
	if r.Error != nil {
		return false, 0, r.Error
	}
	if r.Stream == "" {
		return false, 0, errors.New("publish answer names no stream")
	}
	return r.Duplicate, r.Seq, nil
}

// pubAckSeq finds the "seq" of a PubAck that starts {"stream":"...
func pubAckSeq(b []byte) (uint64, bool) {
	const start = len(`{"stream":"`)
	if len(b) < start || b[start-1] != '"' {
		return 0, false
	}
	end := bytes.IndexByte(b[start:], '"')
	if end < 0 || bytes.IndexByte(b[start:start+end], '\\') >= 0 {
		return 0, false // an escaped stream name: leave it to encoding/json
	}
	rest := b[start+end+1:]
	i := bytes.Index(rest, []byte(`"seq":`))
	if i < 0 {
		return 0, false
	}
	b = rest
	i += len(`"seq":`)
	for i < len(b) && b[i] == ' ' {
		i++
	}
	var n uint64
	digits := i
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		d := uint64(b[i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	if i == digits || i == len(b) || b[i] != ',' && b[i] != '}' && b[i] != ' ' {
		return 0, false
	}
	return n, true
}

// notifier reports the watermark to the tracker.
func (l *lane) notifier() {
	defer l.wg.Done()
	var reported uint64
	report := func() {
		l.mu.Lock()
		n := l.base - 1
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
		case <-l.stop:
			report()
			return
		}
	}
}

// Close waits until every published event is stored or ctx ends, then stops
// the lane. Publish fails with ErrLaneClosed from the moment Close is
// called. See [tracker.Lane].
func (l *lane) Close(ctx context.Context) error {
	l.closeMu.Lock()
	defer l.closeMu.Unlock()
	if l.closed {
		return nil
	}
	l.mu.Lock()
	l.closing = true
	drained := make(chan struct{})
	if l.base == l.next {
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
	if n := l.next - l.base; n > 0 {
		err = fmt.Errorf("nats: lane %s: closed with %d events not acknowledged", l.bind, n)
		if l.fatal != nil {
			err = fmt.Errorf("%w: %w", err, l.fatal)
		} else if ctx.Err() != nil {
			err = fmt.Errorf("%w: %w", err, ctx.Err())
		}
	}
	l.drained = nil
	l.mu.Unlock()

	close(l.stop)
	l.wg.Wait()
	l.closed = true
	l.s.removeLane(l)
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
