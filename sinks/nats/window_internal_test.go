package nats

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The window's tests drive it step by step, with no goroutine, connection
// or clock: each case is a script of publishes, sender steps and the
// stream's answers, and checks what the window asks for and notes.

const testAckTimeout = time.Second

// windowRig is a window with a hand-moved clock.
type windowRig struct {
	t     *testing.T
	w     *window
	c     *counters
	now   time.Time
	notes []notes // taken after each op
	// checking is set by a check op: it leaves the notes alone.
	checking bool
}

// op is one line of a script; it fails the test with what it expected.
// A check only reads: the notes stay those of the op before it.
type op struct {
	what string
	do   func(r *windowRig) error
}

func newWindowRig(t *testing.T, size uint64, maxBytes int64, core, batched bool) *windowRig {
	c := &counters{}
	return &windowRig{t: t, c: c, w: newWindow(size, maxBytes, testAckTimeout, core, batched, c), now: time.Unix(1_700_000_000, 0)}
}

func id(seq uint64) string { return fmt.Sprintf("e%d", seq) }

func (r *windowRig) run(script []op) {
	r.t.Helper()
	for i, o := range script {
		if err := o.do(r); err != nil {
			r.t.Fatalf("step %d (%s): %v", i+1, o.what, err)
		}
		if !r.checking {
			r.notes = append(r.notes, r.w.takeNotes())
		}
		r.checking = false
	}
}

// publish places n events of 10 bytes, as Publish does.
func publish(n int) op {
	return op{fmt.Sprintf("publish %d", n), func(r *windowRig) error {
		for range n {
			if r.w.full() {
				return errors.New("the window is full")
			}
			seq := r.w.next
			sl := r.w.slot(seq)
			*sl = slot{seq: seq, subject: "s." + id(seq), id: id(seq), data: make([]byte, 10), state: slotQueued}
			r.w.hold(10)
			r.w.queue(10)
			r.c.inFlight.Add(1)
		}
		return nil
	}}
}

// sends expects step to ask for sending the events seqs, one after the
// other (with their batch sequences in a batched round), and reports each
// sent.
func sends(seqs ...uint64) op {
	return op{fmt.Sprintf("sends %v", seqs), func(r *windowRig) error {
		for _, seq := range seqs {
			a := r.w.step(r.now)
			if a.kind != actSend || a.sl.seq != seq {
				return fmt.Errorf("step = %s, want to send %d", describe(a), seq)
			}
			r.w.sent(a, r.now)
		}
		return nil
	}}
}

// sendFails expects step to ask for sending seq, and fails it.
func sendFails(seq uint64, err error) op {
	return op{fmt.Sprintf("send %d fails", seq), func(r *windowRig) error {
		a := r.w.step(r.now)
		if a.kind != actSend || a.sl.seq != seq {
			return fmt.Errorf("step = %s, want to send %d", describe(a), seq)
		}
		r.w.fail(err)
		return nil
	}}
}

// waits expects step to ask for a wait of d (-1: until woken).
func waits(d time.Duration) op {
	return op{fmt.Sprintf("waits %v", d), func(r *windowRig) error {
		if a := r.w.step(r.now); a.kind != actWait || a.wait != d {
			return fmt.Errorf("step = %s, want to wait %v", describe(a), d)
		}
		return nil
	}}
}

// control expects step to ask for a batch's EOB or ping at bseq, and
// reports it sent.
func control(opName string, bseq uint64) op {
	return op{fmt.Sprintf("%s at %d", opName, bseq), func(r *windowRig) error {
		a := r.w.step(r.now)
		want := map[string]int{"eob": batchOpEOB, "ping": batchOpPing}[opName]
		if a.kind != actControl || a.op != want || a.bseq != bseq || a.subject == "" {
			return fmt.Errorf("step = %s, want %s at %d", describe(a), opName, bseq)
		}
		r.w.sent(a, r.now)
		return nil
	}}
}

// recovers expects step to end the failed round (progressed or not), and
// starts a new one (batched or not), as the lane does after its back-off.
func recovers(progressed, batched bool) op {
	return op{fmt.Sprintf("recovers (progressed %v), new round batched %v", progressed, batched), func(r *windowRig) error {
		a := r.w.step(r.now)
		if a.kind != actRecover || a.progressed != progressed {
			return fmt.Errorf("step = %s, want to recover with progressed %v", describe(a), progressed)
		}
		r.w.newRound(batched, r.now)
		return nil
	}}
}

func later(d time.Duration) op {
	return op{fmt.Sprintf("%v later", d), func(r *windowRig) error { r.now = r.now.Add(d); return nil }}
}

