package changefeed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

// Tx is a committed transaction, reassembled from its after_commit events.
type Tx struct {
	// Bind is the bind key.
	Bind string
	// Source is the CloudEvent source of its events, /trackerd/<bind>.
	Source string
	// TxID is the source's transaction id; TxKey identifies the transaction
	// in event ids (see [tracker.Change]).
	TxID  string
	TxKey string
	// CommitTime is the commit time where known.
	CommitTime time.Time
	// Total is the transaction's number of changes (trackerdtxtotal).
	Total int
	// Changes are the transaction's after_commit events in transaction
	// order (txseq): all Total of them, unless Partial.
	Changes []Message
	// Partial is true when Changes are not the whole transaction: a part of
	// a transaction larger than [MaxTxChanges] (Part counts the parts handed
	// over, from 0), or what arrived of one that stayed incomplete for
	// [TxTimeout].
	Partial bool
	// Part is the 0-based index of this part of a transaction handed over
	// in parts; 0 otherwise.
	Part int
}

// TxHandler handles one transaction. It is called as [Handler] is: one
// transaction at a time, an error holds the subscription and retries the
// same transaction with back-off, an error wrapping [ErrSkip] gives up on
// it.
type TxHandler func(ctx context.Context, tx Tx) error

// ConsumeTx calls h with every committed transaction, reassembled from its
// after_commit events, read from the durable JetStream consumer named
// durable (see [Feed.Consume] for the consumer, its options and the
// delivery guarantees: at least once, in stream order).
//
// The consumer reads the after_commit events of flt.Bind (every bind when
// empty), or flt.Pattern when set. A transaction's events are gathered by
// (source, txkey) until all trackerdtxtotal of them have arrived, then h
// gets the whole transaction once, with all its changes, if at least one
// of them matches flt (Schema, Table, Op): so Filter{Table: "orders"}
// selects the transactions that touch orders, whole. flt.Phase must be
// empty or after_commit, and Control false. Rollback and before_commit
// events are never part of a transaction; each row of a snapshot (op
// snapshot) is a transaction of its own, with one change; snapshot
// lifecycle events are skipped.
//
// The transaction's messages are acknowledged only after h returns nil; a
// transaction that was not handled is delivered again, whole. A redelivered
// event of a transaction this subscription has handled recently is dropped.
//
// Memory is bounded: at most [MaxAckPending] messages are held (twice
// [MaxTxChanges] by default), and a transaction with more than
// MaxTxChanges changes (10000 by default) is handed over in parts of that
// size, marked [Tx.Partial], each acknowledged after h returns. A
// transaction that stays incomplete for [TxTimeout] is
// handed over as it is, also marked Partial: see TxTimeout for when that
// happens (twice AckWait, 1m, by default). Options also: [FromStart], [FromNew], [FromSequence],
// [FromTime], [AckWait], [RetryBackoff], [Dedup].
func (f *Feed) ConsumeTx(ctx context.Context, durable string, flt Filter, h TxHandler, opts ...ConsumeOption) (*Subscription, error) {
	o, err := buildConsumeOptions(kindConsumeTx, opts)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, errors.New("changefeed: nil handler")
	}
	if !isAny(string(flt.Phase)) && flt.Phase != tracker.PhaseAfterCommit {
		return nil, fmt.Errorf("changefeed: ConsumeTx reads after_commit events; filter phase %q", flt.Phase)
	}
	if flt.Control {
		return nil, errors.New("changefeed: ConsumeTx reads transactions, not snapshot lifecycle events: read those with Consume, Subscribe or Follow and a Control filter")
	}
	if err := flt.Validate(); err != nil {
		return nil, err
	}
	subject := flt.Pattern
	if subject == "" {
		if subject, err = f.Subject(Filter{Phase: tracker.PhaseAfterCommit, Bind: flt.Bind}); err != nil {
			return nil, err
		}
	}
	cons, err := f.durable(ctx, durable, subject, &o)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	s := newSubscription(subject, cancel)
	a := &assembler{
		f: f, o: &o, h: h, sel: Filter{Bind: flt.Bind, Schema: flt.Schema, Table: flt.Table, Op: flt.Op},
		dd: newDedup(o.dedup), pending: make(map[txID]*pendingTx), done: newRecent(1024),
	}
	// The consumer reads every after_commit event of its binds: put them
	// back in their order, so that transactions complete in order.
	ord := newOrderer(Filter{Phase: tracker.PhaseAfterCommit, Pattern: flt.Pattern}, o.orderWait, o.maxAckPending/2, f.log)
	tick := min(o.txTimeout/4, o.ackWait/4, time.Second)
	go func() {
		defer close(s.done)
		defer cancel()
		var pinged time.Time
		err := f.pull(ctx, cons, min(o.maxAckPending, 1024), o.ackWait, tick, func(jm jetstream.Msg) {
			if ctx.Err() != nil {
				_ = jm.Nak() // stopping: hand it back for immediate redelivery
				return
			}
			m, err := DecodeJetStreamMsg(jm)
			if err != nil {
				a.f.log.Warn("changefeed: terminating a message that is not a trackerd event", slog.String("subject", jm.Subject()), slog.Any("err", err))
				_ = jm.Term()
				return
			}
			for _, e := range ord.add(held{m: m, jm: jm}, time.Now()) {
				if ctx.Err() != nil {
					_ = e.jm.Nak()
					continue
				}
				_ = a.add(ctx, e.m, e.jm) // an error means stopping: the next messages are handed back
			}
		}, func() {
			now := time.Now()
			for _, e := range ord.expire(now) {
				if ctx.Err() != nil {
					_ = e.jm.Nak()
					continue
				}
				_ = a.add(ctx, e.m, e.jm)
			}
			if now.Sub(pinged) >= o.ackWait/3 {
				pinged = now
				ord.each(func(e held) { _ = e.jm.InProgress() })
			}
			_ = a.housekeep(ctx, now)
		})
		for _, e := range ord.drain() {
			_ = e.jm.Nak()
		}
		a.nakAll()
		f.flush()
		if ctx.Err() == nil {
			s.fail(fmt.Errorf("changefeed: consumer %s: %w", durable, err))
		}
	}()
	return s, nil
}

