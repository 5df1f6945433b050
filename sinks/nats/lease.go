package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/tracker"
)

// leaseTTL is how long a bind's lease holds without renewal; it is renewed
// every leaseTTL/3.
const leaseTTL = 15 * time.Second

// heldMargin is how long before its expiry a holder stops counting on a
// lease it could not renew (see kvLease.Held): room for clock skew between
// hosts and for the renewal's own latency.
const heldMargin = 3 * time.Second

var _ tracker.Leaser = (*KVStore)(nil)

// leaseValue is what a lease key holds.
type leaseValue struct {
	Owner   string    `json:"owner"`
	PID     int       `json:"pid"`
	Expires time.Time `json:"expires"`
	// Token is random per lease taken: it tells this holder's renewals from
	// those of a later holder with the same owner.
	Token string `json:"token"`
}

// Lease implements [tracker.Leaser] with the key "<key>.lease" of the
// checkpoint bucket: taken with compare-and-set, renewed every 5 s, held for
// 15 s without renewal. A lease of the same owner (a restart of the same
// deployment after a crash) is taken back at once, an expired one is taken
// over. A lease another owner holds is watched until it expires (its holder
// died: it is taken over, at most 15 s later) or is renewed (its holder is
// alive: Lease returns an error matching [tracker.ErrFenced], within 5 s).
// Expiry compares the holder's clock with the reader's: keep the clocks of
// trackerd hosts in sync.
func (s *KVStore) Lease(ctx context.Context, key, owner string) (tracker.Lease, error) {
	lkey := key + ".lease"
	var rev uint64
	token := strconv.FormatUint(rand.Uint64(), 36)
	value := func() []byte {
		b, _ := json.Marshal(leaseValue{Owner: owner, PID: os.Getpid(), Expires: time.Now().Add(leaseTTL).UTC(), Token: token})
		return b
	}
	var (
		seen      uint64    // revision of another owner's live lease, 0 if none
		waitUntil time.Time // how long to watch it for a renewal
		taken     time.Time // when the successful write was sent
	)
	for {
		var (
			held    *leaseValue
			heldRev uint64
		)
		err := s.retry(ctx, "lease", func(ctx context.Context, kv jetstream.KeyValue) error {
			held = nil
			taken = time.Now()
			e, err := kv.Get(ctx, lkey)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				rev, err = kv.Create(ctx, lkey, value())
				return err
			}
			if err != nil {
				return err
			}
			var cur leaseValue
			if json.Unmarshal(e.Value(), &cur) == nil && cur.Owner != owner && time.Now().Before(cur.Expires) {
				held, heldRev = &cur, e.Revision()
				return nil
			}
			rev, err = kv.Update(ctx, lkey, value(), e.Revision())
			return err
		})
		switch {
		case held != nil && seen != 0 && heldRev != seen:
			// Renewed while we watched: its holder is alive.
			return nil, fmt.Errorf("%w: the bind is held by %s (pid %d), which renews its lease: another trackerd is running it; stop that one first",
				tracker.ErrFenced, held.Owner, held.PID)
		case held != nil:
			// It may belong to an instance that died: watch it until it
			// expires, or is renewed, which tells a live holder.
			if seen == 0 {
				seen, waitUntil = heldRev, held.Expires.Add(time.Second)
				s.log.Warn("the bind's lease is held by another instance: waiting to see whether it is alive",
					slog.String("holder", held.Owner), slog.Time("expires", held.Expires))
			}
			if time.Now().After(waitUntil) {
				return nil, fmt.Errorf("%w: the bind is held by %s (pid %d): another trackerd is running it", tracker.ErrFenced, held.Owner, held.PID)
			}
			if err := backoff.Sleep(ctx, time.Second); err != nil {
				return nil, err
			}
			continue
		case conflict(err):
			continue // someone else moved at the same moment: look again
		case err != nil:
			return nil, fmt.Errorf("nats: lease %s: %w", lkey, err)
		}
		break
	}
	l := &kvLease{s: s, key: lkey, rev: rev, token: token, value: value, lost: make(chan struct{}), stop: make(chan struct{}), done: make(chan struct{})}
	l.renewed.Store(taken.UnixNano())
	go l.renew()
	return l, nil
}

// kvLease is a held lease, renewed until released.
type kvLease struct {
	s     *KVStore
	key   string
	token string
	value func() []byte
	lost  chan struct{}
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu  sync.Mutex
	rev uint64
	// renewed is when the last successful write of the lease was sent
	// (Unix nanoseconds): its expiry is at most leaseTTL later.
	renewed atomic.Int64
}

func (l *kvLease) Lost() <-chan struct{} { return l.lost }

// Held implements [tracker.Lease]: the lease was written within leaseTTL
// less heldMargin, and not taken over since.
func (l *kvLease) Held() bool {
	select {
	case <-l.lost:
		return false
	default:
	}
	return time.Since(time.Unix(0, l.renewed.Load())) < leaseTTL-heldMargin
}

// ours reports whether a stored lease value is this lease's.
func (l *kvLease) ours(v []byte) bool {
	var cur leaseValue
	return json.Unmarshal(v, &cur) == nil && cur.Token == l.token
}

// renew updates the lease every leaseTTL/3 with compare-and-set. A conflict
// means another instance took it over: Lost is closed. While NATS is away
// it keeps trying; once leaseTTL has passed since the last renewal another
// instance may have taken it over without this one knowing, which is why
// Held turns false before then.
func (l *kvLease) renew() {
	defer close(l.done)
	tick := time.NewTicker(leaseTTL / 3)
	defer tick.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-tick.C:
		}
		ctx, cancel := context.WithTimeout(context.Background(), leaseTTL/3)
		sent := time.Now()
		kv, err := l.s.bind(ctx)
		if err == nil {
			l.mu.Lock()
			var rev uint64
			rev, err = kv.Update(ctx, l.key, l.value(), l.rev)
			if conflict(err) {
				// A renewal whose answer was lost (NATS frozen, then back)
				// may have been applied: if the lease still names us, it
				// is ours at its new revision.
				if e, gerr := kv.Get(ctx, l.key); gerr == nil && l.ours(e.Value()) {
					rev, err = e.Revision(), nil
				}
			}
			if err == nil {
				l.rev = rev
				l.renewed.Store(sent.UnixNano())
			}
			l.mu.Unlock()
		}
		cancel()
		switch {
		case conflict(err):
			l.s.log.Error("lease taken over by another instance", slog.String("key", l.key))
			close(l.lost)
			return
		case err != nil:
			l.s.log.Debug("lease not renewed; retrying", slog.String("key", l.key), slog.Any("err", err))
		}
	}
}

// Release stops renewing and deletes the lease, so the next instance need
// not wait for it to expire.
func (l *kvLease) Release(ctx context.Context) error {
	var err error
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		select {
		case <-l.lost:
			return // not ours any more
		default:
		}
		ctx, cancel := context.WithTimeout(ctx, kvAttempt)
		defer cancel()
		var kv jetstream.KeyValue
		if kv, err = l.s.bind(ctx); err == nil {
			l.mu.Lock()
			err = kv.Delete(ctx, l.key, jetstream.LastRevision(l.rev))
			l.mu.Unlock()
		}
		if err != nil {
			err = fmt.Errorf("nats: release lease %s: %w", l.key, err)
		}
	})
	return err
}
