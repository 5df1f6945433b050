package nats

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

func TestIntegrationKVLease(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			bucket := tempBucket(t, nc)
			a, err := NewKVStore(t.Context(), nc, bucket)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := NewKVStore(t.Context(), nc, bucket)
			kv, _ := a.bind(t.Context())

			first, err := a.Lease(t.Context(), "default.k1", "host-a:/data")
			if err != nil {
				t.Fatalf("first lease: %v", err)
			}
			// Another owner waits for a renewal, which tells it the holder is
			// alive.
			_, err = b.Lease(t.Context(), "default.k1", "host-b:/data")
			if !errors.Is(err, tracker.ErrFenced) || !strings.Contains(err.Error(), "host-a:/data") {
				t.Fatalf("second owner's lease: %v, want ErrFenced naming host-a", err)
			}
			// The same owner (a restart after a crash) takes it back at once,
			// and the old holder learns it lost the lease.
			again, err := b.Lease(t.Context(), "default.k1", "host-a:/data")
			if err != nil {
				t.Fatalf("same owner's lease: %v", err)
			}
			select {
			case <-first.Lost():
			case <-time.After(2 * leaseTTL / 3):
				t.Fatal("the old holder was not told it lost the lease")
			}
			if err := again.Release(t.Context()); err != nil {
				t.Fatalf("release: %v", err)
			}
			if l, err := b.Lease(t.Context(), "default.k1", "host-b:/data"); err != nil {
				t.Fatalf("lease after release: %v", err)
			} else {
				l.Release(t.Context())
			}

			// A renewal applied by the server whose answer was lost (the
			// revision moved, the value is still ours) keeps the lease.
			mine, err := a.Lease(t.Context(), "default.k4", "host-a:/data")
			if err != nil {
				t.Fatal(err)
			}
			ownValue, _ := json.Marshal(leaseValue{Owner: "host-a:/data", PID: os.Getpid(), Expires: time.Now().Add(leaseTTL), Token: mine.(*kvLease).token})
			if _, err := kv.Put(t.Context(), "default.k4.lease", ownValue); err != nil {
				t.Fatal(err)
			}
			select {
			case <-mine.Lost():
				t.Fatal("a renewal whose answer was lost counted as a takeover")
			case <-time.After(leaseTTL/3 + 2*time.Second):
			}
			mine.Release(t.Context())

			// A lease whose holder died is taken over once it expires.
			dead, _ := json.Marshal(leaseValue{Owner: "dead:/data", PID: 1, Expires: time.Now().Add(2 * time.Second)})
			if _, err := kv.Put(t.Context(), "default.k3.lease", dead); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if l, err := b.Lease(t.Context(), "default.k3", "host-b:/data"); err != nil {
				t.Fatalf("taking over a dead holder's lease: %v", err)
			} else {
				l.Release(t.Context())
			}
			if waited := time.Since(start); waited < 2*time.Second {
				t.Fatalf("took a live-looking lease over after %v, before it expired", waited)
			}

			// An expired lease is taken over at once.
			stale, _ := json.Marshal(leaseValue{Owner: "gone:/data", PID: 1, Expires: time.Now().Add(-time.Second)})
			if _, err := kv.Put(t.Context(), "default.k2.lease", stale); err != nil {
				t.Fatal(err)
			}
			l, err := b.Lease(t.Context(), "default.k2", "host-b:/data")
			if err != nil {
				t.Fatalf("taking over an expired lease: %v", err)
			}
			l.Release(t.Context())
		})
	}
}
