package tracker

import (
	"math"
	"sync"
	"time"
)

// RateWindow is the span of BindStats.EventsPerSecond.
const RateWindow = time.Minute

// meterSize is how many samples a meter keeps: with one a second, a little
// more than RateWindow.
const meterSize = 64

// meter turns a count that only grows (events published) into a rate over
// the last RateWindow, from samples of it taken at least a second apart: a
// ring of per-second counts. Sampling costs the hot path nothing: the count
// is an atomic the assembler keeps anyway, and the samples are taken by the
// checkpointer's tick and by Stats.
type meter struct {
	mu      sync.Mutex
	samples [meterSize]meterSample
	n, next int // samples held; where the next goes
	last    uint64
	grew    time.Time // when the count was last seen to grow
}

type meterSample struct {
	at    time.Time
	count uint64
}

// sample records count at now, keeping at most one sample a second.
func (m *meter) sample(now time.Time, count uint64) {
	m.mu.Lock()
	m.sampleLocked(now, count)
	m.mu.Unlock()
}

func (m *meter) sampleLocked(now time.Time, count uint64) {
	if count != m.last {
		m.last, m.grew = count, now
	}
	if m.n > 0 && now.Sub(m.at(m.n-1).at) < time.Second {
		return
	}
	m.samples[m.next] = meterSample{at: now, count: count}
	m.next = (m.next + 1) % meterSize
	m.n = min(m.n+1, meterSize)
}

// at returns the i-th sample held, oldest first.
func (m *meter) at(i int) meterSample {
	return m.samples[(m.next-m.n+i+meterSize)%meterSize]
}

// rate samples count at now and returns the rate over the last RateWindow,
// and when the count was last seen to grow (zero: never). The rate is taken
// from the sample whose age is nearest to RateWindow (the oldest one while
// the meter is younger than that), 0 when no sample is a second old.
func (m *meter) rate(now time.Time, count uint64) (float64, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sampleLocked(now, count)
	var (
		base   meterSample
		bestD  time.Duration
		hasAny bool
	)
	for i := 0; i < m.n; i++ {
		s := m.at(i)
		age := now.Sub(s.at)
		if age < time.Second {
			continue
		}
		d := age - RateWindow
		if d < 0 {
			d = -d
		}
		if !hasAny || d < bestD {
			base, bestD, hasAny = s, d, true
		}
	}
	if !hasAny || count < base.count {
		return 0, m.grew
	}
	return float64(count-base.count) / now.Sub(base.at).Seconds(), m.grew
}

// LatencyBuckets are the upper bounds, in seconds, of the buckets of
// BindStats.CommitToAck: from a millisecond to ten minutes, for a bind
// that keeps up as for one that catches up.
var LatencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

// Histogram counts observations, in seconds, into buckets.
type Histogram struct {
	// Bounds are the buckets' upper bounds, ascending (LatencyBuckets).
	Bounds []float64
	// Counts has one count per bound, of the observations at most that
	// bound and above the one before, and a last one for those above every
	// bound. It is not cumulative.
	Counts []uint64
	// Count is the number of observations, Sum their sum.
	Count uint64
	Sum   float64
}

func newHistogram(bounds []float64) Histogram {
	return Histogram{Bounds: bounds, Counts: make([]uint64, len(bounds)+1)}
}

func (h *Histogram) observe(v float64) {
	i := 0
	for i < len(h.Bounds) && v > h.Bounds[i] {
		i++
	}
	h.Counts[i]++
	h.Count++
	h.Sum += v
}

func (h Histogram) clone() Histogram {
	h.Counts = append([]uint64(nil), h.Counts...)
	return h
}

// Quantile estimates the q-quantile (0 < q < 1) by interpolating within its
// bucket, as Prometheus's histogram_quantile does; NaN with no
// observations. Above the last bound it returns the last bound.
func (h Histogram) Quantile(q float64) float64 {
	if h.Count == 0 || len(h.Counts) != len(h.Bounds)+1 {
		return math.NaN()
	}
	rank := q * float64(h.Count)
	var cum float64
	for i, c := range h.Counts {
		if cum+float64(c) >= rank && c > 0 {
			if i == len(h.Bounds) {
				return h.Bounds[len(h.Bounds)-1]
			}
			lo := 0.0
			if i > 0 {
				lo = h.Bounds[i-1]
			}
			return lo + (h.Bounds[i]-lo)*(rank-cum)/float64(c)
		}
		cum += float64(c)
	}
	return h.Bounds[len(h.Bounds)-1]
}

// maxLatencyPending bounds the transactions whose acknowledgement
// ackLatency waits for; the lane's window bounds them anyway (each holds at
// least one unacknowledged event), this only caps the memory of a window
// set very large. Transactions beyond it are not observed.
const maxLatencyPending = 1 << 16

// ackLatency measures, per transaction, the time from its commit on the
// database to the acknowledgement of its last after_commit event: the
// assembler tells it the LaneSeq of that event at the commit, the lane's
// acknowledgement watermark tells when it is stored.
type ackLatency struct {
	mu      sync.Mutex
	pending []pendingCommit // LaneSeq ascending; pending[head:] are waiting
	head    int
	hist    Histogram
}

type pendingCommit struct {
	seq    uint64
	commit time.Time
}

func newAckLatency() *ackLatency { return &ackLatency{hist: newHistogram(LatencyBuckets)} }

// published records that the transaction committed at commit ends with the
// event seq.
func (a *ackLatency) published(seq uint64, commit time.Time) {
	if commit.IsZero() {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.pending)-a.head >= maxLatencyPending {
		return
	}
	if a.head > 0 && a.head == len(a.pending) {
		a.pending, a.head = a.pending[:0], 0
	}
	a.pending = append(a.pending, pendingCommit{seq: seq, commit: commit})
}

// acked observes every transaction whose last event is at most n, acknowledged at now.
// A commit time ahead of this host's clock counts as no latency.
func (a *ackLatency) acked(n uint64, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for a.head < len(a.pending) && a.pending[a.head].seq <= n {
		a.hist.observe(max(now.Sub(a.pending[a.head].commit).Seconds(), 0))
		a.head++
	}
	if a.head > 1024 && a.head*2 > len(a.pending) {
		// Shift the waiting ones down so the slice does not grow forever.
		k := copy(a.pending, a.pending[a.head:])
		a.pending, a.head = a.pending[:k], 0
	}
}

func (a *ackLatency) histogram() Histogram {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hist.clone()
}
