package nats

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// The stream's answers to messages published on their own (streams
// without allow_batched): each is sent with the reply subject
// "<inbox><laneseq>.<round>" and answered there with a PubAck,
// {"stream":"S","seq":5}, or an error.

// appendPubReply appends the reply subject of message seq in round gen.
func appendPubReply(b []byte, inbox string, seq uint64, gen uint32) []byte {
	b = append(b, inbox...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, '.')
	return strconv.AppendUint(b, uint64(gen), 10)
}

// parseReply reads "<inbox><seq>.<gen>", inbox being prefixLen long.
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
