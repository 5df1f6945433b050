package nats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"
)

// JetStream's fast batch publishing (ADR-50, nats-server 2.14 and later,
// on streams with allow_batched), as a lane uses it: this file writes and
// reads its messages; the window (window.go) keeps the open batch's state.
// Each message names its batch, its place in the batch and an operation in
// its reply subject:
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
