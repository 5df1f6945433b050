package tracker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// transcript collects, in order, what an assembler does: the events it
// publishes, the receivers it calls and the positions it marks.
type transcript struct{ lines []string }

func (s *transcript) add(format string, args ...any) {
	s.lines = append(s.lines, fmt.Sprintf(format, args...))
}

// fakeLane records the events published, and fails the one with failID.
type fakeLane struct {
	s      *transcript
	failID string
}

func (l *fakeLane) Publish(_ context.Context, ev *Event) error {
	if ev.ID == l.failID {
		return errors.New("too large")
	}
	line := fmt.Sprintf("#%d %s", ev.LaneSeq, strings.TrimPrefix(ev.ID, "b/o/"))
	switch {
	case ev.Retract != nil:
		line += fmt.Sprintf(" retract %v", ev.Retract.Ranges)
	case ev.Phase == PhaseAfterCommit:
		line += fmt.Sprintf(" total=%d", ev.TxTotal)
	}
	if c := ev.Change; c != nil && ev.Retract == nil {
		var d struct {
			Source struct {
				Bind       string    `json:"bind"`
				Seq        int       `json:"seq"`
				TxID       string    `json:"txid"`
				CommitTime time.Time `json:"commit_time"`
			} `json:"source"`
		}
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			return fmt.Errorf("event data %s: %w", ev.Data, err)
		}
		data := d.Source
		if c.Bind != "b" || c.Origin != "o" || data.Bind != "b" || data.Seq != c.Seq || data.TxID != c.TxID {
			return fmt.Errorf("event %s: change %+v, data %s: want the bind, the origin, and the change's seq and txid in its data", ev.ID, c, ev.Data)
		}
		line += fmt.Sprintf(" seq=%d txid=%s at=%s", c.Seq, c.TxID, data.CommitTime.Format("15:04"))
	}
	l.s.add("%s", line)
	return nil
}

func (l *fakeLane) Close(context.Context) error { return nil }

// fakePositions records the positions marked.
type fakePositions struct{ s *transcript }

func (p fakePositions) commit(seq uint64, pos string, _ time.Time) {
	if pos != "" {
		p.s.add("commit %s after #%d", pos, seq)
	}
}

func (p fakePositions) keepalive(_ context.Context, seq uint64, pos string) error {
	p.s.add("keepalive %s after #%d", pos, seq)
	return nil
}

var (
	t1200 = time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	t1201 = t1200.Add(time.Minute)
)

func rBegin(key string) Record {
	return Record{Kind: RecordBegin, Tx: TxInfo{TxKey: key, TxID: "x" + key, CommitTime: t1200}}
}

func rStreamed(key string) Record {
	r := rBegin(key)
	r.Tx.Streamed = true
	return r
}

func rChange(key string, index int64) Record {
	id := json.RawMessage(fmt.Sprint(index))
	return Record{Kind: RecordChange, Change: &Change{Source: "postgresql", Op: OpInsert, Schema: "public", Table: "orders", TxKey: key, Index: index,
		Key: Row{Names: []string{"id"}, Values: []json.RawMessage{id}}, After: Row{Names: []string{"id"}, Values: []json.RawMessage{id}}}}
}

func rSub(key, sub string, index int64) Record {
	r := rChange(key, index)
	r.Change.SubTx = sub
	return r
}

func rCommit(key, pos string) Record {
	return Record{Kind: RecordCommit, Tx: TxInfo{TxKey: key}, Pos: pos}
}

func rRollback(key, sub string) Record {
	return Record{Kind: RecordRollback, Tx: TxInfo{TxKey: key, SubTx: sub}}
}

func rKeepalive(pos string) Record { return Record{Kind: RecordKeepalive, Pos: pos} }