// txID identifies a transaction across binds.
type txID struct{ source, key string }

// pendingTx is a transaction being gathered.
type pendingTx struct {
	tx       Tx
	msgs     []jetstream.Msg // held until the handler accepts the part
	seen     []uint64        // bitset of the txseqs received
	received int             // distinct txseqs received
	last     time.Time       // when an event last arrived
	pinged   time.Time       // when the held messages were last marked in progress
}

func (p *pendingTx) has(seq int) bool { return p.seen[seq/64]&(1<<(seq%64)) != 0 }
func (p *pendingTx) mark(seq int)     { p.seen[seq/64] |= 1 << (seq % 64) }

// assembler gathers after_commit events into transactions. It runs on the
// subscription's goroutine only.
type assembler struct {
	f       *Feed
	o       *consumeOptions
	h       TxHandler
	sel     Filter
	dd      *dedup
	pending map[txID]*pendingTx
	done    *recent
}

// add takes one event, decoded from jm; it returns an error only when ctx
// ended while a handler was retried.
func (a *assembler) add(ctx context.Context, m Message, jm jetstream.Msg) error {
	if m.Phase != tracker.PhaseAfterCommit || m.Lifecycle != nil {
		_ = jm.Ack()
		return nil
	}
	if m.TxTotal < 1 || m.Change.Seq >= m.TxTotal {
		a.f.log.Warn("changefeed: terminating an after_commit event without a valid trackerdtxtotal", append(msgAttrs(&m), slog.Int("txseq", m.Change.Seq), slog.Int("txtotal", m.TxTotal))...)
		_ = jm.Term()
		return nil
	}
	key := txID{m.Source, m.Change.TxKey}
	if m.Change.Op == tracker.OpSnapshot {
		// The rows of a snapshot share its txkey, each a transaction of
		// its own (txtotal 1): the event id tells them apart.
		key.key = "event:" + m.ID
	}
	if key.key == "" {
		key.key = "txid:" + m.Change.TxID
	}
	if a.dd.has(&m) || a.done.has(key) {
		_ = jm.Ack() // handled already
		return nil
	}
	p := a.pending[key]
	now := time.Now()
	if p == nil {
		p = &pendingTx{
			tx: Tx{Bind: m.Change.Bind, Source: m.Source, TxID: m.Change.TxID, TxKey: m.Change.TxKey,
				CommitTime: m.Change.CommitTime, Total: m.TxTotal},
			seen:   make([]uint64, (m.TxTotal+63)/64),
			pinged: now,
		}
		a.pending[key] = p
	}
	p.last = now
	p.msgs = append(p.msgs, jm)
	if m.Change.Seq >= p.tx.Total || p.has(m.Change.Seq) {
		return nil // a redelivery: held, acknowledged with the rest
	}
	p.mark(m.Change.Seq)
	p.received++
	p.tx.Changes = append(p.tx.Changes, m)
	switch {
	case p.received == p.tx.Total:
		if err := a.deliver(ctx, p, false); err != nil {
			return err // p stays pending: nakAll hands its messages back
		}
		delete(a.pending, key)
		a.done.add(key)
	case len(p.tx.Changes) >= a.o.maxTxChanges:
		if err := a.deliver(ctx, p, true); err != nil {
			return err
		}
		p.tx.Part++
	}
	return nil
}

