package nats

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

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
	orderSeq uint64 // the event's 1-based place among this run's change events; 0 for a lifecycle event (no order header)
	phaseSeq uint64 // the event's 1-based place among this run's change events of its phase
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

// window is the state of one lane's unacknowledged messages and of the
// round that sends them (the lane's header says how a lane publishes): the
// ring of slots, the watermark, the round, the fast batch, and the checks
// of the order in which the stream stored them. It is bookkeeping only: it
// does no I/O, starts no goroutine, logs nothing and reads no clock (the
// caller passes now). Its lane holds its mutex around every call, sends
// what step asks for, feeds it the stream's answers, and acts on what it
// noted (takeNotes): waking Publish, the notifier and the sender, logging.
// It keeps the bind's counters (acked, retried, duplicates, reordered,
// in flight).
type window struct {
	size       uint64 // MaxInflight: the ring's length
	maxBytes   int64  // MaxInflightBytes
	ackTimeout time.Duration
	core       bool
	c          *counters

	slots []slot
	base  uint64 // lowest LaneSeq not stored: 1..base-1 are
	next  uint64 // LaneSeq of the next Publish
	bytes int64  // encoded bytes of the slots base..next-1
	held  int64  // capacity of every slot's buffer, in use or kept for reuse

	// The round.
	sendAt      uint64 // next LaneSeq to send in this round
	gen         uint32 // the round
	outstanding int    // per-message mode: slots sent in this round without an answer
	lastSent    time.Time
	failed      error  // why this round failed; nil while healthy
	failing     bool   // set from the first failure until progress
	roundBase   uint64 // base when this round began
	probe       bool   // per-message mode: this round sends base alone until it is stored

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

	note notes
}

// notes are what the window asks of its lane after a call: the window
// itself only changes state.
type notes struct {
	stored   bool  // base moved: Publish may have room, the notifier news
	wakeSend bool  // the sender has something to do now
	failed   error // the round failed (first failure of the round)
	again    bool  // with failed: an earlier round failed too, with no progress since
	unacked  uint64
	resumed  bool // the first progress after failed rounds
	reorder  *reorder
	noBatch  bool // the stream refuses fast batches: publish one by one
}

// reorder describes events stored out of order (per-message mode): stored
// at a lower stream sequence than an earlier event of the lane.
type reorder struct {
	events          uint64
	firstID, lastID string // the first and last of them
	lateID          string // the earlier event stored after them
	lateSeq         uint64 // and its LaneSeq
}

// newWindow returns an empty window whose first message is LaneSeq 1.
func newWindow(size uint64, maxBytes int64, ackTimeout time.Duration, core, batched bool, c *counters) *window {
	return &window{
		size: size, maxBytes: maxBytes, ackTimeout: ackTimeout, core: core, c: c,
		slots: make([]slot, size),
		base:  1, next: 1, sendAt: 1, gen: 1, roundBase: 1, storedFrom: 1,
		batched: batched && !core,
	}
}

// takeNotes returns the notes since the last call, and forgets them.
func (w *window) takeNotes() notes {
	n := w.note
	w.note = notes{}
	return n
}

// empty reports whether every published message is stored.
func (w *window) empty() bool { return w.base == w.next }

// pending is the number of messages published and not stored.
func (w *window) pending() uint64 { return w.next - w.base }

// full reports whether Publish must wait: the ring is full, or the bytes
// reach maxBytes (an empty window takes any message).
func (w *window) full() bool {
	return w.next-w.base >= w.size || w.next > w.base && w.bytes >= w.maxBytes
}

// slot returns the slot of LaneSeq seq. The slot at next is free, and
// Publish's alone: it fills it without the lane's mutex, then calls queue.
func (w *window) slot(seq uint64) *slot { return &w.slots[seq%w.size] }

// hold counts a change of a slot buffer's capacity.
func (w *window) hold(delta int64) { w.held += delta }

// queue takes the message Publish put in the slot at next, n bytes long.
func (w *window) queue(n int) {
	w.next++
	w.bytes += int64(n)
	w.note.wakeSend = true
}

