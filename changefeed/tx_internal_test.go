package changefeed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// fakeMsg is a jetstream.Msg that records how it was acknowledged.
type fakeMsg struct {
	subject string
	data    []byte
	seq     uint64
	hdr     nats.Header

	mu  sync.Mutex
	log *[]string
}

func (m *fakeMsg) record(what string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.log = append(*m.log, fmt.Sprintf("%s %d", what, m.seq))
	return nil
}

func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.seq}, NumDelivered: 1}, nil
}
func (m *fakeMsg) Data() []byte                     { return m.data }
func (m *fakeMsg) Headers() nats.Header             { return m.hdr }
func (m *fakeMsg) Subject() string                  { return m.subject }
func (m *fakeMsg) Reply() string                    { return "" }
func (m *fakeMsg) Ack() error                       { return m.record("ack") }
func (m *fakeMsg) DoubleAck(context.Context) error  { return m.record("ack") }
func (m *fakeMsg) Nak() error                       { return m.record("nak") }
func (m *fakeMsg) NakWithDelay(time.Duration) error { return m.record("nak") }
func (m *fakeMsg) InProgress() error                { return m.record("wip") }
func (m *fakeMsg) Term() error                      { return m.record("term") }
func (m *fakeMsg) TermWithReason(string) error      { return m.record("term") }
func (m *fakeMsg) String() string                   { return fmt.Sprint(m.seq) }
func (m *fakeMsg) withLog(log *[]string) *fakeMsg   { m.log = log; return m }
func (m *fakeMsg) clone(seq uint64, log *[]string) *fakeMsg {
	return &fakeMsg{m.subject, m.data, seq, m.hdr, sync.Mutex{}, log}
}

// afterCommit returns the after_commit message of change seq of a
// transaction of total changes, at stream sequence streamSeq.
func afterCommit(bind, txKey, table string, seq, total int, streamSeq uint64, log *[]string) *fakeMsg {
	c := &tracker.Change{Bind: bind, Source: "postgresql", Op: tracker.OpInsert, Schema: "public", Table: table,
		TxID: "x" + txKey, TxKey: txKey, Seq: seq, Pos: "0/1"}
	ev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, ID: tracker.EventID(bind, "o", txKey, int64(seq), tracker.PhaseAfterCommit), TxTotal: total}
	return &fakeMsg{subject: "trackerd.after_commit." + bind, data: wire.EncodeEvent(nil, ev), seq: streamSeq, log: log}
}

type txRecorder struct {
	txs  []string
	fail int // fail this many calls first
}

func (r *txRecorder) handle(_ context.Context, tx Tx) error {
	if r.fail > 0 {
		r.fail--
		return errors.New("not now")
	}
	var seqs []string
	for _, m := range tx.Changes {
		seqs = append(seqs, fmt.Sprint(m.Change.Seq))
	}
	r.txs = append(r.txs, fmt.Sprintf("%s/%s part=%d partial=%v [%s]", tx.Bind, tx.TxKey, tx.Part, tx.Partial, strings.Join(seqs, " ")))
	return nil
}

func newTestAssembler(t *testing.T, h TxHandler, opts ...ConsumeOption) *assembler {
	t.Helper()
	o, err := buildConsumeOptions(kindConsumeTx, append([]ConsumeOption{RetryBackoff(time.Millisecond, time.Millisecond)}, opts...))
	if err != nil {
		t.Fatal(err)
	}
	f := &Feed{log: slog.New(slog.DiscardHandler)}
	return &assembler{f: f, o: &o, h: h, dd: newDedup(o.dedup), pending: make(map[txID]*pendingTx), done: newRecent(16)}
}

// addMsg decodes m and hands it to the assembler, as ConsumeTx does.
func (a *assembler) addMsg(ctx context.Context, m jetstream.Msg) error {
	dm, err := DecodeJetStreamMsg(m)
	if err != nil {
		return err
	}
	return a.add(ctx, dm, m)
}

