package changefeed

import (
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// Order is where an event stands in its bind's order of publication, from
// the Trackerd-Order header. trackerd sets it where the stream may store a
// bind's events out of order: on streams without batch publishing
// (nats-server before 2.14, or a stream without allow_batched), a failed
// publish can let later events into the stream ahead of it. Subscriptions
// use it to hand events over in their bind's order (see [OrderWait]). It is
// zero when the message has no such header.
type Order struct {
	// Run identifies one run of the bind's publisher (a trackerd process
	// from start to stop): Seq and PhaseSeq count within it.
	Run string
	// Seq is the event's place among the run's events of its bind: 1, 2, 3...
	Seq uint64
	// PhaseSeq is its place among the run's events of its bind and phase.
	PhaseSeq uint64
}

// parseOrder reads a Trackerd-Order header value, "<run>.<seq>.<phaseseq>".
func parseOrder(v string) (Order, bool) {
	run, seq, pseq, ok := wire.ParseOrder(v)
	return Order{Run: run, Seq: seq, PhaseSeq: pseq}, ok
}

func orderOf(h nats.Header) Order {
	if h == nil {
		return Order{}
	}
	o, _ := parseOrder(h.Get(wire.HeaderOrder))
	return o
}

// held is an event a subscription holds back, with its JetStream message
// (nil for Follow).
type held struct {
	m  Message
	jm jetstream.Msg
}

// orderer puts a subscription's events back in their bind's order. It
// works on subscriptions that see every event of a bind (byPhase false:
// Order.Seq counts them) or every event of a bind's phase (byPhase true:
// Order.PhaseSeq): an event that arrives while an earlier one of its chain
// is missing is held until that one arrives, or for at most wait, or
// while fewer than limit events are held. Without the Trackerd-Order
// header, events pass as they come. It runs on the subscription's
// goroutine only.
type orderer struct {
	byPhase bool
	wait    time.Duration
	limit   int
	log     *slog.Logger
	chains  map[chainKey]*chain
	count   int // events held
}

type chainKey struct {
	source, run string
	phase       tracker.Phase // "" when byPhase is false
}

// chain is one bind's (or bind and phase's) events of one run.
type chain struct {
	next  uint64 // the next event to hand over
	held  map[uint64]held
	since time.Time // when the chain began to hold
}

// newOrderer returns the orderer of a subscription, or nil when restoring
// order is off (wait 0) or flt does not select whole chains.
func newOrderer(flt Filter, wait time.Duration, limit int, log *slog.Logger) *orderer {
	if wait <= 0 || flt.Pattern != "" || !isAny(flt.Schema) || !isAny(flt.Table) || !isAny(string(flt.Op)) {
		return nil
	}
	return &orderer{byPhase: !isAny(string(flt.Phase)), wait: wait, limit: max(limit, 1), log: log, chains: map[chainKey]*chain{}}
}

// add takes an event and returns those to hand over now, in order.
func (o *orderer) add(h held, now time.Time) []held {
	if o == nil || h.m.Order.Run == "" {
		return []held{h}
	}
	key := chainKey{source: h.m.Source, run: h.m.Order.Run}
	seq := h.m.Order.Seq
	if o.byPhase {
		key.phase, seq = h.m.Phase, h.m.Order.PhaseSeq
	}
	c := o.chains[key]
	var out []held
	if c == nil {
		// A new run: the earlier ones have ended, and what they still
		// hold comes before anything of this one.
		out = o.endRuns(key)
		c = &chain{next: seq, held: map[uint64]held{}}
		o.chains[key] = c
	}
	switch {
	case seq < c.next:
		return append(out, h) // late (given up on), or delivered again
	case seq > c.next:
		if _, ok := c.held[seq]; !ok {
			o.count++
		}
		if len(c.held) == 0 {
			c.since = now
		}
		c.held[seq] = h // a redelivery replaces the held copy
		if o.count >= o.limit {
			return append(out, o.release(key, c, "too many events held")...)
		}
		return out
	}
	out = append(out, h)
	c.next++
	for {
		n, ok := c.held[c.next]
		if !ok {
			break
		}
		out = append(out, n)
		delete(c.held, c.next)
		o.count--
		c.next++
	}
	if len(c.held) > 0 {
		c.since = now
	}
	return out
}

// endRuns drops the chains of other runs of key's source and phase,
// handing over what they hold: a new run means the old one has ended.
func (o *orderer) endRuns(key chainKey) []held {
	var out []held
	for k, c := range o.chains {
		if k.source == key.source && k.phase == key.phase && k.run != key.run {
			if len(c.held) > 0 {
				out = append(out, o.release(k, c, "a new run began")...)
			}
			delete(o.chains, k)
		}
	}
	return out
}

// expire hands over, in order, the events of chains that have held them
// for wait: the missing events are not coming (or come too late to keep
// the order).
func (o *orderer) expire(now time.Time) []held {
	if o == nil || o.count == 0 {
		return nil
	}
	var out []held
	for key, c := range o.chains {
		if len(c.held) > 0 && now.Sub(c.since) >= o.wait {
			out = append(out, o.release(key, c, "waited OrderWait")...)
		}
	}
	return out
}

// flush hands over every held event, chain by chain in order, giving up
// on the missing ones (a read that ends).
func (o *orderer) flush() []held {
	if o == nil || o.count == 0 {
		return nil
	}
	var out []held
	for key, c := range o.chains {
		if len(c.held) > 0 {
			out = append(out, o.release(key, c, "the read ends")...)
		}
	}
	return out
}

// release hands over every event c holds, in order, giving up on the
// missing ones.
func (o *orderer) release(key chainKey, c *chain, why string) []held {
	seqs := make([]uint64, 0, len(c.held))
	for s := range c.held {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	out := make([]held, 0, len(seqs))
	for _, s := range seqs {
		out = append(out, c.held[s])
	}
	o.log.Warn("changefeed: events missing from their bind's order: handing over the later events without them",
		slog.String("source", key.source), slog.String("run", key.run), slog.String("phase", string(key.phase)),
		slog.Uint64("missing_from", c.next), slog.Uint64("missing_to", seqs[0]-1), slog.Int("held", len(seqs)), slog.String("why", why))
	o.count -= len(seqs)
	c.next = seqs[len(seqs)-1] + 1
	clear(c.held)
	return out
}

// each calls fn for every held event.
func (o *orderer) each(fn func(held)) {
	if o == nil {
		return
	}
	for _, c := range o.chains {
		for _, h := range c.held {
			fn(h)
		}
	}
}

// drain removes and returns every held event (the subscription stops).
func (o *orderer) drain() []held {
	if o == nil {
		return nil
	}
	var out []held
	o.each(func(h held) { out = append(out, h) })
	for _, c := range o.chains {
		clear(c.held)
	}
	o.count = 0
	return out
}
