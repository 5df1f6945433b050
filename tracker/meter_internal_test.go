package tracker

import (
	"math"
	"testing"
	"time"
)

func TestMeterRateOverTheLastMinute(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var m meter
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	// every samples the meter five times a second in (from, to].
	every := func(from, to float64, count func() uint64) {
		for i := int(from*5) + 1; i <= int(to*5); i++ {
			m.sample(at(float64(i)/5), count())
		}
	}

	if r, grew := m.rate(t0, 0); r != 0 || !grew.IsZero() {
		t.Fatalf("new meter: %v, %v; want 0 and never", r, grew)
	}
	// 10 events a second for two minutes, sampled five times a second (as
	// the checkpointer's tick does): samples are kept a second apart.
	n := uint64(0)
	every(0, 120, func() uint64 { n += 2; return n })
	r, grew := m.rate(at(120), n)
	if math.Abs(r-10) > 0.2 {
		t.Fatalf("rate = %v, want 10/s", r)
	}
	if !grew.Equal(at(120)) {
		t.Fatalf("grew at %v, want the last sample's time", grew)
	}
	// Then nothing for 30 s: half a minute at 10/s, half at 0.
	every(120, 150, func() uint64 { return n })
	if r, grew := m.rate(at(150), n); math.Abs(r-5) > 0.3 || !grew.Equal(at(120)) {
		t.Fatalf("after 30 s idle: rate %v, last growth %v; want 5/s and at 120 s", r, grew)
	}
	// Two idle minutes: 0, and the last event is still at 120 s.
	every(150, 270, func() uint64 { return n })
	if r, grew := m.rate(at(270), n); r != 0 || !grew.Equal(at(120)) {
		t.Fatalf("idle: rate %v, last growth %v", r, grew)
	}
}

// A meter read only now and then (no checkpointer ticks) uses the sample
// whose age is nearest to a minute, and a young one its first.
func TestMeterSparseAndYoung(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	var m meter
	m.sample(t0, 0)
	if r, _ := m.rate(t0.Add(500*time.Millisecond), 100); r != 0 {
		t.Fatalf("rate over half a second = %v, want 0 (too short to tell)", r)
	}
	if r, _ := m.rate(t0.Add(10*time.Second), 100); r != 10 {
		t.Fatalf("young meter: %v, want 100 events over 10 s", r)
	}
	var s meter
	s.sample(t0, 0)
	s.sample(t0.Add(50*time.Second), 500)
	if r, _ := s.rate(t0.Add(110*time.Second), 1100); r != 10 {
		t.Fatalf("sparse: %v, want (1100-500)/60", r)
	}
}

func TestAckLatency(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	a := newAckLatency()
	a.published(3, t0)                        // a transaction of events 1..3
	a.published(4, time.Time{})               // unknown commit time: not observed
	a.published(9, t0.Add(time.Second))       // events 5..9
	a.published(10, t0.Add(20*time.Second))   // committed "after" its ack: clock skew
	a.acked(2, t0.Add(40*time.Millisecond))   // nothing whole yet
	a.acked(9, t0.Add(1200*time.Millisecond)) // 3 and 9
	a.acked(10, t0.Add(2*time.Second))
	h := a.histogram()
	if h.Count != 3 {
		t.Fatalf("count = %d, want 3 transactions", h.Count)
	}
	if math.Abs(h.Sum-1.4) > 1e-9 {
		t.Fatalf("sum = %v, want 1.2 + 0.2 + 0 (skew counts as no latency)", h.Sum)
	}
	want := map[float64]uint64{0.001: 1, 0.25: 1, 2.5: 1}
	for i, c := range h.Counts[:len(h.Bounds)] {
		if c != want[h.Bounds[i]] {
			t.Errorf("bucket le %v = %d, want %d", h.Bounds[i], c, want[h.Bounds[i]])
		}
	}
	// Memory stays bounded whatever is never acknowledged.
	for i := uint64(100); i < 100+2*maxLatencyPending; i++ {
		a.published(i, t0)
	}
	if n := len(a.pending) - a.head; n > maxLatencyPending {
		t.Fatalf("%d transactions held, want at most %d", n, maxLatencyPending)
	}
	a.acked(1<<62, t0)
	if a.head != len(a.pending) {
		t.Fatal("acknowledging everything left transactions waiting")
	}
}

// BenchmarkAckLatency is what the commit-to-ack histogram costs a
// transaction: its record at the commit and its observation at the ack.
func BenchmarkAckLatency(b *testing.B) {
	a := newAckLatency()
	t0 := time.Now()
	var seq uint64
	for b.Loop() {
		seq += 2
		a.published(seq, t0)
		a.acked(seq, t0.Add(time.Millisecond))
	}
}