func TestAssembler(t *testing.T) {
	var log []string
	var r txRecorder
	a := newTestAssembler(t, r.handle, MaxTxChanges(3), TxTimeout(time.Minute))
	ctx := t.Context()
	add := func(m *fakeMsg) {
		t.Helper()
		if err := a.addMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// Two binds interleaved; b's events out of order; a redelivered copy.
	a1 := afterCommit("a", "k1", "orders", 0, 2, 1, &log)
	add(a1)
	add(afterCommit("b", "k1", "orders", 1, 2, 2, &log))
	add(a1.clone(3, &log)) // redelivery: held, not a change
	add(afterCommit("b", "k1", "orders", 0, 2, 4, &log))
	add(afterCommit("a", "k1", "items", 1, 2, 5, &log))
	// Seven changes: parts of 3, 3 and 1.
	for i := range 7 {
		add(afterCommit("a", "k2", "users", i, 7, uint64(6+i), &log))
	}
	// A late copy of a transaction handed over: acknowledged, dropped.
	add(afterCommit("b", "k1", "orders", 0, 2, 13, &log))
	want := []string{
		"b/k1 part=0 partial=false [0 1]",
		"a/k1 part=0 partial=false [0 1]",
		"a/k2 part=0 partial=true [0 1 2]",
		"a/k2 part=1 partial=true [3 4 5]",
		"a/k2 part=2 partial=true [6]",
	}
	if !slices.Equal(r.txs, want) {
		t.Fatalf("transactions:\n%s\nwant:\n%s", strings.Join(r.txs, "\n"), strings.Join(want, "\n"))
	}
	slices.Sort(log)
	var acked []string
	for _, l := range log {
		if !strings.HasPrefix(l, "ack ") {
			t.Fatalf("%s: every message is acknowledged, nothing else", l)
		}
		acked = append(acked, l)
	}
	if len(acked) != 13 || len(a.pending) != 0 {
		t.Fatalf("acknowledged %d of 13 messages (%v), %d transactions pending", len(acked), acked, len(a.pending))
	}
}

// TestAssemblerTimeout: a transaction missing events is handed over, as
// partial, once TxTimeout passes with nothing new; its held messages are
// marked in progress meanwhile.
func TestAssemblerTimeout(t *testing.T) {
	var log []string
	var r txRecorder
	a := newTestAssembler(t, r.handle, TxTimeout(10*time.Second), AckWait(3*time.Second))
	now := time.Now()
	if err := a.addMsg(t.Context(), afterCommit("a", "k1", "t", 1, 3, 1, &log)); err != nil {
		t.Fatal(err)
	}
	a.housekeep(t.Context(), now.Add(2*time.Second))
	if len(r.txs) != 0 || !slices.Equal(log, []string{"wip 1"}) {
		t.Fatalf("before the timeout: %v, %v", r.txs, log)
	}
	a.housekeep(t.Context(), now.Add(11*time.Second))
	if !slices.Equal(r.txs, []string{"a/k1 part=0 partial=true [1]"}) || !slices.Equal(log, []string{"wip 1", "ack 1"}) {
		t.Fatalf("after the timeout: %v, %v", r.txs, log)
	}
	if len(a.pending) != 0 {
		t.Fatal("still pending")
	}
}

// TestAssemblerStop: a handler retried until the subscription stops keeps
// its messages, and nakAll hands them back.
func TestAssemblerStop(t *testing.T) {
	var log []string
	r := txRecorder{fail: 1 << 30}
	a := newTestAssembler(t, r.handle)
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := a.addMsg(ctx, afterCommit("a", "k1", "t", 0, 1, 7, &log)); !errors.Is(err, context.Canceled) {
		t.Fatalf("add = %v, want the context's error", err)
	}
	a.nakAll()
	var naks int
	for _, l := range log {
		switch l {
		case "nak 7":
			naks++
		case "wip 7":
		default:
			t.Fatalf("unexpected %s", l)
		}
	}
	if naks != 1 {
		t.Fatalf("log %v: want one nak", log)
	}
}

// TestAssemblerSkipAndFilter: ErrSkip terminates a transaction's messages;
// a transaction no change of which matches is acknowledged unseen.
func TestAssemblerSkipAndFilter(t *testing.T) {
	var log []string
	calls := 0
	a := newTestAssembler(t, func(_ context.Context, tx Tx) error {
		calls++
		return fmt.Errorf("bad data: %w", ErrSkip)
	})
	a.sel = Filter{Table: "orders"}
	add := func(m *fakeMsg) {
		if err := a.addMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	add(afterCommit("a", "k1", "users", 0, 1, 1, &log))
	add(afterCommit("a", "k2", "users", 0, 2, 2, &log))
	add(afterCommit("a", "k2", "orders", 1, 2, 3, &log))
	if calls != 1 || !slices.Equal(log, []string{"ack 1", "term 2", "term 3"}) {
		t.Fatalf("calls %d, log %v", calls, log)
	}
}

func TestDedup(t *testing.T) {
	d := newDedup(2)
	m := func(id string) *Message { return &Message{Source: "/trackerd/a", ID: id} }
	d.add(m("1"))
	d.add(m("2"))
	d.add(m("2"))
	if !d.has(m("1")) || !d.has(m("2")) || d.has(m("3")) || d.has(&Message{Source: "/trackerd/b", ID: "1"}) {
		t.Fatal("dedup of 2 forgets too early or confuses sources")
	}
	d.add(m("3"))
	if d.has(m("1")) || !d.has(m("3")) {
		t.Fatal("dedup keeps more than its window")
	}
	var none *dedup
	none.add(m("1"))
	if none.has(m("1")) {
		t.Fatal("a nil dedup remembers")
	}
}

// TestAssemblerSnapshotRows: each row of a snapshot is a transaction of its
// own although they share the snapshot's txkey; lifecycle events are
// acknowledged and skipped.
func TestAssemblerSnapshotRows(t *testing.T) {
	var log []string
	var r txRecorder
	a := newTestAssembler(t, r.handle)
	ctx := t.Context()
	snap := func(id string, streamSeq uint64) *fakeMsg {
		c := &tracker.Change{Bind: "a", Source: "postgresql", Op: tracker.OpSnapshot, Schema: "public", Table: "orders",
			Key:  tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{json.RawMessage(id)}},
			TxID: "snapshot-s1", TxKey: "snapshot-s1", Pos: "0/1"}
		ev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, TxTotal: 1, Snapshot: "s1", ID: tracker.SnapshotEventID("a", "o", "s1", c)}
		return &fakeMsg{subject: "trackerd.after_commit.a.public.orders.snapshot", data: wire.EncodeEvent(nil, ev), seq: streamSeq, log: &log}
	}
	l := &tracker.Lifecycle{Type: tracker.LifecycleCompleted, Bind: "a", Snapshot: "s1"}
	lev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: &tracker.Change{Bind: "a", Origin: "o"}, Lifecycle: l, ID: tracker.LifecycleEventID("a", "o", l)}
	for _, m := range []*fakeMsg{snap("1", 1), snap("2", 2), snap("1", 3), // the third is a copy of the first
		{subject: "trackerd.control.a.snapshot", data: wire.EncodeEvent(nil, lev), seq: 4, log: &log}} {
		if err := a.addMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"a/snapshot-s1 part=0 partial=false [0]", "a/snapshot-s1 part=0 partial=false [0]"}
	if !slices.Equal(r.txs, want) {
		t.Fatalf("transactions:\n%s\nwant:\n%s", strings.Join(r.txs, "\n"), strings.Join(want, "\n"))
	}
	slices.Sort(log)
	if want := []string{"ack 1", "ack 2", "ack 3", "ack 4"}; !slices.Equal(log, want) {
		t.Fatalf("acks %v, want %v", log, want)
	}
}