// housekeep hands over the transactions that stayed incomplete for
// TxTimeout and keeps the held messages of the others from redelivery.
func (a *assembler) housekeep(ctx context.Context, now time.Time) error {
	for key, p := range a.pending {
		switch {
		case now.Sub(p.last) >= a.o.txTimeout:
			if len(p.tx.Changes) > 0 {
				a.f.log.Info("changefeed: handing over an incomplete transaction", slog.String("source", p.tx.Source),
					slog.String("txkey", p.tx.TxKey), slog.Int("received", p.received), slog.Int("total", p.tx.Total))
			}
			// With no change left, only redeliveries of parts handed over
			// are held: deliver acknowledges them.
			if err := a.deliver(ctx, p, true); err != nil {
				return err
			}
			delete(a.pending, key)
		case now.Sub(p.pinged) >= a.o.ackWait/3:
			p.pinged = now
			for _, jm := range p.msgs {
				_ = jm.InProgress()
			}
		}
	}
	return nil
}

// deliver hands p's gathered changes to the handler, then acknowledges
// their messages and clears them. It returns ctx's error when the
// subscription stopped first; the messages then stay held, for nakAll.
func (a *assembler) deliver(ctx context.Context, p *pendingTx, partial bool) error {
	tx := p.tx
	tx.Partial = partial || tx.Part > 0
	if len(tx.Changes) == 0 {
		ackAll(p.msgs)
		p.msgs = nil
		return nil
	}
	slices.SortStableFunc(tx.Changes, func(x, y Message) int { return x.Change.Seq - y.Change.Seq })
	match := false
	for i := range tx.Changes {
		if a.sel.Match(&tx.Changes[i]) {
			match = true
			break
		}
	}
	if match {
		attrs := []any{slog.String("source", tx.Source), slog.String("txkey", tx.TxKey), slog.Int("changes", len(tx.Changes))}
		err := retry(ctx, a.o, a.f.log, attrs, func() error { return a.h(ctx, tx) }, func() {
			for _, jm := range p.msgs {
				_ = jm.InProgress()
			}
		})
		switch {
		case errors.Is(err, ErrSkip):
			a.f.log.Info("changefeed: handler skipped a transaction", append(attrs, slog.Any("err", err))...)
			for _, jm := range p.msgs {
				_ = jm.Term()
			}
			p.msgs, p.tx.Changes = nil, nil
			return nil
		case err != nil:
			return err
		}
	}
	ackAll(p.msgs)
	for i := range tx.Changes {
		a.dd.add(&tx.Changes[i])
	}
	p.msgs, p.tx.Changes = nil, nil
	return nil
}

func ackAll(msgs []jetstream.Msg) {
	for _, jm := range msgs {
		_ = jm.Ack()
	}
}

// nakAll hands every held message back to the server, for immediate
// redelivery to the next subscriber.
func (a *assembler) nakAll() {
	for key, p := range a.pending {
		for _, jm := range p.msgs {
			_ = jm.Nak()
		}
		delete(a.pending, key)
	}
}

// recent is a bounded set of the transactions handed over last.
type recent struct {
	set  map[txID]struct{}
	ring []txID
	next int
}

func newRecent(n int) *recent { return &recent{set: make(map[txID]struct{}, n), ring: make([]txID, n)} }

func (r *recent) has(k txID) bool { _, ok := r.set[k]; return ok }

func (r *recent) add(k txID) {
	if r.has(k) {
		return
	}
	if old := r.ring[r.next]; old != (txID{}) {
		delete(r.set, old)
	}
	r.ring[r.next] = k
	r.set[k] = struct{}{}
	r.next = (r.next + 1) % len(r.ring)
}
