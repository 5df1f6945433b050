package tracker_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
)

// chanSource hands over the records sent on recs, as they come.
type chanSource struct {
	recs chan tracker.Record
}

func (s *chanSource) Identity() string { return "chan" }
func (s *chanSource) Confirm(string)   {}
func (s *chanSource) Close() error     { return nil }
func (s *chanSource) Run(ctx context.Context, _ string, h tracker.Handler) error {
	for {
		select {
		case r := <-s.recs:
			if err := h.Handle(ctx, r); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// tx sends one transaction of one insert, committed at at, ending at pos.
func (s *chanSource) tx(key, pos string, at time.Time) {
	s.recs <- tracker.Record{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: key, TxID: key, CommitTime: at}}
	s.recs <- insert(key, "orders", "1")
	s.recs <- tracker.Record{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: key, CommitTime: at}, Pos: pos}
}

// Lag.Behind is the tracker's, the same for every source: the time since
// the commit of the oldest transaction handed over whose position was not
// yet confirmed to the source (MySQL's source once reported the newest).
func TestLagBehindIsTheOldestUnconfirmedCommit(t *testing.T) {
	cfg := testConfig(t)
	src := &chanSource{recs: make(chan tracker.Record)}
	sink := &trackertest.Sink{Manual: true}
	store := trackertest.NewMemStore()
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, func(context.Context, binds.Bind, tracker.SourceOptions) (tracker.Source, error) {
		return src, nil
	}), tracker.WithSink(sink), tracker.WithCheckpointStore(store))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	key := tracker.CheckpointKey("default", src.Identity())
	behind := func() time.Duration { return tr.Stats()[0].Lag.Behind }
	near := func(d, want time.Duration) bool { return d >= want && d < want+time.Minute }

	now := time.Now()
	src.tx("t1", "0/10", now.Add(-2*time.Hour))
	src.tx("t2", "0/20", now.Add(-time.Hour))
	trackertest.Eventually(t, 5*time.Second, "two transactions", func() bool { return tr.Stats()[0].Transactions == 2 })
	if b := behind(); !near(b, 2*time.Hour) {
		t.Fatalf("Behind = %v with two transactions unconfirmed, want the oldest's 2h", b)
	}
	sink.Ack("default")
	trackertest.Eventually(t, 5*time.Second, "the checkpoint", func() bool { return store.Position(key) == "0/20" })
	trackertest.Eventually(t, 5*time.Second, "Behind 0 once everything is confirmed", func() bool { return behind() == 0 })

	src.tx("t3", "0/30", now.Add(-30*time.Minute))
	trackertest.Eventually(t, 5*time.Second, "the third transaction", func() bool { return tr.Stats()[0].Transactions == 3 })
	sink.Ack("default")
	src.tx("t4", "0/40", now.Add(-10*time.Minute)) // not acknowledged
	trackertest.Eventually(t, 5*time.Second, "the third transaction's checkpoint", func() bool { return store.Position(key) == "0/30" })
	trackertest.Eventually(t, 5*time.Second, "Behind the fourth's 10m once the third is confirmed", func() bool { return near(behind(), 10*time.Minute) })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// ECHO logs each change once, in the tracker, with its row images as JSON
// objects.
func TestEchoLogsChangesOnceAsJSON(t *testing.T) {
	cfg := testConfig(t)
	cfg.Echo = true
	src := &trackertest.ScriptedSource{Records: []tracker.Record{begin("t1"), insert("t1", "orders", "7"), commit("t1", "0/10")}}
	var logs trackertest.Buffer
	tr, err := tracker.New(cfg, tracker.WithSource(binds.Postgres, src.Open()), tracker.WithCheckpointStore(trackertest.NewMemStore()),
		tracker.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))))
	if err != nil {
		t.Fatal(err)
	}
	if err := runTracker(t, tr, src, nil); err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q: %v", l, err)
		}
		if m["msg"] == "change" {
			lines = append(lines, m)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("%d change lines, want 1:\n%s", len(lines), logs.String())
	}
	m := lines[0]
	after, ok := m["after"].(map[string]any)
	key, _ := m["key"].(map[string]any)
	if !ok || after["id"] != 7.0 || after["name"] != "n7" || key["id"] != 7.0 || m["bind"] != "default" || m["txid"] != "xt1" || m["seq"] != 0.0 {
		t.Fatalf("change line %v: want the row images as objects, and the tracker's bind, txid and seq", m)
	}
	if _, ok := m["before"]; ok || bytes.Contains([]byte(logs.String()), []byte(`"data"`)) {
		t.Fatalf("change line %v: an insert has no before image, and no data string", m)
	}
}