// slotID returns the id of the event at LaneSeq seq, if in the window.
func (w *window) slotID(seq uint64) string {
	if seq < w.base || seq >= w.next {
		return "?"
	}
	return w.slots[seq%w.size].id
}

// actKind says what the sender does next.
type actKind uint8

const (
	actWait    actKind = iota // wait for act.wait (0: step again now; -1: until woken)
	actSend                   // send act.sl (in a batch: message bseq of batchID, op)
	actControl                // send the batch's EOB or ping message (op, bseq) on subject
	actRecover                // the failed round has settled: back off, then newRound
)

// act is what step asks the sender to do.
type act struct {
	kind    actKind
	wait    time.Duration
	sl      *slot
	batchID string
	bseq    uint64
	op      int
	subject string // actControl: a subject the stream captures
	// progressed (actRecover): the failed round stored something, so the
	// back-off starts again.
	progressed bool
}

func waitFor(d time.Duration) act { return act{kind: actWait, wait: d} }

// step decides the sender's next move at time now. After an actSend or
// actControl, the sender reports the outcome: sent, or for an error fail
// (or, for a ping, batchOver).
func (w *window) step(now time.Time) act {
	if w.failed != nil {
		return w.settle(now)
	}
	if w.sendAt < w.base {
		w.sendAt = w.base
	}
	if w.batched {
		return w.stepBatch(now)
	}
	if w.probe && w.base > w.roundBase {
		w.probe = false // the round's first message is stored
	}
	if w.sendAt < w.next && (!w.probe || w.sendAt == w.base) {
		sl := w.slot(w.sendAt)
		if sl.state == slotStored {
			// Acknowledged by an earlier round after this one began.
			w.sendAt++
			return waitFor(0)
		}
		return act{kind: actSend, sl: sl}
	}
	// Everything is sent: watch the oldest unacknowledged message.
	return waitFor(w.watchOldest(now))
}

// stepBatch is step in a batched round.
func (w *window) stepBatch(now time.Time) act {
	if w.batchID == "" {
		if w.base >= w.next {
			return waitFor(-1)
		}
		w.openBatch()
	}
	if w.bending {
		// Waiting for the batch's end: its PubAck, or AckTimeout.
		d := w.watchOldest(now)
		if d < 0 {
			d = w.lastSent.Add(w.ackTimeout).Sub(now)
			if d <= 0 {
				w.fail(fmt.Errorf("no answer to the end of batch %s within %v", w.batchID, w.ackTimeout))
				d = 0
			}
		}
		return waitFor(d)
	}
	inFlight := w.bsent - w.backed
	allowed := min(w.size, max(w.flowMsgs, 1)*batchOutstanding)
	if w.flowMsgs == 0 {
		allowed = 2 // until the server's first answer sets the pace
	}
	if w.sendAt < w.next && inFlight < allowed {
		bseq := w.sendAt - w.bstart + 1
		op := batchOpAppend
		if bseq == 1 {
			op = batchOpStart
		}
		return act{kind: actSend, sl: w.slot(w.sendAt), batchID: w.batchID, bseq: bseq, op: op}
	}
	if w.sendAt < w.next {
		// Paced by the server: wait for its acknowledgements.
		return waitFor(w.watchOldest(now))
	}
	// Nothing more to send: end the batch, which acknowledges its last
	// messages, once idle for commitIdle or when the oldest is old, or at
	// once when Publish waits for room in the window.
	d := w.lastSent.Add(commitIdle).Sub(now)
	if w.base < w.sendAt {
		if sl := w.slot(w.base); sl.state == slotSent {
			d = min(d, sl.sentAt.Add(maxTailWait).Sub(now))
		}
	}
	if w.full() {
		d = 0
	}
	if d > 0 {
		return waitFor(d)
	}
	return act{kind: actControl, batchID: w.batchID, bseq: w.bsent + 1, op: batchOpEOB, subject: w.lastSubject}
}

