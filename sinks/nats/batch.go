package nats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream's fast batch publishing (ADR-50, nats-server 2.14 and later,
// on streams with allow_batched), as a lane uses it. Each message names its
// batch, its place in the batch and an operation in its reply subject:
//
//	<inbox><batch id>.<flow>.fail.<batch seq>.<op>.$FI
//
// "fail" is the gap mode: the stream stores message n of a batch only right
// after message n-1 of the same batch (stored, or dropped as a duplicate),
// and ends the batch at the first message it cannot store or does not
// receive. The stream answers on the reply subjects: every <flow>th stored
// message or so with a flow acknowledgement ({"type":"ack","seq":n,
// "msgs":m}: messages 1..n are stored, the next acknowledgement comes m
// messages later), at once with {"type":"gap",...} or {"type":"err",...}
// when the batch ends early, and with a PubAck naming the batch and the
// count of messages stored when the batch ends (committed, or ended by a gap
// or an error).

// The operations of a fast batch message.
const (
	batchOpStart  = 0 // message 1
	batchOpAppend = 1 // message n > 1
	batchOpEOB    = 3 // end the batch; this message is not stored
	batchOpPing   = 4 // ask for the batch's state; not stored
)

// batchFlow is the largest acknowledgement interval a lane asks for; the
// server uses at most 500, fewer when several publishers share a stream.
// A lane with a smaller window asks for a quarter of its window, so that
// acknowledgements come before the window is full.
const batchFlow = 500

// flowFor returns the acknowledgement interval a lane of this window asks
// for.
func flowFor(window uint64) uint64 { return min(max(window/4, 1), batchFlow) }

// batchSuffix ends every fast batch reply subject.
const batchSuffix = ".$FI"

// appendBatchReply appends the reply subject of message seq of a batch
// whose acknowledgement interval is at most flow.
func appendBatchReply(b []byte, inbox, id string, flow, seq uint64, op int) []byte {
	b = append(b, inbox...)
	b = append(b, id...)
	b = append(b, '.')
	b = strconv.AppendUint(b, flow, 10)
	b = append(b, ".fail."...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '.')
	b = strconv.AppendInt(b, int64(op), 10)
	return append(b, batchSuffix...)
}

// parseBatchReply reads the batch id, sequence and operation of a reply
// subject written by appendBatchReply, after the inbox prefix.
func parseBatchReply(rest string) (id string, seq uint64, op int, ok bool) {
	if len(rest) <= len(batchSuffix) || rest[len(rest)-len(batchSuffix):] != batchSuffix {
		return "", 0, 0, false
	}
	rest = rest[:len(rest)-len(batchSuffix)]
	var tok [5]string
	for i := 4; i >= 0; i-- {
		dot := -1
		if i > 0 {
			for j := len(rest) - 1; j >= 0; j-- {
				if rest[j] == '.' {
					dot = j
					break
				}
			}
			if dot < 0 {
				return "", 0, 0, false
			}
		}
		tok[i] = rest[dot+1:]
		if dot >= 0 {
			rest = rest[:dot]
		}
	}
	seq, err := strconv.ParseUint(tok[3], 10, 64)
	if err != nil || tok[0] == "" {
		return "", 0, 0, false
	}
	o, err := strconv.Atoi(tok[4])
	if err != nil {
		return "", 0, 0, false
	}
	return tok[0], seq, o, true
}

// batchAnswer is one answer of the stream to a fast batch.
type batchAnswer struct {
	kind batchAnswerKind
	// seq: flow ack, the highest batch sequence stored; gap and err, the
	// batch sequence where the batch broke.
	seq uint64
	// msgs: flow ack, the acknowledgement interval.
	msgs uint64
	// count: end, how many messages of the batch are stored (1..count).
	count uint64
	// dup: end, the batch's last message was a duplicate.
	dup bool
	// err: err, and end answers that carry an error.
	err error
}

type batchAnswerKind uint8

const (
	batchFlowAck  batchAnswerKind = iota + 1 // {"type":"ack"}
	batchGap                                 // {"type":"gap"}
	batchErr                                 // {"type":"err"}
	batchEnd                                 // a PubAck: the batch is over
	batchNoStream                            // 503 no responders
)

// errBatchDisabled is the API error code of a batch publish to a stream
// without allow_batched.
const errCodeBatchDisabled = 10205