// The assembler driven record by record, on the test's goroutine, with a
// fake lane: what it publishes, calls and marks, in order.
func TestAssembler(t *testing.T) {
	committedLater := rCommit("t1", "0/10")
	committedLater.Tx.CommitTime = t1201
	for _, tc := range []struct {
		name    string
		records []Record
		// afterOnly publishes after_commit events only; noLane runs
		// without a sink; receivers connects one of each kind to both
		// signals.
		afterOnly, noLane, receivers bool
		spill                        int64
		failID                       string
		want                         []string
		err                          string
	}{
		{name: "ok - a transaction: before_commit events as changes come, after_commit ones at its commit, then its position",
			records: []Record{rBegin("t1"), rChange("t1", 0), rChange("t1", 1), rCommit("t1", "0/10"), rBegin("t2"), rChange("t2", 0), rCommit("t2", "0/20")},
			want: []string{
				"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00", "#2 t1/1/before_commit seq=1 txid=xt1 at=12:00",
				"#3 t1/0/after_commit total=2 seq=0 txid=xt1 at=12:00", "#4 t1/1/after_commit total=2 seq=1 txid=xt1 at=12:00",
				"commit 0/10 after #4",
				"#5 t2/0/before_commit seq=0 txid=xt2 at=12:00", "#6 t2/0/after_commit total=1 seq=0 txid=xt2 at=12:00",
				"commit 0/20 after #6",
			}},
		{name: "ok - the commit's time, where the source gives it, is the after_commit events'",
			records: []Record{rBegin("t1"), rChange("t1", 0), committedLater},
			want:    []string{"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00", "#2 t1/0/after_commit total=1 seq=0 txid=xt1 at=12:01", "commit 0/10 after #2"}},
		{name: "ok - every change spilled to disk",
			spill:   1,
			records: []Record{rBegin("t1"), rChange("t1", 0), rChange("t1", 1), committedLater},
			want: []string{"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00", "#2 t1/1/before_commit seq=1 txid=xt1 at=12:00",
				"#3 t1/0/after_commit total=2 seq=0 txid=xt1 at=12:01", "#4 t1/1/after_commit total=2 seq=1 txid=xt1 at=12:01", "commit 0/10 after #4"}},
		{name: "ok - after_commit only",
			afterOnly: true,
			records:   []Record{rBegin("t1"), rChange("t1", 0), rCommit("t1", "0/10")},
			want:      []string{"#1 t1/0/after_commit total=1 seq=0 txid=xt1 at=12:00", "commit 0/10 after #1"}},
		{name: "ok - without a sink nothing is published and positions follow no event",
			noLane:  true,
			records: []Record{rBegin("t1"), rChange("t1", 0), rCommit("t1", "0/10"), rKeepalive("0/11")},
			want:    []string{"commit 0/10 after #0", "keepalive 0/11 after #0"}},
		{name: "ok - a transaction sent again from its Begin after a reconnect: the same ids",
			records: []Record{rBegin("t1"), rChange("t1", 0), rBegin("t1"), rChange("t1", 0), rChange("t1", 1), rCommit("t1", "0/10")},
			want: []string{
				"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00",
				"#2 t1/0/before_commit seq=0 txid=xt1 at=12:00", "#3 t1/1/before_commit seq=1 txid=xt1 at=12:00",
				"#4 t1/0/after_commit total=2 seq=0 txid=xt1 at=12:00", "#5 t1/1/after_commit total=2 seq=1 txid=xt1 at=12:00",
				"commit 0/10 after #5",
			}},
		{name: "ok - changes without a TxKey, or with indexes that do not grow, get the transaction's and the next index",
			records: []Record{rBegin("t1"), rChange("", 0), rChange("", 0), rChange("t1", 7), rChange("t1", 3), rCommit("", "0/10")},
			want: []string{
				"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00", "#2 t1/1/before_commit seq=1 txid=xt1 at=12:00",
				"#3 t1/7/before_commit seq=2 txid=xt1 at=12:00", "#4 t1/8/before_commit seq=3 txid=xt1 at=12:00",
				"#5 t1/0/after_commit total=4 seq=0 txid=xt1 at=12:00", "#6 t1/1/after_commit total=4 seq=1 txid=xt1 at=12:00",
				"#7 t1/7/after_commit total=4 seq=2 txid=xt1 at=12:00", "#8 t1/8/after_commit total=4 seq=3 txid=xt1 at=12:00",
				"commit 0/10 after #8",
			}},
		{name: "ok - streamed transactions: interleaved, rolled back to a savepoint, rolled back whole, each retraction an id of its own",
			records: []Record{
				rStreamed("s1"), rChange("s1", 0), rSub("s1", "701", 1), rSub("s1", "701", 2),
				rBegin("t2"), rChange("t2", 0), rCommit("t2", "0/20"),
				rChange("s1", 3), rRollback("s1", "701"), rCommit("s1", "0/30"),
				rStreamed("s3"), rChange("s3", 0), rSub("s3", "702", 1), rRollback("s3", "702"), rRollback("s3", ""),
				rRollback("gone", ""),
			},
			want: []string{
				"#1 s1/0/before_commit seq=0 txid=xs1 at=12:00", "#2 s1/1/before_commit seq=1 txid=xs1 at=12:00", "#3 s1/2/before_commit seq=2 txid=xs1 at=12:00",
				"#4 t2/0/before_commit seq=0 txid=xt2 at=12:00", "#5 t2/0/after_commit total=1 seq=0 txid=xt2 at=12:00", "commit 0/20 after #5",
				"#6 s1/3/before_commit seq=3 txid=xs1 at=12:00",
				"#7 s1/0/rollback retract [{1 2}]",
				"#8 s1/0/after_commit total=2 seq=0 txid=xs1 at=12:00", "#9 s1/3/after_commit total=2 seq=3 txid=xs1 at=12:00", "commit 0/30 after #9",
				"#10 s3/0/before_commit seq=0 txid=xs3 at=12:00", "#11 s3/1/before_commit seq=1 txid=xs3 at=12:00",
				"#12 s3/0/rollback retract [{1 1}]", "#13 s3/1/rollback retract [{0 1}]",
			}},
		{name: "ok - rollbacks are not published with after_commit only",
			afterOnly: true,
			records:   []Record{rStreamed("s1"), rChange("s1", 0), rRollback("s1", "")},
			want:      nil},
		{name: "ok - a keyless streamed commit (none of its changes handed over) leaves the transaction in progress alone",
			records: []Record{rBegin("t1"), rChange("t1", 0), {Kind: RecordCommit, Tx: TxInfo{Streamed: true}, Pos: "0/8"}, rChange("t1", 1), rCommit("t1", "0/10")},
			want: []string{
				"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00", "commit 0/8 after #1", "#2 t1/1/before_commit seq=1 txid=xt1 at=12:00",
				"#3 t1/0/after_commit total=2 seq=0 txid=xt1 at=12:00", "#4 t1/1/after_commit total=2 seq=1 txid=xt1 at=12:00", "commit 0/10 after #4",
			}},
		{name: "ok - an empty transaction: only its position",
			records: []Record{rBegin("t1"), rCommit("t1", "0/10"), rCommit("none", "0/11")},
			want:    []string{"commit 0/10 after #0", "commit 0/11 after #0"}},
		{name: "ok - keepalives only while no transaction is open, save streamed ones",
			records: []Record{rKeepalive("0/5"), rBegin("t1"), rKeepalive("0/6"), rCommit("t1", "0/10"), rStreamed("s1"), rChange("s1", 0), rKeepalive("0/12"), rKeepalive("")},
			want:    []string{"keepalive 0/5 after #0", "commit 0/10 after #0", "#1 s1/0/before_commit seq=0 txid=xs1 at=12:00", "keepalive 0/12 after #1"}},
		{name: "ok - receivers: before_commit per change as it comes, after_commit per change then per transaction",
			receivers: true,
			records:   []Record{rBegin("t1"), rChange("t1", 0), rChange("t1", 1), committedLater},
			want: []string{
				"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00", "before t1 seq=0", "#2 t1/1/before_commit seq=1 txid=xt1 at=12:00", "before t1 seq=1",
				"before tx t1 total=2",
				"#3 t1/0/after_commit total=2 seq=0 txid=xt1 at=12:01", "after t1 seq=0 at=12:01", "#4 t1/1/after_commit total=2 seq=1 txid=xt1 at=12:01", "after t1 seq=1 at=12:01",
				"after tx t1 total=2 [0 1]",
				"commit 0/10 after #4",
			}},
		{name: "error - a change of a transaction that is not open",
			records: []Record{rBegin("t1"), rChange("t2", 0)},
			err:     `source handed a change of transaction "t2", which is not open`},
		{name: "error - a change outside any transaction",
			records: []Record{rChange("", 0)},
			err:     `source handed a change of transaction "", which is not open`},
		{name: "error - a change record without a change",
			records: []Record{rBegin("t1"), {Kind: RecordChange}},
			err:     "source handed a change record without a change"},
		{name: "error - an unknown record kind",
			records: []Record{{Kind: 99}},
			err:     "source handed an unknown record kind 99"},
		{name: "error - the lane cannot publish an event: its id in the error",
			failID:  "b/o/t1/0/after_commit",
			records: []Record{rBegin("t1"), rChange("t1", 0), rCommit("t1", "0/10")},
			want:    []string{"#1 t1/0/before_commit seq=0 txid=xt1 at=12:00"},
			err:     "publish b/o/t1/0/after_commit: too large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &transcript{}
			a := &assembler{bind: "b", origin: "o", log: slog.New(slog.DiscardHandler), marks: fakePositions{s},
				before: &Signal{}, after: &Signal{}, publishBefore: !tc.afterOnly, publishAfter: true, publishRollback: !tc.afterOnly,
				spillDir: t.TempDir(), spillLimit: 1 << 20, lat: newAckLatency(), open: make(map[string]*openTx)}
			if tc.spill > 0 {
				a.spillLimit = tc.spill
			}
			if !tc.noLane {
				a.lane = &fakeLane{s: s, failID: tc.failID}
			}
			if tc.receivers {
				a.before.Connect(func(_ context.Context, c Change) error { s.add("before %s seq=%d", c.TxKey, c.Seq); return nil })
				a.before.ConnectTx(func(_ context.Context, tx Tx) error { s.add("before tx %s total=%d", tx.TxKey, tx.Total); return nil })
				a.after.Connect(func(_ context.Context, c Change) error {
					s.add("after %s seq=%d at=%s", c.TxKey, c.Seq, c.CommitTime.Format("15:04"))
					return nil
				})
				a.after.ConnectTx(func(_ context.Context, tx Tx) error {
					var seqs []int
					for c, err := range tx.Changes() {
						if err != nil {
							return err
						}
						seqs = append(seqs, c.Seq)
					}
					s.add("after tx %s total=%d %v", tx.TxKey, tx.Total, seqs)
					return nil
				})
			}
			var err error
			for _, r := range tc.records {
				if err = a.handle(t.Context(), r); err != nil {
					break
				}
			}
			if got, want := strings.Join(s.lines, "\n"), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("transcript:\n%s\nwant:\n%s", got, want)
			}
			switch {
			case tc.err == "" && err != nil:
				t.Errorf("handle: %v", err)
			case tc.err != "" && (err == nil || err.Error() != tc.err):
				t.Errorf("handle: %v, want %q", err, tc.err)
			}
		})
	}
}

