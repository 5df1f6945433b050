package tracker_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// A bind's state is what its source reports: a source that lost its
// database is reconnecting and the tracker is not ready, with the error,
// until it streams again, which the log says (it stayed "streaming").
func TestBindStateFollowsTheSource(t *testing.T) {
	cfg := testConfig(t)
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t1"), insert("t1", "orders", "1"), commit("t1", "0/10")}}
	var report func(tracker.SourceStatus)
	opened := make(chan struct{})
	open := func(_ context.Context, _ binds.Bind, o tracker.SourceOptions) (tracker.Source, error) {
		report = o.Report
		o.Report(tracker.SourceStatus{State: tracker.SourceCreatingSlot, Detail: "PostgreSQL waits for transactions open since 12:00:03 (pid 42)"})
		close(opened)
		return src, nil
	}
	var logs trackertest.Buffer
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, open), tracker.WithCheckpointStore(trackertest.NewMemStore()),
		tracker.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	<-opened
	if st := tr.Stats(); len(st) != 1 || st[0].State != tracker.StateCreatingSlot || !strings.Contains(st[0].StateDetail, "pid 42") {
		t.Fatalf("while the slot is created: %+v", st)
	}
	<-src.Done()
	report(tracker.SourceStatus{State: tracker.SourceStreaming, Position: "0/10"})
	trackertest.Eventually(t, 5*time.Second, "ready", tr.Ready)

	report(tracker.SourceStatus{State: tracker.SourceReconnecting, Err: errors.New("connection refused")})
	st := tr.Stats()[0]
	if st.State != tracker.StateReconnecting || tr.Ready() || st.LastError != "connection refused" || st.LastErrorAt.IsZero() || st.Reconnects != 1 {
		t.Fatalf("while reconnecting: ready %v, %+v", tr.Ready(), st)
	}
	report(tracker.SourceStatus{State: tracker.SourceReconnecting, Err: errors.New("connection refused")}) // again: not logged again
	report(tracker.SourceStatus{State: tracker.SourceStreaming, Position: "0/10"})
	if st := tr.Stats()[0]; st.State != tracker.StateStreaming || !tr.Ready() || st.Reconnects != 1 {
		t.Fatalf("after the reconnect: ready %v, %+v", tr.Ready(), st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := tr.Stats()[0]; st.State != tracker.StateStopped {
		t.Fatalf("after Run: %+v", st)
	}
	out := logs.String()
	for _, want := range []string{"creating the replication slot", "connection to the database lost: reconnecting", "connection refused", "reconnected, streaming from", "position=0/10"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if n := strings.Count(out, "connection to the database lost"); n != 1 {
		t.Errorf("the lost connection logged %d times, want once:\n%s", n, out)
	}
}
