package srckit

import (
	"context"
	"errors"
	"time"

	"github.com/trackerd/trackerd/internal/backoff"
	"github.com/trackerd/trackerd/tracker"
)

// A Session is one replication connection of a source's Run. It connects,
// calls up once the server streams (with the position it streams from,
// in the source's position format), hands records over until the
// connection fails or ctx ends, and returns why it ended, and whether it
// made progress: handed over a transaction's end or a keepalive, so that a
// new connection resumes further on.
type Session func(ctx context.Context, up func(from string)) (progressed bool, err error)

// StableAfter is how long a session must last to count as progress even
// when it handed nothing over: its connection was good (an idle stream)
// whatever ended it, and the next one starts the back-off afresh.
const StableAfter = 30 * time.Second

// Loop runs a source's sessions, one after the other, until ctx ends (it
// returns ctx's error) or a session fails with an error permanent says
// reconnecting cannot fix (it returns that error). Between sessions it
// waits with [backoff.Reconnect] (jittered, 100 ms doubling to 10 s),
// starting again from the shortest wait after a session that made
// progress or lasted [StableAfter].
//
// It reports the source's state through report (nil reports nothing):
// [tracker.SourceConnecting] before the first session,
// [tracker.SourceStreaming] with the position when a session calls up,
// and [tracker.SourceReconnecting] with the error after each session that
// fails. The tracker logs these transitions; a source need not.
func Loop(ctx context.Context, session Session, permanent func(error) bool, report func(tracker.SourceStatus)) error {
	if report == nil {
		report = func(tracker.SourceStatus) {}
	}
	up := func(from string) {
		report(tracker.SourceStatus{State: tracker.SourceStreaming, Position: from})
	}
	b := backoff.Reconnect.New()
	report(tracker.SourceStatus{State: tracker.SourceConnecting})
	for {
		began := time.Now()
		progressed, err := session(ctx, up)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			err = errEnded
		}
		if permanent(err) {
			return err
		}
		if progressed || time.Since(began) >= StableAfter {
			b.Reset()
		}
		wait := b.Next()
		report(tracker.SourceStatus{State: tracker.SourceReconnecting, Err: err,
			Detail: "next attempt in " + wait.Round(time.Millisecond).String()})
		if err := backoff.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

// errEnded is a session's error when it returned none.
var errEnded = errors.New("the replication stream ended")