// A failing receiver holds the record until it succeeds, and a panic is a
// failure; the wait between attempts ends with the context.
func TestAssemblerReceiverRetry(t *testing.T) {
	s := &transcript{}
	a := &assembler{bind: "b", origin: "o", log: slog.New(slog.DiscardHandler), marks: fakePositions{s},
		before: &Signal{}, after: &Signal{}, publishBefore: true, publishAfter: true,
		spillDir: t.TempDir(), spillLimit: 1 << 20, lat: newAckLatency(), open: make(map[string]*openTx)}
	calls := 0
	a.before.Connect(func(context.Context, Change) error {
		calls++
		switch calls {
		case 1:
			return errors.New("down")
		case 2:
			panic("oops")
		}
		return nil
	})
	if err := a.handle(t.Context(), rBegin("t1")); err != nil {
		t.Fatal(err)
	}
	if err := a.handle(t.Context(), rChange("t1", 0)); err != nil || calls != 3 || a.n.retries.Load() != 2 {
		t.Fatalf("handle = %v after %d calls, %d retries: want nil after 3 calls, 2 retries", err, calls, a.n.retries.Load())
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	calls = 0
	if err := a.handle(ctx, rChange("t1", 1)); !errors.Is(err, context.Canceled) || calls != 1 {
		t.Fatalf("handle with an ended context = %v after %d calls, want context.Canceled after 1", err, calls)
	}
}
