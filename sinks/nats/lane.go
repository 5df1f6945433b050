package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

// How a lane publishes (JetStream mode).
//
// Publish encodes the event into a free slot of the lane's window (a ring
// of MaxInflight slots indexed by LaneSeq) and returns; it blocks only while
// the window is full. The lane's sender goroutine sends the queued slots in
// LaneSeq order with a reply subject "<inbox>.<laneseq>.<round>", on which
// the stream answers with its PubAck. The ack handler (the reply
// subscription's goroutine) marks slots stored and moves the watermark: the
// highest n such that 1..n are all stored. The notifier goroutine reports
// the watermark to the tracker (acked), coalescing, so that a slow acked
// never delays reading acks. Nothing waits for an ack between two sends.
//
// A publish fails when the stream answers with an error, nobody answers
// ("no responders": no stream captures the subject), the oldest unacked
// message waits longer than AckTimeout, or the connection refuses the
// message. Then the lane stops sending new messages, lets those in flight
// settle (answered, or AckTimeout after the last send), waits with back-off
// until the connection is up, and starts a new round: every message not
// yet stored is sent again, in LaneSeq order, with the same Nats-Msg-Id and
// bytes, followed by the queued ones. JetStream drops those it already
// holds as duplicates (PubAck.duplicate, counted in Stats.Duplicates); an
// ack from an earlier round still counts, since the message is stored.
//
// Order: the stream holds a lane's events in LaneSeq order, except in one
// case: when message k fails but a later one, k+j, sent before the failure
// was noticed, is stored. The new round sends k again after k+j, so the
// stream holds k+j before k (k+j's re-send is a dropped duplicate).
// Consumers that need strict order sort a transaction's events by
// trackerdtxseq; transactions are never reordered by more than the window.
// Messages re-sent after the duplicate window has passed are stored twice.
// A connection that buffers publishes while reconnecting (nats.go's
// default; Connect turns it off) adds a second case: what it buffered
// reaches the server before the re-sends of what the old connection lost.
//
// Memory: only the encoded bytes of unacknowledged messages are kept, at
// most MaxInflight of them per lane; while NATS is down the window fills and
// Publish blocks, which pauses the database reader.

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
	seq     uint64
	subject string
	id      string
	data    []byte
	sentAt  time.Time
	gen     uint32
	state   slotState
}

// warnEvery is how often continuing failures are logged as warnings.
const warnEvery = 30 * time.Second

// maxRetainedBuf is the largest message buffer a slot keeps for reuse once
// its message is stored: larger ones are dropped so that a few huge rows
// do not pin window × their size of memory.
const maxRetainedBuf = 64 << 10

