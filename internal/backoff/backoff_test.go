package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestNextGrowsWithJitterUpToMax(t *testing.T) {
	p := Policy{Min: 100 * time.Millisecond, Max: 1 * time.Second}
	for range 50 { // jitter: many draws
		b := p.New()
		want := []time.Duration{100, 200, 400, 800, 1000, 1000}
		for i, w := range want {
			w *= time.Millisecond
			if d := b.Next(); d < w/2 || d > w {
				t.Fatalf("wait %d = %v, want within [%v, %v]", i, d, w/2, w)
			}
		}
		b.Reset()
		if d := b.Next(); d < 50*time.Millisecond || d > 100*time.Millisecond {
			t.Fatalf("after Reset the wait is %v, want about Min", d)
		}
	}
}

func TestJitterVaries(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 20 {
		seen[Reconnect.New().Next()] = true
	}
	if len(seen) < 2 {
		t.Fatalf("20 first waits were all %v: no jitter", seen)
	}
}

func TestWaitEndsWithContext(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	b := Policy{Min: time.Hour, Max: time.Hour}.New()
	if err := b.Wait(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	if err := Sleep(t.Context(), time.Millisecond); err != nil {
		t.Fatalf("Sleep = %v", err)
	}
}
