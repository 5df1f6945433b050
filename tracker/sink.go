package tracker

import "context"

// Sink delivers events out of the process, one ordered lane per bind.
type Sink interface {
	// OpenLane returns the lane for one bind's events. The sink calls acked
	// (from any goroutine, never concurrently with itself) with n each time
	// the events with LaneSeq 1..n are all durably stored, n increasing.
	OpenLane(ctx context.Context, bind string, acked func(n uint64)) (Lane, error)
}

// Lane publishes one bind's events in the order they are given.
type Lane interface {
	// Publish hands ev to the sink and returns without waiting for its
	// acknowledgement; it blocks while the lane's window of unacknowledged
	// events is full, or until ctx ends. Events arrive with LaneSeq 1, 2, 3...
	// A publish that fails is retried with the same id until it is stored;
	// Publish returns an error only when the lane cannot go on (ctx ended,
	// lane closed, or an event that can never be stored under the
	// configured policy).
	Publish(ctx context.Context, ev *Event) error
	// Close waits until every published event is acknowledged or ctx ends,
	// then releases the lane.
	Close(ctx context.Context) error
}

// ReadySink is implemented by sinks that can tell whether they can publish
// now (the NATS sink: connected, and its stream checked). While one cannot,
// a streaming bind's state is waiting_for_nats. Stats asks it: it must be
// cheap.
type ReadySink interface {
	Ready() bool
}
