// Package backoff is trackerd's one exponential back-off: every retry loop
// (reconnecting a source, re-sending to NATS, retrying a receiver, waiting
// for NATS at start, a consumer's redelivery) waits with it, with jitter,
// and with its range named here once.
//
// cenkalti/backoff/v5's ExponentialBackOff would compute the same waits;
// what every caller here also needs is the wait itself under a context and
// a reset once the retried thing makes progress, which is most of this
// package, so it carries no dependency.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// A Policy is a range of waits: the first wait is about Min, each next one
// twice the last, up to Max.
type Policy struct {
	Min, Max time.Duration
}

// The ranges trackerd uses.
var (
	// Reconnect is for a dropped database connection or replication
	// stream, and for trackerd waiting for NATS at start.
	Reconnect = Policy{Min: 100 * time.Millisecond, Max: 10 * time.Second}
	// Publish is for NATS once connected: a failed publish round, the
	// connection's reconnects, an unavailable stream or checkpoint store,
	// a consumer's failed pull. Short, since NATS usually returns within
	// seconds; its Max is part of the re-send horizon that
	// config.MinDuplicateWindow covers.
	Publish = Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	// Receiver is for an in-process receiver that returned an error: it
	// holds the bind, and may need a person to fix what it depends on.
	Receiver = Policy{Min: 100 * time.Millisecond, Max: 30 * time.Second}
)

// Backoff is the state of one retry loop. The zero value is not usable:
// make one with Policy.New.
type Backoff struct {
	p   Policy
	cur time.Duration
}

// New returns a back-off over p's range.
func (p Policy) New() *Backoff { return &Backoff{p: p} }

// Next returns the next wait: a random duration in [d/2, d], where d
// starts at Min and doubles each time up to Max. The jitter keeps many
// retrying instances from hitting a server in step.
func (b *Backoff) Next() time.Duration {
	if b.cur == 0 {
		b.cur = b.p.Min
	} else {
		b.cur = min(2*b.cur, b.p.Max)
	}
	half := b.cur / 2
	return half + rand.N(b.cur-half+1)
}

// Reset starts the range again, after progress.
func (b *Backoff) Reset() { b.cur = 0 }

// Wait sleeps for Next, or until ctx ends, and returns ctx's error then.
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Sleep sleeps for d, or until ctx ends, and returns ctx's error then.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
