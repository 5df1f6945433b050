package changefeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/internal/backoff"
)

// Subscription is a running subscription of a [Feed]. It stops when the
// context given to the call that started it ends, when Stop is called, or
// when it cannot go on (Err says why).
type Subscription struct {
	subject string
	cancel  context.CancelFunc
	done    chan struct{}

	mu  sync.Mutex
	err error
}

func newSubscription(subject string, cancel context.CancelFunc) *Subscription {
	return &Subscription{subject: subject, cancel: cancel, done: make(chan struct{})}
}

// Subject returns the NATS subject pattern the subscription reads.
func (s *Subscription) Subject() string { return s.subject }

// Stop stops the subscription: the handler's context ends, and on a
// durable consumer the messages received but not yet acknowledged are
// handed back to the server (negatively acknowledged) for immediate
// redelivery, including those of its last pull request, which it reads to
// its end (about a second at most). Stop does not wait; Closed does. It may
// be called more than once, and from a handler.
func (s *Subscription) Stop() { s.cancel() }

// Closed returns a channel that is closed once the subscription has
// stopped and its handler has returned.
func (s *Subscription) Closed() <-chan struct{} { return s.done }

// Err returns why the subscription stopped by itself (the consumer was
// deleted, the connection closed: [ErrClosed]), or nil while it runs and
// after Stop or the end of its context.
func (s *Subscription) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

func (s *Subscription) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	s.mu.Unlock()
}

func msgAttrs(m *Message) []any {
	return []any{slog.String("id", m.ID), slog.String("subject", m.Subject)}
}

// deliver calls h with m unless flt or dd drops it, retrying a failing
// handler until it succeeds, skips the event (ErrSkip) or ctx ends.
func (f *Feed) deliver(ctx context.Context, o *consumeOptions, flt Filter, dd *dedup, h Handler, m Message) {
	if !flt.Match(&m) || dd.has(&m) {
		return
	}
	err := retry(ctx, o, f.log, msgAttrs(&m), func() error { return h(ctx, m) }, nil)
	switch {
	case err == nil:
		dd.add(&m)
	case errors.Is(err, ErrSkip):
		f.log.Info("changefeed: handler skipped an event", append(msgAttrs(&m), slog.Any("err", err))...)
	}
}

