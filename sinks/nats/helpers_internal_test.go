package nats

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/tracker/trackertest"
	"github.com/trackerd/trackerd/wire"
)

// envNATS names the variable that points integration tests at a running
// NATS server with JetStream.
const envNATS = "TRACKERD_TEST_NATS_URL"

// eventually polls cond until it holds or the time is up (trackertest.Eventually).
var eventually = trackertest.Eventually

// uniqueName derives a stream, bucket or prefix name from the test's name
// and a random suffix, so that tests may share a server.
func uniqueName(t testing.TB) string {
	var b strings.Builder
	for _, r := range t.Name() {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("%s_%06x", name, rand.Uint32()&0xffffff)
}

// startEmbedded runs an embedded server on a free port for the test.
func startEmbedded(t testing.TB, dir string) *natsserver.Server {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	var log *slog.Logger
	if os.Getenv("TRACKERD_TEST_NATS_LOG") != "" { // the embedded server's own log, to debug a test
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	e, err := natsserver.Start(context.Background(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: dir, Logger: log})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e
}

// testServer is a NATS server an integration test runs against.
type testServer struct {
	name string
	url  string // empty: not configured
}

// servers returns the embedded server (always available) and the one named
// by TRACKERD_TEST_NATS_URL; run each as a subtest that calls need first.
func servers(t *testing.T) []testServer {
	t.Helper()
	return []testServer{
		{name: "embedded", url: startEmbedded(t, "").ClientURL()},
		{name: "external", url: os.Getenv(envNATS)},
	}
}

// need skips the (sub)test when the server is not configured, naming the
// variable to set.
func (s testServer) need(t *testing.T) {
	t.Helper()
	if s.url == "" {
		t.Skipf("%s is not set: set it to a NATS server with JetStream (e.g. nats://127.0.0.1:4222) to run this test against it", envNATS)
	}
}

// tempBucket returns a bucket name of this test's own, whose bucket (if
// one gets created) is deleted when the test ends.
func tempBucket(t testing.TB, nc *natsgo.Conn) string {
	t.Helper()
	bucket := uniqueName(t)
	t.Cleanup(func() {
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteKeyValue(ctx, bucket)
	})
	return bucket
}

// dial connects to url, closing the connection when the test ends.
func dial(t testing.TB, url string, opts ...natsgo.Option) *natsgo.Conn {
	t.Helper()
	nc, err := natsgo.Connect(url, opts...)
	if err != nil {
		t.Fatalf("connect %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// cleanupStream deletes a stream when the test ends.
func cleanupStream(t testing.TB, nc *natsgo.Conn, name string) {
	t.Helper()
	t.Cleanup(func() {
		js, err := jetstream.New(nc)
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = js.DeleteStream(ctx, name)
	})
}

// testChange returns a small insert into public.orders.
func testChange(bind string, tx, seq int) *tracker.Change {
	return &tracker.Change{
		Bind: bind, Source: "postgresql", Op: tracker.OpInsert,
		Schema: "public", Table: "orders",
		Key:   tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{json.RawMessage(fmt.Sprint(tx*1000 + seq))}},
		After: tracker.Row{Names: []string{"id", "note"}, Values: []json.RawMessage{json.RawMessage(fmt.Sprint(tx*1000 + seq)), json.RawMessage(`"hello"`)}},
		TxID:  fmt.Sprint(700 + tx), TxKey: fmt.Sprintf("lsn-%016X", tx), Seq: seq,
		CommitTime: time.Date(2024, 5, 1, 12, 0, tx%60, 0, time.UTC), Pos: fmt.Sprintf("0/%X", tx*100+seq),
	}
}

// eventSeq generates a lane's events: transactions of txSize changes, each
// as before_commit then after_commit events, LaneSeq from 1.
type eventSeq struct {
	bind   string
	txSize int
	n      uint64
}

func (g *eventSeq) next() *tracker.Event {
	i := int(g.n) // 0-based event number
	perTx := 2 * g.txSize
	tx, k := i/perTx+1, i%perTx
	phase := tracker.PhaseBeforeCommit
	seq := k
	if k >= g.txSize {
		phase, seq = tracker.PhaseAfterCommit, k-g.txSize
	}
	c := testChange(g.bind, tx, seq)
	g.n++
	ev := &tracker.Event{Phase: phase, Change: c, ID: tracker.Escape(g.bind) + "/" + c.TxKey + "/" + strconv.Itoa(seq) + "/" + string(phase), LaneSeq: g.n}
	if phase == tracker.PhaseAfterCommit {
		ev.TxTotal = g.txSize
	}
	return ev
}

// ackRecorder records what a lane reports through acked.
type ackRecorder struct {
	mu    sync.Mutex
	calls []uint64
	bad   string
}

func (r *ackRecorder) acked(n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) > 0 && n <= r.calls[len(r.calls)-1] {
		r.bad = fmt.Sprintf("acked(%d) after acked(%d): not increasing", n, r.calls[len(r.calls)-1])
	}
	r.calls = append(r.calls, n)
}

func (r *ackRecorder) last() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.calls) == 0 {
		return 0
	}
	return r.calls[len(r.calls)-1]
}

func (r *ackRecorder) check(t testing.TB) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.bad != "" {
		t.Error(r.bad)
	}
}

// streamIDs reads every message id of a stream in stream order.
func streamIDs(t testing.TB, nc *natsgo.Conn, stream string) []string {
	t.Helper()
	ids, err := readStreamIDs(nc, stream)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// readStreamIDs reads every message id of a stream in stream order.
func readStreamIDs(nc *natsgo.Conn, stream string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", stream, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, err
	}
	total := info.State.Msgs
	if total == 0 {
		return nil, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, total)
	for uint64(len(ids)) < total {
		batch, err := cons.FetchNoWait(int(min(total-uint64(len(ids)), 1000)))
		if err != nil {
			return nil, err
		}
		got := 0
		for m := range batch.Messages() {
			ids = append(ids, m.Headers().Get(wire.HeaderMsgID))
			got++
		}
		if err := batch.Error(); err != nil {
			return nil, err
		}
		if got == 0 {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("read %d of %d messages of %s", len(ids), total, stream)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return ids, nil
}

// logBuffer collects a logger's output for assertions.
type logBuffer struct{ trackertest.Buffer }

func (l *logBuffer) contains(s string) bool { return strings.Contains(l.String(), s) }

// logger returns a debug-level text logger writing to l.
func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