type lane struct {
	s      *Sink
	t      transport
	bind   string
	acked  func(uint64)
	log    *slog.Logger
	core   bool
	window uint64
	inbox  string // reply prefix, ending in "."
	unsub  func() error

	// Publish's own state, guarded by pubMu (the tracker calls Publish from
	// one goroutine; the mutex makes misuse safe, not fast).
	pubMu   sync.Mutex
	subjBuf []byte
	dataBuf []byte
	// subjects interns rendered subjects: a table's changes share a few,
	// so a publish need not allocate one.
	subjects map[string]string

	// The sender's own state.
	msg      natsgo.Msg
	hdr      natsgo.Header
	replyBuf []byte

	mu          sync.Mutex
	slots       []slot
	base        uint64 // lowest LaneSeq not stored: 1..base-1 are
	next        uint64 // LaneSeq of the next Publish
	sendAt      uint64 // next LaneSeq to send in this round
	gen         uint32 // the round
	outstanding int    // slots sent in this round without an answer
	lastSent    time.Time
	failed      error // why this round failed; nil while healthy
	failing     bool  // set from the first failure until progress
	lastWarn    time.Time
	roundBase   uint64 // base when this round began
	fatal       error  // the lane cannot go on
	closing     bool
	drained     chan struct{} // closed once closing and everything is stored
	dead        chan struct{} // closed when fatal is set

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
		s:         s,
		t:         s.t,
		bind:      bind,
		acked:     acked,
		log:       s.log.With(slog.String("bind", bind)),
		core:      s.o.Mode == Core,
		window:    uint64(s.o.MaxInflight),
		slots:     make([]slot, s.o.MaxInflight),
		base:      1,
		next:      1,
		sendAt:    1,
		gen:       1,
		roundBase: 1,
		dead:      make(chan struct{}),
		wakeSend:  make(chan struct{}, 1),
		wakePub:   make(chan struct{}, 1),
		wakeAck:   make(chan struct{}, 1),
		stop:      make(chan struct{}),
		hdr:       natsgo.Header{HeaderContentType: {ContentType}, HeaderMsgID: {""}},
	}
	if !l.core {
		l.inbox = s.t.newInbox() + "."
		unsub, err := s.t.subscribe(l.inbox+">", l.onAck)
		if err != nil {
			return nil, fmt.Errorf("nats: lane %s: subscribe to acks: %w", bind, err)
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
	// Wait for a free slot.
	for {
		l.mu.Lock()
		fatal, closing, full := l.fatal, l.closing, l.next-l.base >= l.window
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
	data, err := l.encode(sl.data[:0], ev)
	if err != nil {
		return err
	}
	l.subjBuf = l.s.subjects.Append(l.subjBuf[:0], ev.Phase, ev.Change)
	*sl = slot{seq: seq, subject: l.intern(l.subjBuf), id: ev.ID, data: data, state: slotQueued}
	l.mu.Lock()
	if l.closing {
		// Close began while the event was encoded, and may have found
		// the lane drained: the event must not slip in behind its back.
		l.mu.Unlock()
		return ErrLaneClosed
	}
	l.next = seq + 1
	l.mu.Unlock()
	signal(l.wakeSend)
	l.s.published.Add(1)
	l.s.inFlight.Add(1)
	if l.s.o.Echo {
		l.log.LogAttrs(ctx, slog.LevelInfo, "published", slog.String("subject", sl.subject), slog.String("event_id", ev.ID))
	}
	return nil
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
	return len("NATS/1.0\r\n") + len(HeaderContentType+": "+ContentType+"\r\n") +
		len(HeaderMsgID+": \r\n") + len(id) + len("\r\n")
}

// encode appends ev's message to b, applying the oversize policy.
func (l *lane) encode(b []byte, ev *tracker.Event) ([]byte, error) {
	b = appendEvent(b, ev, eventData(ev))
	limit := l.s.limit()
	size := len(b) + headerLen(ev.ID)
	if limit <= 0 || size <= limit {
		return b, nil
	}
	if l.s.o.OversizePolicy == OversizeTruncate && ev.Phase != tracker.PhaseRollback {
		out, cols, ok := l.truncate(b[:0], ev, size, limit)
		if ok {
			l.s.truncated.Add(1)
			l.log.Warn("event too large: column values left out", slog.String("event_id", ev.ID),
				slog.String("table", ev.Change.Schema+"."+ev.Change.Table), slog.Any("columns", cols),
				slog.Int("size", size), slog.Int("new_size", len(out)+headerLen(ev.ID)), slog.Int("limit", limit))
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
		// Let what is in flight settle before sending again.
		if l.outstanding > 0 {
			if d := l.lastSent.Add(l.s.o.AckTimeout).Sub(now); d > 0 {
				l.mu.Unlock()
				return d, true
			}
		}
		if l.base > l.roundBase {
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
	if l.sendAt < l.base {
		l.sendAt = l.base
	}
	if l.sendAt < l.next {
		sl := &l.slots[l.sendAt%l.window]
		if sl.state == slotStored {
			// Acknowledged by an earlier round after this one began.
			l.sendAt++
			l.mu.Unlock()
			return 0, true
		}
		if err := l.send(sl); err != nil {
			if errors.Is(err, natsgo.ErrConnectionClosed) {
				l.setFatal(fmt.Errorf("nats: lane %s: %w", l.bind, err))
			} else {
				l.fail(err)
			}
			l.mu.Unlock()
			return 0, true
		}
		sl.sentAt, sl.gen = now, l.gen
		l.lastSent = now
		l.sendAt++
		if l.core {
			sl.state = slotStored
			l.s.acked.Add(1)
			l.advance()
		} else {
			sl.state = slotSent
			l.outstanding++
		}
		l.mu.Unlock()
		return 0, true
	}
	// Everything is sent: watch the oldest unacknowledged message.
	if !l.core && l.base < l.sendAt {
		if sl := &l.slots[l.base%l.window]; sl.state == slotSent {
			d := sl.sentAt.Add(l.s.o.AckTimeout).Sub(now)
			if d <= 0 {
				l.fail(fmt.Errorf("no acknowledgement for event %s within %v", sl.id, l.s.o.AckTimeout))
				l.mu.Unlock()
				return 0, true
			}
			l.mu.Unlock()
			return d, true
		}
	}
	l.mu.Unlock()
	return -1, true
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

// send hands one message to the connection. l.mu is held: a slot's bytes
// may not change while they are sent.
func (l *lane) send(sl *slot) error {
	l.hdr[HeaderMsgID][0] = sl.id
	l.msg = natsgo.Msg{Subject: sl.subject, Data: sl.data, Header: l.hdr}
	if !l.core {
		l.replyBuf = append(l.replyBuf[:0], l.inbox...)
		l.replyBuf = strconv.AppendUint(l.replyBuf, sl.seq, 10)
		l.replyBuf = append(l.replyBuf, '.')
		l.replyBuf = strconv.AppendUint(l.replyBuf, uint64(l.gen), 10)
		l.msg.Reply = string(l.replyBuf)
	}
	return l.t.publishMsg(&l.msg)
}

// fail ends the round. l.mu is held.
func (l *lane) fail(err error) {
	if l.failed != nil {
		return
	}
	l.failed = err
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
	l.s.retried.Add(n)
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

// advance moves base past stored slots. l.mu is held.
func (l *lane) advance() {
	start := l.base
	for l.base < l.next {
		sl := &l.slots[l.base%l.window]
		if sl.state != slotStored {
			break
		}
		sl.state = slotFree
		sl.subject, sl.id = "", ""
		if cap(sl.data) > maxRetainedBuf {
			sl.data = nil
		}
		l.base++
	}
	if n := l.base - start; n > 0 {
		l.s.inFlight.Add(-int64(n))
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
}

// onAck handles the stream's answer to one publish.
func (l *lane) onAck(m *natsgo.Msg) {
	seq, gen, ok := parseReply(m.Subject, len(l.inbox))
	if !ok {
		return
	}
	dup, err := parsePubAck(m)
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
		if current {
			l.outstanding--
		}
		sl.state = slotStored
		l.s.acked.Add(1)
		if dup {
			l.s.duplicates.Add(1)
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
// is stored, and whether it was a duplicate.
func parsePubAck(m *natsgo.Msg) (dup bool, err error) {
	if len(m.Data) == 0 {
		if st := m.Header.Get("Status"); st == "503" {
			return false, errNoStream
		} else if st != "" {
			return false, fmt.Errorf("publish answered with status %s %s", st, m.Header.Get("Description"))
		}
		return false, errors.New("empty publish answer")
	}
	// Fast path: a plain PubAck. The server writes the duplicate flag as
	// `"duplicate": true`, with a space, and leaves it out when false.
	if bytes.HasPrefix(m.Data, []byte(`{"stream":`)) && m.Data[len(m.Data)-1] == '}' && !bytes.Contains(m.Data, []byte(`"error"`)) {
		if !bytes.Contains(m.Data, []byte(`"duplicate"`)) {
			return false, nil
		}
	}
	var r struct {
		Error     *jetstream.APIError `json:"error"`
		Stream    string              `json:"stream"`
		Duplicate bool                `json:"duplicate"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return false, fmt.Errorf("read publish answer: %w", err)
	}
	if r.Error != nil {
		return false, r.Error
	}
	if r.Stream == "" {
		return false, errors.New("publish answer names no stream")
	}
	return r.Duplicate, nil
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