// Subscribe calls h with every event flt selects that is published from
// now on, on core NATS: no stream is needed, and nothing is kept for a
// subscriber that is not running, so delivery is at most once (events
// published while it is not subscribed, or dropped because it fell too far
// behind, are lost). Messages that are not trackerd events are logged and
// dropped. Options: [RetryBackoff], [Dedup].
//
// Subscribe returns once the server has the subscription (or, when NATS is
// not connected, once nats.go has recorded it for when it is).
func (f *Feed) Subscribe(ctx context.Context, flt Filter, h Handler, opts ...ConsumeOption) (*Subscription, error) {
	o, err := buildConsumeOptions(kindCore, opts)
	if err != nil {
		return nil, err
	}
	subject, err := f.Subject(flt)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("changefeed: nil handler")
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newSubscription(subject, cancel)
	dd := newDedup(o.dedup)
	var (
		mu      sync.Mutex // held while the handler runs
		stopped bool
	)
	sub, err := f.nc.Subscribe(subject, func(msg *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if stopped || ctx.Err() != nil {
			return
		}
		m, err := DecodeMsg(msg)
		if err != nil {
			f.log.Warn("changefeed: dropping a message that is not a trackerd event", slog.String("subject", msg.Subject), slog.Any("err", err))
			return
		}
		f.deliver(ctx, &o, flt, dd, h, m)
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("changefeed: subscribe to %s: %w", subject, err)
	}
	sub.SetClosedHandler(func(string) {
		if ctx.Err() == nil {
			s.fail(ErrClosed)
			cancel()
		}
	})
	if f.nc.IsConnected() {
		// The subscription is the server's once it answers a ping.
		_ = f.nc.FlushTimeout(5 * time.Second)
	}
	go func() {
		<-ctx.Done()
		_ = sub.Unsubscribe()
		mu.Lock()
		stopped = true
		mu.Unlock()
		close(s.done)
	}()
	return s, nil
}

// Consume calls h with every event flt selects from the durable JetStream
// consumer named durable on the feed's stream, creating it when missing:
// at least once. A message is acknowledged after h returns nil for it, so
// an event that was not handled (the process stopped or crashed) is
// delivered again, to this subscription or the next one on the same
// durable; events the filter does not select are acknowledged unseen.
//
// Order: events come in stream order, one at a time. A handler error holds
// the subscription on that event and retries it (see [Handler]) rather
// than letting JetStream redeliver it later, after the events that follow
// it: what a change consumer needs. Meanwhile the feed tells the server the
// message is in progress. An error wrapping [ErrSkip] terminates the
// message instead (no redelivery), as are messages that are not trackerd
// events (logged).
//
// Duplicates: an event is handed again if its acknowledgement is lost, if
// the process stops after handling it but before the acknowledgement
// reaches the server, or if trackerd re-sent it beyond the stream's
// duplicate window. Make handlers idempotent, or de-duplicate on
// ([Message.Source], [Message.ID]) — [Dedup] does so over a window.
//
// The durable is created with the filter's subject ([Feed.Subject]),
// explicit acks, [AckWait], [MaxAckPending], and the start position
// ([FromStart] by default, [FromNew], [FromSequence], [FromTime]). An
// existing durable resumes where it stopped; if its filter subject, ack
// wait or max ack pending differ, it is updated (the start position of an
// existing durable cannot change). Several processes consuming one durable
// share its events (each event goes to one of them), at the cost of the
// order between them. Options also: [RetryBackoff], [Dedup].
func (f *Feed) Consume(ctx context.Context, durable string, flt Filter, h Handler, opts ...ConsumeOption) (*Subscription, error) {
	o, err := buildConsumeOptions(kindConsume, opts)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("changefeed: nil handler")
	}
	subject, err := f.Subject(flt)
	if err != nil {
		return nil, err
	}
	cons, err := f.durable(ctx, durable, subject, &o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newSubscription(subject, cancel)
	dd := newDedup(o.dedup)
	ord := newOrderer(flt, o.orderWait, o.maxAckPending/2, f.log)
	process := func(m Message, jm jetstream.Msg) {
		if ctx.Err() != nil {
			_ = jm.Nak() // stopping: hand it back for immediate redelivery
			return
		}
		if !flt.Match(&m) || dd.has(&m) {
			_ = jm.Ack()
			return
		}
		err := retry(ctx, &o, f.log, msgAttrs(&m), func() error { return h(ctx, m) }, func() { _ = jm.InProgress() })
		switch {
		case err == nil:
			_ = jm.Ack()
			dd.add(&m)
		case errors.Is(err, ErrSkip):
			f.log.Info("changefeed: handler skipped an event", append(msgAttrs(&m), slog.Any("err", err))...)
			_ = jm.Term()
		default:
			_ = jm.Nak()
		}
	}
	handle := func(jm jetstream.Msg) {
		if ctx.Err() != nil {
			_ = jm.Nak() // stopping: hand it back for immediate redelivery
			return
		}
		m, err := DecodeJetStreamMsg(jm)
		if err != nil {
			f.log.Warn("changefeed: terminating a message that is not a trackerd event", slog.String("subject", jm.Subject()), slog.Any("err", err))
			_ = jm.Term()
			return
		}
		for _, e := range ord.add(held{m: m, jm: jm}, time.Now()) {
			process(e.m, e.jm)
		}
	}
	var pinged time.Time
	idle := func() {
		now := time.Now()
		for _, e := range ord.expire(now) {
			process(e.m, e.jm)
		}
		if now.Sub(pinged) >= o.ackWait/3 {
			pinged = now
			ord.each(func(e held) { _ = e.jm.InProgress() })
		}
	}
	go func() {
		defer close(s.done)
		defer cancel()
		err := f.pull(ctx, cons, min(o.maxAckPending, 256), o.ackWait, time.Second, handle, idle)
		for _, e := range ord.drain() {
			_ = e.jm.Nak()
		}
		f.flush()
		if ctx.Err() == nil {
			s.fail(fmt.Errorf("changefeed: consumer %s: %w", durable, err))
		}
	}()
	return s, nil
}

// fetchWait is how long one pull request of a durable subscription waits
// for messages. A stopping subscription reads its last request to the end
// (handing its messages back) before it reports itself closed, so that no
// message is left delivered to a request nobody reads — servers before
// 2.10 go on filling a pull request after its subscriber has gone, and
// those messages would wait for AckWait before their redelivery.
const fetchWait = time.Second

// pull fetches messages from cons in batches of up to maxBatch, calling fn
// for each (from this goroutine only) and idle, if not nil, at least every
// tick, until ctx ends (it then returns nil, after the last request has
// ended) or the consumer cannot be read any more (it returns why).
//
// Messages wait in a batch for the ones before them, their ack wait
// running: batches shrink when fn is slow, so that a batch takes about
// half of ackWait at most.
func (f *Feed) pull(ctx context.Context, cons jetstream.Consumer, maxBatch int, ackWait, tick time.Duration, fn func(jetstream.Msg), idle func()) error {
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	bo := backoff.Publish.New()
	var avg time.Duration // moving average of fn's duration
	for ctx.Err() == nil {
		batch := maxBatch
		if avg > 0 {
			batch = int(min(max(ackWait/2/avg, 1), time.Duration(maxBatch)))
		}
		b, err := cons.Fetch(batch, jetstream.FetchMaxWait(fetchWait))
		if err == nil {
			msgs := b.Messages()
		read:
			for {
				select {
				case jm, ok := <-msgs:
					if !ok {
						break read
					}
					t0 := time.Now()
					fn(jm)
					avg = (4*avg + time.Since(t0)) / 5
				case <-ticker.C:
					if idle != nil && ctx.Err() == nil {
						idle()
					}
				}
			}
			err = b.Error()
		}
		switch {
		case err == nil || errors.Is(err, nats.ErrTimeout) || errors.Is(err, jetstream.ErrNoMessages):
			bo.Reset()
			continue
		case errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, jetstream.ErrConnectionClosed):
			return ErrClosed
		case errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) ||
			errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, jetstream.ErrBadRequest):
			return err
		}
		// Disconnected, or the server does not answer: try again.
		wait := bo.Next()
		f.log.Debug("changefeed: pulling from the stream", slog.Any("err", err), slog.Duration("wait", wait))
		_ = backoff.Sleep(ctx, wait)
	}
	return nil
}