// settle is step in a failed round: it lets what is in flight settle
// (answered, or AckTimeout after the last send), asks the stream about a
// batch whose outcome is unknown (a ping, which answers with the batch's
// state: whole, or ended at a gap with the count of messages stored;
// without an answer within AckTimeout the batch is given up), and then
// asks for a new round.
func (w *window) settle(now time.Time) act {
	if w.batched && w.batchID != "" && (w.bsent == 0 || w.bcommitted) {
		w.batchOver() // nothing to ask about
	}
	if w.batched && w.batchID != "" && !w.pingAlive {
		if w.pingAt.IsZero() {
			return act{kind: actControl, batchID: w.batchID, bseq: w.bsent, op: batchOpPing, subject: w.lastSubject}
		}
		if d := w.pingAt.Add(w.ackTimeout).Sub(now); d > 0 {
			return waitFor(d)
		}
	} else if !w.batched && w.outstanding > 0 {
		if d := w.lastSent.Add(w.ackTimeout).Sub(now); d > 0 {
			return waitFor(d)
		}
	}
	return act{kind: actRecover, progressed: w.base > w.roundBase || w.pingAlive}
}

// sent records that the sender sent what a asked for, at now.
func (w *window) sent(a act, now time.Time) {
	switch {
	case a.kind == actControl && a.op == batchOpPing:
		w.pingAt = now
	case a.kind == actControl:
		w.bending, w.bcommitted = true, true
		w.lastSent = now
	case w.batched:
		sl := a.sl
		if sl.state != slotStored {
			sl.state = slotSent
		}
		sl.sentAt, sl.gen = now, w.gen
		w.lastSent = now
		w.lastSubject = sl.subject
		w.bsent = a.bseq
		w.sendAt++
	default:
		sl := a.sl
		sl.sentAt, sl.gen = now, w.gen
		w.lastSent = now
		w.sendAt++
		if w.core {
			sl.state = slotStored
			w.c.acked.Add(1)
			w.advance(now)
		} else {
			sl.state = slotSent
			w.outstanding++
		}
	}
}

// watchOldest fails the round when the oldest unacknowledged message has
// waited AckTimeout, else returns how long until it will have (-1: nothing
// to watch).
func (w *window) watchOldest(now time.Time) time.Duration {
	if w.core || w.base >= w.sendAt {
		return -1
	}
	sl := w.slot(w.base)
	if sl.state != slotSent {
		return -1
	}
	d := sl.sentAt.Add(w.ackTimeout).Sub(now)
	if d <= 0 {
		w.fail(fmt.Errorf("no acknowledgement for event %s within %v", sl.id, w.ackTimeout))
		return 0
	}
	return d
}

// fail ends the round: nothing more is sent until a new one.
func (w *window) fail(err error) {
	if w.failed != nil {
		return
	}
	w.failed = err
	w.pingAt, w.pingAlive = time.Time{}, false
	w.note.failed, w.note.again, w.note.unacked = err, w.failing, w.next-w.base
	w.failing = true
	w.note.wakeSend = true
}

// newRound starts sending every unstored message again. batched says
// whether the stream takes fast batches now.
func (w *window) newRound(batched bool, now time.Time) {
	w.gen++
	w.failed = nil
	w.outstanding = 0
	w.roundBase = w.base
	wasBatched := w.batched
	w.batched = !w.core && batched
	if w.batched && wasBatched && w.pingAlive && w.batchID != "" {
		// The stream holds the batch whole: go on with it, re-sending
		// nothing. The messages in flight keep waiting for their
		// acknowledgement from now on.
		w.pingAt, w.pingAlive = time.Time{}, false
		for seq := w.base; seq < w.bstart+w.bsent; seq++ {
			if sl := w.slot(seq); sl.state == slotSent {
				sl.sentAt = now
			}
		}
		return
	}
	w.batchID = ""
	w.pingAt, w.pingAlive = time.Time{}, false
	w.probe = !w.batched
	w.sendAt = w.base
	var n uint64
	for seq := w.base; seq < w.next; seq++ {
		sl := w.slot(seq)
		if sl.state != slotStored {
			if sl.state != slotQueued {
				n++
			}
			sl.state = slotQueued
		}
	}
	w.c.retried.Add(n)
}