// parseBatchAnswer reads a stream's answer to a fast batch message.
func parseBatchAnswer(status string, data []byte) (batchAnswer, error) {
	if len(data) == 0 {
		if status == "503" {
			return batchAnswer{kind: batchNoStream, err: errNoStream}, nil
		}
		return batchAnswer{}, fmt.Errorf("batch answer with status %q and no body", status)
	}
	var r struct {
		Type      string              `json:"type"`
		Seq       uint64              `json:"seq"`
		Msgs      uint64              `json:"msgs"`
		LastSeq   uint64              `json:"last_seq"`
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Batch     string              `json:"batch"`
		Count     uint64              `json:"count"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return batchAnswer{}, fmt.Errorf("read batch answer %q: %w", truncateForLog(data), err)
	}
	switch r.Type {
	case "ack":
		return batchAnswer{kind: batchFlowAck, seq: r.Seq, msgs: r.Msgs}, nil
	case "gap":
		return batchAnswer{kind: batchGap, seq: r.Seq,
			err: fmt.Errorf("gap in the batch: the stream expected message %d, received %d", r.LastSeq, r.Seq)}, nil
	case "err":
		var err error = errors.New("batch message refused")
		if r.Error != nil {
			err = r.Error
		}
		return batchAnswer{kind: batchErr, seq: r.Seq, err: err}, nil
	case "":
	default:
		return batchAnswer{}, fmt.Errorf("batch answer of unknown type %q", r.Type)
	}
	a := batchAnswer{kind: batchEnd, count: r.Count, dup: r.Duplicate}
	if r.Error != nil {
		a.err = r.Error
	} else if r.Stream == "" {
		return batchAnswer{}, fmt.Errorf("batch answer %q names no stream", truncateForLog(data))
	}
	return a, nil
}

func truncateForLog(b []byte) []byte {
	if len(b) > 200 {
		return append(bytes.Clone(b[:200]), "..."...)
	}
	return b
}

// workBatch is a sender step in a batched round. l.mu is held; it unlocks
// it.
func (l *lane) workBatch(now time.Time) (time.Duration, bool) {
	if l.batchID == "" {
		if l.base >= l.next {
			l.mu.Unlock()
			return -1, true
		}
		l.openBatch()
	}
	if l.bending {
		// Waiting for the batch's end: its PubAck, or AckTimeout.
		d := l.watchOldest(now)
		if d < 0 {
			d = l.lastSent.Add(l.s.o.AckTimeout).Sub(now)
			if d <= 0 {
				l.fail(fmt.Errorf("no answer to the end of batch %s within %v", l.batchID, l.s.o.AckTimeout))
				d = 0
			}
		}
		l.mu.Unlock()
		return d, true
	}
	inFlight := l.bsent - l.backed
	allowed := min(l.window, max(l.flowMsgs, 1)*batchOutstanding)
	if l.flowMsgs == 0 {
		allowed = 2 // until the server's first answer sets the pace
	}
	if l.sendAt < l.next && inFlight < allowed {
		sl := &l.slots[l.sendAt%l.window]
		bseq := l.sendAt - l.bstart + 1
		op := batchOpAppend
		if bseq == 1 {
			op = batchOpStart
		}
		l.replyBuf = appendBatchReply(l.replyBuf[:0], l.inbox, l.batchID, flowFor(l.window), bseq, op)
		if err := l.send(sl, string(l.replyBuf)); err != nil {
			l.sendFailed(err)
			l.mu.Unlock()
			return 0, true
		}
		if sl.state != slotStored {
			sl.state = slotSent
		}
		sl.sentAt, sl.gen = now, l.gen
		l.lastSent = now
		l.lastSubject = sl.subject
		l.bsent = bseq
		l.sendAt++
		l.mu.Unlock()
		return 0, true
	}
	if l.sendAt < l.next {
		// Paced by the server: wait for its acknowledgements.
		d := l.watchOldest(now)
		l.mu.Unlock()
		return d, true
	}
	// Nothing more to send: end the batch, which acknowledges its last
	// messages, once idle for commitIdle or when the oldest is old, or at
	// once when Publish waits for room in the window.
	d := l.lastSent.Add(commitIdle).Sub(now)
	if l.base < l.sendAt {
		if sl := &l.slots[l.base%l.window]; sl.state == slotSent {
			d = min(d, sl.sentAt.Add(maxTailWait).Sub(now))
		}
	}
	if l.next-l.base >= l.window || l.bytes >= l.s.o.MaxInflightBytes {
		d = 0
	}
	if d > 0 {
		l.mu.Unlock()
		return d, true
	}
	if err := l.sendControl(batchOpEOB, l.bsent+1); err != nil {
		l.sendFailed(err)
		l.mu.Unlock()
		return 0, true
	}
	l.bending, l.bcommitted = true, true
	l.lastSent = now
	l.mu.Unlock()
	return 0, true
}

// openBatch starts a new fast batch at base. After a batch the lane ended
// itself, it goes on at that batch's pace; else it waits for the server's
// first answer. l.mu is held.
func (l *lane) openBatch() {
	l.batchID = strconv.FormatUint(rand.Uint64(), 36) + strconv.FormatUint(uint64(l.gen), 36)
	l.bstart, l.bsent, l.backed = l.base, 0, 0
	if !l.cleanEnd {
		l.flowMsgs = 0
	}
	l.cleanEnd = false
	l.bending, l.bcommitted, l.batchErr = false, false, nil
	l.sendAt = l.base
}

// sendControl sends an EOB or ping message of the open batch: no payload,
// not stored. l.mu is held.
func (l *lane) sendControl(op int, seq uint64) error {
	l.replyBuf = appendBatchReply(l.replyBuf[:0], l.inbox, l.batchID, flowFor(l.window), seq, op)
	l.msg = natsgo.Msg{Subject: l.lastSubject, Reply: string(l.replyBuf)}
	return l.t.publishMsg(&l.msg)
}

// onBatchAnswer handles the stream's answer to a fast batch message.
func (l *lane) onBatchAnswer(m *natsgo.Msg, id string, bseq uint64, op int) {
	var status string
	if m.Header != nil {
		status = m.Header.Get("Status")
	}
	a, perr := parseBatchAnswer(status, m.Data)
	l.mu.Lock()
	defer l.mu.Unlock()
	if id != l.batchID || l.batchID == "" {
		return // an earlier batch's: the lane has moved on
	}
	if perr != nil {
		l.batchOver()
		l.fail(fmt.Errorf("batch %s: %w", id, perr))
		return
	}
	switch a.kind {
	case batchFlowAck:
		if a.msgs > 0 {
			l.flowMsgs = a.msgs
		}
		l.batchStored(a.seq, false)
		if op == batchOpPing && l.failed != nil {
			l.pingAlive = true // the stream has every message sent: no gap
			signal(l.wakeSend)
		}
		signal(l.wakeSend)
	case batchGap, batchErr:
		// The stream ends the batch; its PubAck follows.
		l.bending = true
		if l.batchErr == nil {
			l.batchErr = a.err
		}
	case batchNoStream:
		l.batchOver()
		l.fail(fmt.Errorf("event %s: %w", l.slotID(l.bstart+bseq-1), a.err))
		signal(l.wakeSend)
	case batchEnd:
		failing := l.slotID(l.bstart + bseq - 1) // before batchStored moves base
		l.batchStored(a.count, a.dup)
		committed := l.bcommitted
		ended := l.bsent
		l.batchOver()
		switch {
		case a.err != nil:
			var apiErr *jetstream.APIError
			if errors.As(a.err, &apiErr) && apiErr.ErrorCode == errCodeBatchDisabled {
				// The stream no longer allows batches: publish one by one.
				l.s.batched.Store(false)
				l.log.Info("the stream does not allow batch publishing any more: publishing events one by one")
			}
			l.fail(fmt.Errorf("event %s: %w", failing, a.err))
		case committed && a.count == ended:
			// Ended by the lane, every message stored: the next event
			// opens a new batch.
			l.cleanEnd = true
		case a.dup && a.count == 1 && !committed:
			// The batch's first message was stored before (a re-send
			// whose acknowledgement was lost): the stream ends such a
			// batch at once, refusing what followed. Open the next one
			// after it.
			l.sendAt = l.base
			for seq := l.base; seq < l.next; seq++ {
				if sl := &l.slots[seq%l.window]; sl.state == slotSent {
					sl.state = slotQueued
				}
			}
		default:
			why := l.batchErr
			if why == nil {
				why = errors.New("the stream ended the batch")
			}
			l.fail(fmt.Errorf("event %s: %w (stored %d of the batch's %d messages)", l.slotID(l.bstart+a.count), why, a.count, ended))
		}
		signal(l.wakeSend)
	}
}

// batchStored marks the open batch's messages 1..n stored. l.mu is held.
func (l *lane) batchStored(n uint64, lastDup bool) {
	if n > l.bsent {
		n = l.bsent
	}
	if n <= l.backed {
		return
	}
	for bseq := l.backed + 1; bseq <= n; bseq++ {
		seq := l.bstart + bseq - 1
		if seq < l.base || seq >= l.next {
			continue
		}
		sl := &l.slots[seq%l.window]
		if sl.state != slotStored && sl.seq == seq {
			l.markStored(sl, 0, lastDup && bseq == n)
		}
	}
	l.backed = n
	l.advance()
}

// batchOver forgets the open batch. l.mu is held.
func (l *lane) batchOver() {
	l.batchID = ""
	l.bending, l.bcommitted = false, false
}