// flush makes sure acknowledgements reach the server before a
// subscription reports itself closed.
func (f *Feed) flush() {
	if f.nc.IsConnected() {
		_ = f.nc.FlushTimeout(5 * time.Second)
	}
}

// durable creates, updates or opens the durable consumer name on subject.
func (f *Feed) durable(ctx context.Context, name, subject string, o *consumeOptions) (jetstream.Consumer, error) {
	if name == "" {
		return nil, errors.New("changefeed: a durable consumer needs a name")
	}
	if !validName(name) {
		return nil, fmt.Errorf("changefeed: durable name %q: want letters, digits, - and _", name)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:       name,
		Description:   "trackerd changefeed",
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       o.ackWait,
		MaxAckPending: o.maxAckPending,
		MaxDeliver:    -1,
	}
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = o.deliverPolicy(startAll)
	c, err := f.js.Consumer(ctx, f.stream, name)
	switch {
	case err == nil:
		cur := c.CachedInfo().Config
		if cur.AckPolicy != jetstream.AckExplicitPolicy {
			return nil, fmt.Errorf("changefeed: consumer %s on stream %s exists with ack policy %s, not explicit: choose another durable name", name, f.stream, cur.AckPolicy)
		}
		if cur.FilterSubject == subject && len(cur.FilterSubjects) == 0 && cur.AckWait == cfg.AckWait && cur.MaxAckPending == cfg.MaxAckPending {
			return c, nil
		}
		upd := cur
		upd.FilterSubject, upd.FilterSubjects = subject, nil
		upd.AckWait, upd.MaxAckPending = cfg.AckWait, cfg.MaxAckPending
		c, err = f.js.UpdateConsumer(ctx, f.stream, upd)
		if err != nil {
			return nil, fmt.Errorf("changefeed: consumer %s on stream %s exists (filter %s); updating it to filter %s: %w", name, f.stream, cur.FilterSubject, subject, err)
		}
		return c, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		c, err = f.js.CreateConsumer(ctx, f.stream, cfg)
		if errors.Is(err, jetstream.ErrConsumerExists) {
			c, err = f.js.Consumer(ctx, f.stream, name)
		}
		if err != nil {
			return nil, fmt.Errorf("changefeed: create consumer %s on stream %s: %w", name, f.stream, err)
		}
		return c, nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("changefeed: stream %s: %w (trackerd creates it on start; set the feed's stream to trackerd's STREAM_NAME)", f.stream, err)
	default:
		return nil, fmt.Errorf("changefeed: consumer %s on stream %s: %w", name, f.stream, err)
	}
}

