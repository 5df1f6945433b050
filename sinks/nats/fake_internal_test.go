package nats

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	natsgo "github.com/nats-io/nats.go"
	"github.com/trackerd/trackerd/wire"
)

// action is what the fake server does with one publish.
type action int

const (
	actStore        action = iota // store (once per id) and acknowledge
	actDrop                       // lose it: no store, no answer
	actStoreNoAck                 // store it but lose the acknowledgement
	actError                      // refuse it with a JetStream API error
	actNoResponders               // answer 503: no stream
	actRefuse                     // the connection refuses it (publishMsg fails)
)

// fakeServer is a scripted JetStream stream behind the transport interface.
// Answers are delivered in order on one goroutine, as nats.go delivers a
// subscription's messages.
type fakeServer struct {
	mu       sync.Mutex
	all      []*natsgo.Msg // every message handed to publishMsg
	stored   []string      // the stream: message ids in order
	ids      map[string]bool
	seqOf    map[string]int // an id's stream sequence
	mute     bool           // store, but lose the answers (except a batch's first flow acknowledgement)
	attempts map[string]int
	subs     map[string]natsgo.MsgHandler // by reply prefix
	maxPay   int64
	down     bool
	policy   func(id string, attempt int) action
	inboxes  int

	// Fast batches: allowBatch makes the fake answer batch messages as
	// nats-server 2.14+ does on a stream with allow_batched (gap mode
	// "fail"), with a flow acknowledgement every flow messages.
	allowBatch    bool
	batchDisabled bool // answer batch messages as a 2.14+ server without allow_batched
	flow          uint64
	batches       map[string]*fakeBatch

	queue chan func()
	once  sync.Once
}

// fakeBatch is the server's state of one fast batch.
type fakeBatch struct {
	lseq uint64 // messages 1..lseq received in order (stored or duplicates)
	fseq uint64 // the last flow acknowledgement's sequence
	flow uint64 // the acknowledgement interval: the fake's, at most the client's
}

func newFakeServer() *fakeServer {
	f := &fakeServer{
		ids:      map[string]bool{},
		seqOf:    map[string]int{},
		attempts: map[string]int{},
		subs:     map[string]natsgo.MsgHandler{},
		maxPay:   1 << 20,
		flow:     4,
		batches:  map[string]*fakeBatch{},
		queue:    make(chan func(), 1<<16),
	}
	go func() {
		for fn := range f.queue {
			fn()
		}
	}()
	return f
}

func (f *fakeServer) setPolicy(p func(id string, attempt int) action) {
	f.mu.Lock()
	f.policy = p
	f.mu.Unlock()
}

func (f *fakeServer) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeServer) publishMsg(m *natsgo.Msg) error {
	cp := &natsgo.Msg{Subject: m.Subject, Reply: m.Reply, Data: append([]byte(nil), m.Data...), Header: natsgo.Header{}}
	for k, v := range m.Header {
		cp.Header[k] = append([]string(nil), v...)
	}
	id := cp.Header.Get(wire.HeaderMsgID)
	f.mu.Lock()
	if int64(msgSize(cp)) > f.maxPay {
		f.mu.Unlock()
		return natsgo.ErrMaxPayload
	}
	if f.down {
		f.mu.Unlock()
		return errors.New("fake: connection down")
	}
	f.attempts[id]++
	act := actStore
	if f.policy != nil {
		act = f.policy(id, f.attempts[id])
	}
	if act == actRefuse {
		f.mu.Unlock()
		return errors.New("fake: refused")
	}
	if f.batchDisabled && strings.HasSuffix(cp.Reply, batchSuffix) {
		f.answer(cp.Reply, `{"error":{"code":400,"err_code":10205,"description":"batch publish is disabled"},"stream":"FAKE","seq":0}`)
		f.mu.Unlock()
		return nil
	}
	if f.allowBatch && strings.HasSuffix(cp.Reply, batchSuffix) {
		f.batchMsg(cp, id, act)
		f.mu.Unlock()
		return nil
	}
	f.all = append(f.all, cp)
	var answer *natsgo.Msg
	switch act {
	case actStore, actStoreNoAck:
		dup := f.ids[id]
		if !dup {
			f.store(id)
		}
		if act == actStore {
			data := fmt.Sprintf(`{"stream":"FAKE", "seq":%d}`, f.seqOf[id])
			if dup {
				data = fmt.Sprintf(`{"stream":"FAKE", "seq":%d, "duplicate": true}`, f.seqOf[id])
			}
			answer = &natsgo.Msg{Subject: cp.Reply, Data: []byte(data)}
		}
	case actError:
		answer = &natsgo.Msg{Subject: cp.Reply, Data: []byte(`{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"},"stream":"FAKE","seq":0}`)}
	case actNoResponders:
		answer = &natsgo.Msg{Subject: cp.Reply, Header: natsgo.Header{"Status": {"503"}}}
	}
	if answer != nil && cp.Reply != "" && !f.mute {
		cb := f.handler(cp.Reply)
		if cb != nil {
			f.queue <- func() { cb(answer) }
		}
	}
	f.mu.Unlock()
	return nil
}

