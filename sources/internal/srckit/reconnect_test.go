package srckit

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"testing/synctest"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

// step is what one scripted session does.
type step struct {
	up         string        // position to report as streaming from; "" reports nothing
	lasts      time.Duration // how long the session runs before it ends
	progressed bool
	err        error
}

// script returns a session that plays steps one per call, and a log of the
// times each call started.
func script(steps ...step) (Session, *[]time.Time) {
	var starts []time.Time
	i := 0
	return func(ctx context.Context, up func(string)) (bool, error) {
		starts = append(starts, time.Now())
		if i >= len(steps) {
			<-ctx.Done()
			return false, ctx.Err()
		}
		s := steps[i]
		i++
		if s.up != "" {
			up(s.up)
		}
		select {
		case <-time.After(s.lasts):
		case <-ctx.Done():
			return false, ctx.Err()
		}
		return s.progressed, s.err
	}, &starts
}

func recordReports(out *[]string) func(tracker.SourceStatus) {
	return func(st tracker.SourceStatus) {
		s := string(st.State)
		if st.Position != "" {
			s += " " + st.Position
		}
		if st.Err != nil {
			s += " (" + st.Err.Error() + ")"
		}
		*out = append(*out, s)
	}
}

func TestLoopReportsTheStates(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		broken := errors.New("connection reset")
		session, _ := script(
			step{err: errors.New("connection refused")},                         // the database is down
			step{up: "0/10", lasts: time.Second, progressed: true, err: broken}, // streams, then breaks
			step{up: "0/20", lasts: time.Hour},
		)
		var got []string
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- Loop(ctx, session, IsPermanent, recordReports(&got)) }()
		time.Sleep(time.Minute)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Loop = %v, want the context's error", err)
		}
		want := []string{"connecting", "reconnecting (connection refused)", "streaming 0/10", "reconnecting (connection reset)", "streaming 0/20"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("reports\n got %q\nwant %q", got, want)
		}
	})
}

func TestLoopBacksOffAndResetsOnProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fail := step{err: errors.New("refused")}
		session, starts := script(fail, fail, fail, fail,
			step{progressed: true, err: errors.New("killed")}, // progress: the next wait is short again
			fail,
			step{lasts: StableAfter, err: errors.New("idle connection dropped")}, // long enough to count as progress
			fail)
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- Loop(ctx, session, IsPermanent, nil) }()
		time.Sleep(10 * time.Minute)
		cancel()
		<-done
		if len(*starts) != 9 {
			t.Fatalf("%d sessions, want 9", len(*starts))
		}
		// The wait before session i+1 is starts[i+1]-starts[i] minus what
		// session i lasted; each within [d/2, d] of its step of the range.
		lasted := []time.Duration{0, 0, 0, 0, 0, 0, StableAfter, 0}
		want := []time.Duration{100, 200, 400, 800, 100, 200, 100, 200}
		for i, w := range want {
			w *= time.Millisecond
			got := (*starts)[i+1].Sub((*starts)[i]) - lasted[i]
			if got < w/2 || got > w {
				t.Errorf("wait after session %d = %v, want within [%v, %v]", i+1, got, w/2, w)
			}
		}
	})
}

func TestLoopStopsOnPermanentErrors(t *testing.T) {
	for _, err := range []error{
		Permanent(errors.New("malformed message")),
		HandlerError(errors.New("receiver refused")),
		fmt.Errorf("at 0/10: %w", tracker.ErrResnapshotRequired),
		tracker.ConfigError(errors.New("wal_level is replica")),
		fmt.Errorf("slot in use: %w", tracker.ErrFenced),
	} {
		t.Run(err.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				session, starts := script(step{err: errors.New("refused")}, step{err: err})
				var got []string
				if e := Loop(t.Context(), session, IsPermanent, recordReports(&got)); e != err {
					t.Fatalf("Loop = %v, want %v", e, err)
				}
				if len(*starts) != 2 || len(got) != 2 {
					t.Fatalf("%d sessions, reports %q: want 2 sessions and one reconnect", len(*starts), got)
				}
			})
		})
	}
}

func TestHandlerErrorKeepsTheMessage(t *testing.T) {
	inner := errors.New("receiver refused")
	err := HandlerError(inner)
	if !errors.Is(err, inner) || err.Error() != "handle record: receiver refused" || !IsPermanent(err) {
		t.Fatalf("HandlerError = %v", err)
	}
	if IsPermanent(errors.New("connection reset")) || Permanent(nil) != nil {
		t.Fatal("a plain error is permanent, or Permanent(nil) is not nil")
	}
}