func validName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

// followHoldLimit is how many events Follow holds back while an earlier
// event of their bind is missing (see OrderWait).
const followHoldLimit = 10000

// Follow calls h with every event flt selects from the feed's stream, in
// stream order, from a start position ([FromNew], the default, or
// [FromStart], [FromSequence], [FromTime]), through an ordered consumer:
// nothing is acknowledged and nothing is kept on the server after the
// subscription stops, so it suits tools and catch-up reads (`trackerd
// tail --from` is built on it). Messages that are not trackerd events are
// logged and skipped. Options: [RetryBackoff], [Dedup], [UntilEnd].
func (f *Feed) Follow(ctx context.Context, flt Filter, h Handler, opts ...ConsumeOption) (*Subscription, error) {
	o, err := buildConsumeOptions(kindFollow, opts)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("changefeed: nil handler")
	}
	subject, err := f.Subject(flt)
	if err != nil {
		return nil, err
	}
	// With UntilEnd: the stream's last sequence now, the end of the read.
	var end uint64
	if o.untilEnd {
		st, err := f.js.Stream(ctx, f.stream)
		if err != nil {
			return nil, fmt.Errorf("changefeed: read stream %s: %w", f.stream, err)
		}
		end = st.CachedInfo().State.LastSeq
	}
	cc := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}}
	cc.DeliverPolicy, cc.OptStartSeq, cc.OptStartTime = o.deliverPolicy(startNew)
	cons, err := f.js.OrderedConsumer(ctx, f.stream, cc)
	if err != nil {
		return nil, fmt.Errorf("changefeed: read stream %s: %w", f.stream, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, fmt.Errorf("changefeed: read stream %s: %w", f.stream, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newSubscription(subject, cancel)
	dd := newDedup(o.dedup)
	if o.untilEnd {
		// The consumer as created: nothing pending from the start position
		// means nothing to read up to end (later messages are past it).
		if ci := cons.CachedInfo(); end == 0 || ci != nil && ci.NumPending == 0 && ci.Delivered.Consumer == 0 {
			cancel()
		}
	}
	ord := newOrderer(flt, o.orderWait, followHoldLimit, f.log)
	go func() { <-ctx.Done(); it.Stop() }()
	go func() {
		defer close(s.done)
		defer cancel()
		var lastErr error
		for ctx.Err() == nil {
			jm, err := it.Next(jetstream.NextMaxWait(time.Second))
			if errors.Is(err, nats.ErrTimeout) {
				for _, e := range ord.expire(time.Now()) {
					f.deliver(ctx, &o, flt, dd, h, e.m)
				}
				continue
			}
			if err != nil {
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					if errors.Is(err, jetstream.ErrConnectionClosed) {
						lastErr = ErrClosed
					}
					break
				}
				lastErr = err
				f.log.Debug("changefeed: reading the stream", slog.Any("err", err))
				_ = backoff.Sleep(ctx, 50*time.Millisecond)
				continue
			}
			if ctx.Err() != nil {
				break
			}
			// With UntilEnd, the message's place says whether it is the
			// last to read: at or past end, or with nothing pending after
			// it (whatever comes later is past end).
			last := false
			if o.untilEnd {
				md, err := jm.Metadata()
				if err == nil && md.Sequence.Stream > end {
					for _, e := range ord.flush() {
						f.deliver(ctx, &o, flt, dd, h, e.m)
					}
					cancel()
					break
				}
				last = err == nil && (md.Sequence.Stream >= end || md.NumPending == 0)
			}
			m, err := DecodeJetStreamMsg(jm)
			if err != nil {
				f.log.Warn("changefeed: skipping a message that is not a trackerd event", slog.String("subject", jm.Subject()), slog.Any("err", err))
			} else {
				for _, e := range ord.add(held{m: m}, time.Now()) {
					f.deliver(ctx, &o, flt, dd, h, e.m)
				}
			}
			if last {
				// What is still held waits for events past the end.
				for _, e := range ord.flush() {
					f.deliver(ctx, &o, flt, dd, h, e.m)
				}
				cancel()
			}
		}
		if ctx.Err() == nil {
			if lastErr == nil {
				lastErr = ErrClosed
			}
			s.fail(fmt.Errorf("changefeed: read stream %s: %w", f.stream, lastErr))
		}
	}()
	return s, nil
}