// batchMsg handles a fast batch message as the server does in gap mode
// "fail"; f.mu is held. act is the policy's action for a payload message.
func (f *fakeServer) batchMsg(m *natsgo.Msg, id string, act action) {
	tok := strings.Split(strings.TrimSuffix(m.Reply, batchSuffix), ".")
	if len(tok) < 5 {
		f.answer(m.Reply, `{"error":{"code":400,"err_code":10206,"description":"batch publish pattern is invalid"}}`)
		return
	}
	bid := tok[len(tok)-5]
	seq, _ := strconv.ParseUint(tok[len(tok)-2], 10, 64)
	op, _ := strconv.Atoi(tok[len(tok)-1])
	b := f.batches[bid]
	if b == nil {
		if seq != 1 || op == batchOpPing {
			f.answer(m.Reply, `{"error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"},"stream":"FAKE","seq":0}`)
			return
		}
		req, _ := strconv.ParseUint(tok[len(tok)-4], 10, 64)
		b = &fakeBatch{flow: max(min(f.flow, req), 1)}
		f.batches[bid] = b
	}
	end := func() {
		delete(f.batches, bid)
		f.answer(m.Reply, fmt.Sprintf(`{"stream":"FAKE","seq":%d,"batch":%q,"count":%d}`, len(f.stored), bid, b.lseq))
	}
	switch op {
	case batchOpPing:
		if seq > b.lseq {
			f.answer(m.Reply, fmt.Sprintf(`{"type":"gap","last_seq":%d,"seq":%d}`, b.lseq+1, seq+1))
			end()
			return
		}
		f.answer(m.Reply, fmt.Sprintf(`{"type":"ack","seq":%d,"msgs":%d}`, b.fseq, b.flow))
		return
	case batchOpEOB:
		if seq != b.lseq+1 {
			f.answer(m.Reply, fmt.Sprintf(`{"type":"gap","last_seq":%d,"seq":%d}`, b.lseq+1, seq))
		}
		end()
		return
	}
	if seq != b.lseq+1 {
		f.answer(m.Reply, fmt.Sprintf(`{"type":"gap","last_seq":%d,"seq":%d}`, b.lseq+1, seq))
		end()
		return
	}
	switch act {
	case actDrop:
		return // lost on the way: the next message finds the gap
	case actNoResponders:
		if cb := f.handler(m.Reply); cb != nil && !f.mute {
			answer := &natsgo.Msg{Subject: m.Reply, Header: natsgo.Header{"Status": {"503"}}}
			f.queue <- func() { cb(answer) }
		}
		return
	case actError:
		apiErr := `{"code":503,"err_code":10077,"description":"maximum messages per subject exceeded"}`
		if b.lseq == 0 {
			delete(f.batches, bid)
			f.answer(m.Reply, `{"error":`+apiErr+`,"stream":"FAKE","seq":0}`)
			return
		}
		f.answer(m.Reply, fmt.Sprintf(`{"type":"err","seq":%d,"error":%s}`, seq, apiErr))
		end()
		return
	}
	f.all = append(f.all, m)
	if f.ids[id] {
		if seq == 1 {
			delete(f.batches, bid)
			f.answer(m.Reply, fmt.Sprintf(`{"stream":"FAKE","seq":%d,"duplicate": true,"batch":%q,"count":1}`, len(f.stored), bid))
			return
		}
	} else {
		f.store(id)
	}
	b.lseq = seq
	if act == actStoreNoAck {
		return
	}
	if seq == 1 {
		mute := f.mute
		f.mute = false
		f.answer(m.Reply, fmt.Sprintf(`{"type":"ack","seq":0,"msgs":%d}`, b.flow))
		f.mute = mute
	}
	if b.lseq >= b.fseq+b.flow {
		b.fseq = b.lseq
		f.answer(m.Reply, fmt.Sprintf(`{"type":"ack","seq":%d,"msgs":%d}`, b.fseq, b.flow))
	}
}

// store appends id to the stream; f.mu is held.
func (f *fakeServer) store(id string) {
	f.ids[id] = true
	f.stored = append(f.stored, id)
	f.seqOf[id] = len(f.stored)
}

// answer queues a reply; f.mu is held.
func (f *fakeServer) answer(reply, data string) {
	if f.mute {
		return
	}
	if cb := f.handler(reply); cb != nil {
		m := &natsgo.Msg{Subject: reply, Data: []byte(data)}
		f.queue <- func() { cb(m) }
	}
}

func (f *fakeServer) setMute(mute bool) {
	f.mu.Lock()
	f.mute = mute
	f.mu.Unlock()
}

// restart forgets every batch, as a restarted server does.
func (f *fakeServer) restart() {
	f.mu.Lock()
	f.batches = map[string]*fakeBatch{}
	f.mu.Unlock()
}

// handler finds the subscription of a reply subject; f.mu is held.
func (f *fakeServer) handler(reply string) natsgo.MsgHandler {
	for prefix, cb := range f.subs {
		if strings.HasPrefix(reply, prefix) {
			return cb
		}
	}
	return nil
}

func (f *fakeServer) subscribe(subject string, cb natsgo.MsgHandler) (func() error, error) {
	prefix := strings.TrimSuffix(subject, ">")
	f.mu.Lock()
	f.subs[prefix] = cb
	f.mu.Unlock()
	return func() error {
		f.mu.Lock()
		delete(f.subs, prefix)
		f.mu.Unlock()
		return nil
	}, nil
}

func (f *fakeServer) newInbox() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inboxes++
	return fmt.Sprintf("_INBOX.fake%d", f.inboxes)
}

func (f *fakeServer) maxPayload() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.maxPay
}

func (f *fakeServer) connected() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.down
}

func (f *fakeServer) flush(context.Context) error { return nil }

func (f *fakeServer) published() []*natsgo.Msg {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*natsgo.Msg(nil), f.all...)
}

func (f *fakeServer) streamIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.stored...)
}

func (f *fakeServer) has(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ids[id]
}

// msgSize is a message's payload plus headers, as nats.go counts it.
func msgSize(m *natsgo.Msg) int { return m.Size() - len(m.Subject) - len(m.Reply) }
