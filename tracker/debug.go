package tracker

import (
	"sync"
	"time"
)

// debugRingSize bounds how many recent events DebugEvents keeps.
const debugRingSize = 1000

// DebugEvent is one recently published event with its timings, kept when
// RECORD_QUERIES is on (Flask-SQLAlchemy's get_debug_queries).
type DebugEvent struct {
	Time   time.Time `json:"time"`
	Bind   string    `json:"bind"`
	ID     string    `json:"id"`
	Phase  Phase     `json:"phase"`
	Op     Op        `json:"op"`
	Schema string    `json:"schema"`
	Table  string    `json:"table"`
	// Decode is how long the source took to decode the change (0 where the
	// source does not say).
	Decode time.Duration `json:"decode_ns"`
	// Publish is from the change reaching the tracker to the sink accepting
	// the event (encoding, receivers, back-pressure while the sink's window
	// is full).
	Publish time.Duration `json:"publish_ns"`
	// Ack is from handing the event to the sink to its acknowledgement; 0
	// while not yet acknowledged.
	Ack time.Duration `json:"ack_ns"`

	laneSeq uint64
	sent    time.Time
}

// debugRing is a bounded ring of recent events.
type debugRing struct {
	mu   sync.Mutex
	buf  []DebugEvent
	next int  // where the next event goes
	full bool // buf has wrapped
}

func newDebugRing(n int) *debugRing { return &debugRing{buf: make([]DebugEvent, n)} }

// add records ev, handed to the sink at sent, and returns its slot.
func (r *debugRing) add(bind string, ev *Event, decode time.Duration, received, sent time.Time) int {
	d := DebugEvent{Time: received, Bind: bind, ID: ev.ID, Phase: ev.Phase, Decode: decode,
		Publish: sent.Sub(received), laneSeq: ev.LaneSeq, sent: sent}
	if c := ev.Change; c != nil {
		d.Op, d.Schema, d.Table = c.Op, c.Schema, c.Table
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	slot := r.next
	r.buf[slot] = d
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	return slot
}

// published sets the publish time of the event in slot, unless the slot
// was reused meanwhile.
func (r *debugRing) published(slot int, laneSeq uint64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := &r.buf[slot]; e.laneSeq == laneSeq {
		e.Publish = at.Sub(e.Time)
	}
}

// acked stamps the ack time on bind's events up to lane sequence n.
func (r *debugRing) acked(bind string, n uint64, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	// Walk back from the newest; stop at the first already acknowledged.
	for i, k := r.next-1, 0; k < len(r.buf); i, k = i-1, k+1 {
		if i < 0 {
			if !r.full {
				break
			}
			i = len(r.buf) - 1
		}
		e := &r.buf[i]
		if e.Bind != bind || e.laneSeq > n {
			continue
		}
		if e.Ack != 0 {
			break
		}
		e.Ack = max(at.Sub(e.sent), 1)
	}
}

// events returns the ring's events, oldest first.
func (r *debugRing) events() []DebugEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []DebugEvent
	if r.full {
		out = append(out, r.buf[r.next:]...)
	}
	return append(out, r.buf[:r.next]...)
}

// DebugEvents returns the most recent published events with their decode,
// publish and ack timings, oldest first; nil unless RECORD_QUERIES is on (it
// is by default when DEBUG or TESTING is set).
func (t *Tracker) DebugEvents() []DebugEvent {
	if t.debug == nil {
		return nil
	}
	return t.debug.events()
}