// advance moves base past stored slots, checking their order in the
// stream.
func (w *window) advance(now time.Time) {
	start := w.base
	var r reorder
	for w.base < w.next {
		sl := w.slot(w.base)
		if sl.state != slotStored {
			break
		}
		if sl.sseq != 0 {
			if sl.sseq < w.maxSseq {
				// Stored before an earlier event of the lane.
				if r.events == 0 {
					r.firstID, r.lateID, r.lateSeq = sl.id, w.maxSseqID, w.maxSseqAt
				}
				r.events++
				r.lastID = sl.id
			} else {
				w.maxSseq, w.maxSseqID, w.maxSseqAt = sl.sseq, sl.id, sl.seq
			}
		}
		if w.storedFirstID == "" {
			w.storedFirstID = sl.id
		}
		w.storedLastID = sl.id
		w.bytes -= int64(len(sl.data))
		sl.state = slotFree
		sl.subject, sl.id = "", ""
		if c := int64(cap(sl.data)); c > maxRetainedBuf || w.held > w.maxBytes {
			w.held -= c
			sl.data = nil
		}
		w.base++
	}
	n := w.base - start
	if n == 0 {
		return
	}
	w.storedLastAt = now
	if r.events > 0 {
		w.c.reordered.Add(r.events)
		note := r // r itself stays on the stack: advance runs for every ack
		w.note.reorder = &note
	}
	w.c.inFlight.Add(-int64(n))
	if w.failing && w.failed == nil {
		w.failing = false
		w.note.resumed = true
	}
	w.note.stored = true
}

// markStored marks slot sl stored with stream sequence sseq (0: unknown);
// the caller advances.
func (w *window) markStored(sl *slot, sseq uint64, dup bool) {
	if sl.state == slotSent && sl.gen == w.gen && !w.batched {
		w.outstanding--
	}
	sl.state = slotStored
	sl.sseq = sseq
	w.c.acked.Add(1)
	if dup {
		w.c.duplicates.Add(1)
	}
}

// pubAck takes the stream's answer to a message published on its own, in
// round gen: stored (err nil; a duplicate, at stream sequence sseq), or
// refused.
func (w *window) pubAck(seq uint64, gen uint32, dup bool, sseq uint64, err error, now time.Time) {
	if seq < w.base || seq >= w.next {
		return
	}
	sl := w.slot(seq)
	if sl.seq != seq || sl.state == slotStored || sl.state == slotFree {
		return
	}
	current := sl.state == slotSent && sl.gen == w.gen
	if current && w.failed != nil && w.outstanding == 1 {
		w.note.wakeSend = true // the failed round has settled: no need to wait longer
	}
	if err == nil {
		w.markStored(sl, sseq, dup)
		if current && w.probe {
			w.note.wakeSend = true // the round's first message is in: send the rest
		}
		w.advance(now)
		return
	}
	if !current || gen != sl.gen {
		return // an error from an earlier round: that round is over
	}
	w.outstanding--
	sl.state = slotFailed
	w.fail(fmt.Errorf("event %s: %w", sl.id, err))
}

// streamRecreated forgets the stream's sequences, the stream having been
// created again, and returns what this run had stored in the old one
// (lost.firstID "" when nothing).
func (w *window) streamRecreated() (lost storedRun) {
	lost = storedRun{events: w.base - w.storedFrom, firstID: w.storedFirstID, lastID: w.storedLastID, lastAt: w.storedLastAt}
	w.storedFrom, w.storedFirstID, w.storedLastID = w.base, "", ""
	w.maxSseq, w.maxSseqID, w.maxSseqAt = 0, "", 0
	return lost
}