// ack answers seq's publish (in the current round) with a PubAck at
// stream sequence sseq.
func ack(seq, sseq uint64) op {
	return op{fmt.Sprintf("ack %d", seq), func(r *windowRig) error {
		r.w.pubAck(seq, r.w.slot(seq).gen, false, sseq, nil, r.now)
		return nil
	}}
}

// nak answers seq's publish in round gen (0: its own) with an error.
func nak(seq uint64, gen uint32) op {
	return op{fmt.Sprintf("nak %d", seq), func(r *windowRig) error {
		if gen == 0 {
			gen = r.w.slot(seq).gen
		}
		r.w.pubAck(seq, gen, false, 0, errors.New("refused"), r.now)
		return nil
	}}
}

// answer gives the open batch the stream's answer a to message bseq.
func answer(bseq uint64, opCode int, a batchAnswer) op {
	return op{fmt.Sprintf("batch answer %+v to %d", a, bseq), func(r *windowRig) error {
		if r.w.batchID == "" {
			return errors.New("no open batch")
		}
		r.w.batchAnswer(r.w.batchID, bseq, opCode, a, nil, r.now)
		return nil
	}}
}

// check runs a check of the window's state.
func check(what string, f func(r *windowRig) error) op {
	return op{what, func(r *windowRig) error { r.checking = true; return f(r) }}
}

func watermark(stored uint64) op {
	return check(fmt.Sprintf("1..%d stored", stored), func(r *windowRig) error {
		if got := r.w.base - 1; got != stored {
			return fmt.Errorf("watermark %d, want %d", got, stored)
		}
		return nil
	})
}

// noted checks the notes of the op before.
func noted(what string, f func(n notes) bool) op {
	return check("noted "+what, func(r *windowRig) error {
		if len(r.notes) == 0 {
			return errors.New("no op before")
		}
		if n := r.notes[len(r.notes)-1]; !f(n) {
			return fmt.Errorf("notes %+v", n)
		}
		return nil
	})
}

func failedWith(s string) op {
	return noted("a failure with "+s, func(n notes) bool { return n.failed != nil && strings.Contains(n.failed.Error(), s) })
}

func counted(want Stats) op {
	return check(fmt.Sprintf("counters %+v", want), func(r *windowRig) error {
		if got := r.c.stats(); got != want {
			return fmt.Errorf("counters %+v", got)
		}
		return nil
	})
}

func describe(a act) string {
	switch a.kind {
	case actWait:
		return fmt.Sprintf("wait %v", a.wait)
	case actSend:
		return fmt.Sprintf("send %d (batch seq %d, op %d)", a.sl.seq, a.bseq, a.op)
	case actControl:
		return fmt.Sprintf("control op %d at %d", a.op, a.bseq)
	}
	return fmt.Sprintf("recover (progressed %v)", a.progressed)
}

func TestWindowOneByOne(t *testing.T) {
	for _, tc := range []struct {
		name   string
		size   uint64
		bytes  int64
		core   bool
		script []op
	}{
		{"ok - sends in order, acks move the watermark", 8, 1 << 20, false, []op{
			publish(3), sends(1, 2, 3), waits(testAckTimeout),
			ack(2, 11), watermark(0), noted("nothing stored", func(n notes) bool { return !n.stored }),
			ack(1, 10), watermark(2), noted("stored", func(n notes) bool { return n.stored }),
			ack(3, 12), watermark(3), waits(-1),
			counted(Stats{Acked: 3}),
		}},
		{"ok - core: sent is stored", 8, 1 << 20, true, []op{
			publish(2), sends(1), watermark(1), sends(2), watermark(2), waits(-1),
			counted(Stats{Acked: 2}),
		}},
		{"full - by count", 2, 1 << 20, false, []op{
			publish(2),
			check("full", func(r *windowRig) error {
				if !r.w.full() {
					return errors.New("2 of 2 slots used, not full")
				}
				return nil
			}),
			sends(1), ack(1, 1),
			check("room again", func(r *windowRig) error {
				if r.w.full() {
					return errors.New("full after an ack")
				}
				return nil
			}),
		}},
		{"full - by bytes, but an empty window takes any event", 8, 5, false, []op{
			check("empty takes one", func(r *windowRig) error {
				if r.w.full() {
					return errors.New("an empty window is full")
				}
				return nil
			}),
			publish(1),
			check("full", func(r *windowRig) error {
				if !r.w.full() {
					return errors.New("10 bytes of 5 allowed, not full")
				}
				return nil
			}),
		}},
		{"timeout - no ack within AckTimeout fails the round", 8, 1 << 20, false, []op{
			publish(3), sends(1, 2, 3), later(testAckTimeout / 2), waits(testAckTimeout / 2),
			later(testAckTimeout / 2), waits(0), failedWith("no acknowledgement for event e1 within 1s"),
			noted("first failure", func(n notes) bool { return !n.again && n.unacked == 3 }),
			// All were sent AckTimeout ago: the round has settled.
			recovers(false, false), counted(Stats{Retried: 3, InFlight: 3}),
			// The new round probes: its first message alone, then the rest
			// without waiting.
			sends(1), waits(testAckTimeout), ack(1, 1),
			noted("progress: wake the sender, resumed", func(n notes) bool { return n.wakeSend && n.stored && n.resumed }),
			sends(2, 3), ack(2, 2), ack(3, 3), watermark(3), noted("resumed once", func(n notes) bool { return !n.resumed }),
		}},
		{"reorder - a refused message stored after later ones is counted", 8, 1 << 20, false, []op{
			publish(3), sends(1, 2, 3), nak(1, 0), failedWith("event e1: refused"),
			ack(2, 1), ack(3, 2), watermark(0),
			recovers(false, false), sends(1), ack(1, 3), watermark(3),
			noted("the reorder", func(n notes) bool {
				r := n.reorder
				return r != nil && r.events == 2 && r.firstID == "e2" && r.lastID == "e3" && r.lateID == "e1" && r.lateSeq == 1
			}),
			counted(Stats{Acked: 3, Retried: 1, Reordered: 2}),
		}},
		{"round - an error from an earlier round is ignored", 8, 1 << 20, false, []op{
			publish(2), sends(1, 2), nak(1, 0),
			waits(testAckTimeout), // e2 is in flight: let it settle
			ack(2, 1), noted("settled", func(n notes) bool { return n.wakeSend }),
			recovers(false, false), sends(1),
			nak(1, 1), noted("no failure", func(n notes) bool { return n.failed == nil }),
			ack(1, 2), watermark(2),
		}},
		{"send error - the round fails, and again with no progress", 8, 1 << 20, false, []op{
			publish(1), sendFails(1, errors.New("nats: connection closed for now")), failedWith("connection closed"),
			recovers(false, false), sendFails(1, errors.New("still down")),
			noted("again", func(n notes) bool { return n.again && n.failed != nil }),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newWindowRig(t, tc.size, tc.bytes, tc.core, false).run(tc.script)
		})
	}
}