// storedRun is what a run stored into one stream.
type storedRun struct {
	events          uint64
	firstID, lastID string
	lastAt          time.Time
}

// openBatch starts a new fast batch at base. After a batch the lane ended
// itself, it goes on at that batch's pace; else it waits for the server's
// first answer.
func (w *window) openBatch() {
	w.batchID = strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(uint64(w.gen), 36)
	w.bstart, w.bsent, w.backed = w.base, 0, 0
	if !w.cleanEnd {
		w.flowMsgs = 0
	}
	w.cleanEnd = false
	w.bending, w.bcommitted, w.batchErr = false, false, nil
	w.sendAt = w.base
}

// batchAnswer takes the stream's answer a to message bseq (operation op)
// of batch id, or perr when the answer could not be read.
func (w *window) batchAnswer(id string, bseq uint64, op int, a batchAnswer, perr error, now time.Time) {
	if id != w.batchID || w.batchID == "" {
		return // an earlier batch's: the lane has moved on
	}
	if perr != nil {
		w.batchOver()
		w.fail(fmt.Errorf("batch %s: %w", id, perr))
		return
	}
	switch a.kind {
	case batchFlowAck:
		if a.msgs > 0 {
			w.flowMsgs = a.msgs
		}
		w.batchStored(a.seq, false, now)
		if op == batchOpPing && w.failed != nil {
			w.pingAlive = true // the stream has every message sent: no gap
		}
		w.note.wakeSend = true
	case batchGap, batchErr:
		// The stream ends the batch; its PubAck follows.
		w.bending = true
		if w.batchErr == nil {
			w.batchErr = a.err
		}
	case batchNoStream:
		w.batchOver()
		w.fail(fmt.Errorf("event %s: %w", w.slotID(w.bstart+bseq-1), a.err))
		w.note.wakeSend = true
	case batchEnd:
		failing := w.slotID(w.bstart + bseq - 1) // before batchStored moves base
		w.batchStored(a.count, a.dup, now)
		committed := w.bcommitted
		ended := w.bsent
		w.batchOver()
		switch {
		case a.err != nil:
			var apiErr *jetstream.APIError
			if errors.As(a.err, &apiErr) && apiErr.ErrorCode == errCodeBatchDisabled {
				// The stream no longer allows batches: publish one by one.
				w.note.noBatch = true
			}
			w.fail(fmt.Errorf("event %s: %w", failing, a.err))
		case committed && a.count == ended:
			// Ended by the lane, every message stored: the next event
			// opens a new batch.
			w.cleanEnd = true
		case a.dup && a.count == 1 && !committed:
			// The batch's first message was stored before (a re-send
			// whose acknowledgement was lost): the stream ends such a
			// batch at once, refusing what followed. Open the next one
			// after it.
			w.sendAt = w.base
			for seq := w.base; seq < w.next; seq++ {
				if sl := w.slot(seq); sl.state == slotSent {
					sl.state = slotQueued
				}
			}
		default:
			why := w.batchErr
			if why == nil {
				why = errors.New("the stream ended the batch")
			}
			w.fail(fmt.Errorf("event %s: %w (stored %d of the batch's %d messages)", w.slotID(w.bstart+a.count), why, a.count, ended))
		}
		w.note.wakeSend = true
	}
}

// batchStored marks the open batch's messages 1..n stored.
func (w *window) batchStored(n uint64, lastDup bool, now time.Time) {
	if n > w.bsent {
		n = w.bsent
	}
	if n <= w.backed {
		return
	}
	for bseq := w.backed + 1; bseq <= n; bseq++ {
		seq := w.bstart + bseq - 1
		if seq < w.base || seq >= w.next {
			continue
		}
		sl := w.slot(seq)
		if sl.state != slotStored && sl.seq == seq {
			w.markStored(sl, 0, lastDup && bseq == n)
		}
	}
	w.backed = n
	w.advance(now)
}

// batchOver forgets the open batch.
func (w *window) batchOver() {
	w.batchID = ""
	w.bending, w.bcommitted = false, false
}