func TestWindowBatched(t *testing.T) {
	disabled := &jetstream.APIError{Code: 400, ErrorCode: errCodeBatchDisabled, Description: "batch publish is disabled"}
	for _, tc := range []struct {
		name   string
		script []op
	}{
		{"ok - two in flight until the first flow ack, then paced; EOB when idle", []op{
			publish(5), sends(1, 2), waits(testAckTimeout),
			answer(2, batchOpAppend, batchAnswer{kind: batchFlowAck, seq: 2, msgs: 1}), watermark(2),
			sends(3, 4, 5), waits(commitIdle), later(commitIdle), control("eob", 6),
			waits(testAckTimeout - commitIdle), // the end's answer, or AckTimeout
			answer(6, batchOpEOB, batchAnswer{kind: batchEnd, count: 5}), watermark(5),
			waits(-1), counted(Stats{Acked: 5}),
			// The next batch goes on at the last one's pace.
			publish(1), sends(6), check("new batch at the old pace", func(r *windowRig) error {
				if r.w.bstart != 6 || r.w.flowMsgs != 1 {
					return fmt.Errorf("batch from %d, flow %d", r.w.bstart, r.w.flowMsgs)
				}
				return nil
			}),
		}},
		{"full - EOB at once when Publish waits for room", []op{
			publish(8), sends(1, 2), answer(2, batchOpAppend, batchAnswer{kind: batchFlowAck, seq: 2, msgs: 1}),
			publish(2), sends(3, 4, 5, 6, 7, 8, 9, 10), control("eob", 11),
		}},
		{"gap - the stream ends the batch at a lost message; the next round starts a batch there", []op{
			publish(4), sends(1, 2), answer(1, batchOpStart, batchAnswer{kind: batchFlowAck, seq: 1, msgs: 1}),
			sends(3, 4),
			answer(3, batchOpAppend, batchAnswer{kind: batchGap, seq: 3, err: errors.New("gap in the batch")}),
			answer(4, batchOpAppend, batchAnswer{kind: batchEnd, count: 2}),
			failedWith("event e3: gap in the batch (stored 2 of the batch's 4 messages)"), watermark(2),
			recovers(true, true), sends(3, 4),
			check("a batch from e3", func(r *windowRig) error {
				if r.w.bstart != 3 || r.w.bsent != 2 {
					return fmt.Errorf("batch from %d, %d sent", r.w.bstart, r.w.bsent)
				}
				return nil
			}),
			counted(Stats{Acked: 2, Retried: 2, InFlight: 2}),
		}},
		{"ping - after a timeout the lane asks; a whole batch goes on", []op{
			publish(3), sends(1, 2), waits(testAckTimeout), // paced: two in flight before the first answer
			later(testAckTimeout), waits(0), failedWith("no acknowledgement for event e1"),
			control("ping", 2), waits(testAckTimeout),
			answer(2, batchOpPing, batchAnswer{kind: batchFlowAck, seq: 2, msgs: 1}), watermark(2),
			check("the same batch", func(r *windowRig) error {
				if !r.w.pingAlive {
					return errors.New("the ping's answer did not find the batch whole")
				}
				return nil
			}),
			recovers(true, true), sends(3),
			check("went on with the batch", func(r *windowRig) error {
				if r.w.bstart != 1 || r.w.bsent != 3 {
					return fmt.Errorf("batch from %d, %d sent", r.w.bstart, r.w.bsent)
				}
				return nil
			}),
			counted(Stats{Acked: 2, InFlight: 1}),
		}},
		{"ping - no answer within AckTimeout gives the batch up", []op{
			publish(3), sends(1, 2), later(testAckTimeout), waits(0),
			control("ping", 2), later(testAckTimeout), recovers(false, true), sends(1, 2),
			check("a new batch", func(r *windowRig) error {
				if r.w.bstart != 1 || r.w.gen != 2 || r.w.bsent != 2 {
					return fmt.Errorf("batch from %d in round %d, %d sent", r.w.bstart, r.w.gen, r.w.bsent)
				}
				return nil
			}),
			counted(Stats{Retried: 2, InFlight: 3}),
		}},
		{"committed - a batch the lane ended is not asked about", []op{
			publish(1), sends(1), later(commitIdle), control("eob", 2),
			later(testAckTimeout), waits(0), failedWith("no acknowledgement for event e1"),
			recovers(false, true), sends(1),
		}},
		{"duplicate - a batch whose first message the stream holds ends at once", []op{
			publish(3), sends(1, 2),
			answer(2, batchOpAppend, batchAnswer{kind: batchEnd, count: 1, dup: true}), watermark(1),
			noted("no failure", func(n notes) bool { return n.failed == nil }),
			sends(2, 3), counted(Stats{Acked: 1, Duplicates: 1, InFlight: 2}),
		}},
		{"disabled - the stream refuses batches: the next round publishes one by one", []op{
			publish(1), sends(1),
			answer(1, batchOpStart, batchAnswer{kind: batchEnd, err: disabled}),
			noted("no batches", func(n notes) bool { return n.noBatch && n.failed != nil }),
			recovers(false, false), sends(1),
			check("one by one", func(r *windowRig) error {
				if r.w.batched || !r.w.probe {
					return errors.New("still batched, or not probing")
				}
				return nil
			}),
		}},
		{"no stream - a 503 fails the round with errNoStream", []op{
			publish(1), sends(1),
			answer(1, batchOpStart, batchAnswer{kind: batchNoStream, err: errNoStream}),
			check("errNoStream", func(r *windowRig) error {
				if !errors.Is(r.w.failed, errNoStream) {
					return fmt.Errorf("failed with %v", r.w.failed)
				}
				return nil
			}),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			newWindowRig(t, 8, 1<<20, false, true).run(tc.script)
		})
	}
}

// TestWindowStreamRecreated: the window names what this run stored in a
// deleted stream, once.
func TestWindowStreamRecreated(t *testing.T) {
	r := newWindowRig(t, 8, 1<<20, false, false)
	r.run([]op{publish(3), sends(1, 2, 3), ack(1, 1), ack(2, 2)})
	lost := r.w.streamRecreated()
	if lost.events != 2 || lost.firstID != "e1" || lost.lastID != "e2" || !lost.lastAt.Equal(r.now) {
		t.Fatalf("lost %+v, want e1..e2", lost)
	}
	// The new stream's sequences start again: no reorder is seen.
	r.run([]op{ack(3, 1), watermark(3), noted("no reorder", func(n notes) bool { return n.reorder == nil })})
	if lost := r.w.streamRecreated(); lost.events != 1 || lost.firstID != "e3" {
		t.Fatalf("lost %+v, want e3 alone", lost)
	}
}

// TestWindowKeepsBuffers: a stored slot keeps its buffer for reuse, but
// not beyond MaxInflightBytes in all.
func TestWindowKeepsBuffers(t *testing.T) {
	r := newWindowRig(t, 4, 25, true, false)
	r.run([]op{publish(1), sends(1), publish(1), sends(2), publish(1), sends(3)})
	if r.w.held > 25 {
		t.Fatalf("%d bytes of buffers kept, over 25", r.w.held)
	}
	if r.w.slot(1).data == nil {
		t.Fatal("the first stored slot dropped its buffer")
	}
	if r.w.bytes != 0 {
		t.Fatalf("%d bytes in flight with everything stored", r.w.bytes)
	}
}
