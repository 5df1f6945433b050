package nats

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// laneRig is a lane on a fake server, with a watermark checker.
type laneRig struct {
	t    *testing.T
	f    *fakeServer
	s    *Sink
	lane tracker.Lane
	gen  eventSeq

	mu    sync.Mutex
	ids   []string // by LaneSeq-1
	acked uint64
	bad   []string
}

// The two ways a lane publishes in JetStream mode.
const (
	oneByOne = false // a stream without allow_batched (servers before 2.14)
	batched  = true  // fast batches, gap mode "fail"
)

func modeName(b bool) string {
	if b {
		return "batched"
	}
	return "one by one"
}

func newRig(t *testing.T, o Options) *laneRig {
	return newModeRig(t, o, oneByOne)
}

// newModeRig is a lane on a fake server that allows fast batches or not.
func newModeRig(t *testing.T, o Options, batch bool) *laneRig {
	t.Helper()
	r := &laneRig{t: t, f: newFakeServer(), gen: eventSeq{bind: "b", txSize: 3}}
	if o.AckTimeout == 0 {
		o.AckTimeout = time.Second
	}
	s, err := newSink(r.f, nil, o)
	if err != nil {
		t.Fatal(err)
	}
	r.f.allowBatch = batch
	s.batched.Store(batch)
	r.s = s
	lane, err := s.OpenLane(t.Context(), "b", r.onAcked)
	if err != nil {
		t.Fatal(err)
	}
	r.lane = lane
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = lane.Close(ctx)
	})
	return r
}

// onAcked checks the watermark promise: when acked(n) is called, events
// 1..n are all in the stream, and n only grows.
func (r *laneRig) onAcked(n uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n <= r.acked {
		r.bad = append(r.bad, fmt.Sprintf("acked(%d) after acked(%d)", n, r.acked))
	}
	for seq := r.acked + 1; seq <= n && seq <= uint64(len(r.ids)); seq++ {
		if !r.f.has(r.ids[seq-1]) {
			r.bad = append(r.bad, fmt.Sprintf("acked(%d) while event %d (%s) is not stored", n, seq, r.ids[seq-1]))
			break
		}
	}
	r.acked = n
}

func (r *laneRig) publish(n int) {
	r.t.Helper()
	for range n {
		ev := r.gen.next()
		r.mu.Lock()
		r.ids = append(r.ids, ev.ID)
		r.mu.Unlock()
		if err := r.lane.Publish(r.t.Context(), ev); err != nil {
			r.t.Fatalf("Publish %d: %v", ev.LaneSeq, err)
		}
	}
}

func (r *laneRig) ackedN() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acked
}

// finish closes the lane and checks that every event is stored once and
// reported.
func (r *laneRig) finish(strictOrder bool) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.t.Context(), 10*time.Second)
	defer cancel()
	if err := r.lane.Close(ctx); err != nil {
		r.t.Fatalf("Close: %v", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, b := range r.bad {
		r.t.Error(b)
	}
	if r.acked != uint64(len(r.ids)) {
		r.t.Errorf("last acked = %d, want %d", r.acked, len(r.ids))
	}
	got := r.f.streamIDs()
	if len(got) != len(r.ids) {
		r.t.Fatalf("stream holds %d messages, want %d", len(got), len(r.ids))
	}
	if strictOrder && !slices.Equal(got, r.ids) {
		r.t.Fatalf("stream order differs from LaneSeq order:\n got %v\nwant %v", got, r.ids)
	}
	sorted := slices.Clone(got)
	slices.Sort(sorted)
	want := slices.Clone(r.ids)
	slices.Sort(want)
	if !slices.Equal(sorted, want) {
		r.t.Fatalf("stream holds other events than published")
	}
}

// TestLaneDelivers publishes through one failure of each kind. Batched,
// the stream always holds the events in LaneSeq order (issue 9, F10: one
// failed publish must not let a later event be stored before it). One by
// one, some failures let later events overtake the failed one: the lane
// then counts exactly the events stored ahead of an earlier one.
func TestLaneDelivers(t *testing.T) {
	const (
		ev2b1 = "b/lsn-0000000000000002/1/before_commit"
		ev1b0 = "b/lsn-0000000000000001/0/before_commit"
		ev3a2 = "b/lsn-0000000000000003/2/after_commit"
		ev2a0 = "b/lsn-0000000000000002/0/after_commit"
		ev2b2 = "b/lsn-0000000000000002/2/before_commit"
		ev2b0 = "b/lsn-0000000000000002/0/before_commit"
	)
	tests := []struct {
		name   string
		opts   Options
		policy func(id string, attempt int) action
		strict bool // one by one, the failure cannot reorder the stream
		retry  bool // Stats.Retried must count re-sends
		dup    bool // Stats.Duplicates must count a duplicate ack
		clean  bool // nothing may be retried
	}{
		{name: "ok - no failure", strict: true, clean: true},
		{name: "ok - window of one", opts: Options{MaxInflight: 1}, strict: true, clean: true},
		{name: "retry - one API error", policy: failOnce(ev2b1, actError), retry: true},
		{name: "retry - API errors in a row", policy: failN(ev2b1, actError, 3), retry: true},
		{name: "retry - no responders", policy: failOnce(ev1b0, actNoResponders), retry: true},
		{name: "retry - lost message times out", opts: Options{AckTimeout: 30 * time.Millisecond}, policy: failOnce(ev3a2, actDrop), retry: true},
		{name: "retry - lost ack times out, duplicate on re-send", opts: Options{AckTimeout: 30 * time.Millisecond}, policy: failOnce(ev2a0, actStoreNoAck)},
		{name: "retry - connection refuses", policy: failOnce(ev2b2, actRefuse), strict: true},
		{name: "retry - connection refuses the first event", policy: failOnce(ev1b0, actRefuse), strict: true},
		{name: "retry - server down from one event on", policy: downFrom(ev2b0, 3), strict: true, retry: true},
	}
	for _, mode := range []bool{oneByOne, batched} {
		for _, tc := range tests {
			t.Run(modeName(mode)+"/"+tc.name, func(t *testing.T) {
				r := newModeRig(t, tc.opts, mode)
				r.f.setPolicy(tc.policy)
				r.publish(60)
				r.finish(mode == batched || tc.strict)
				st := r.s.Stats()
				if st.Published != 60 || st.Acked < 60 || st.InFlight != 0 {
					t.Errorf("Stats = %+v", st)
				}
				if tc.retry && st.Retried == 0 {
					t.Errorf("Stats.Retried = 0 after a failure")
				}
				if tc.clean && (st.Retried != 0 || st.Duplicates != 0) {
					t.Errorf("Stats = %+v: retries or duplicates without a failed publish", st)
				}
				if want := overtakers(r.f.streamIDs(), r.ids); st.Reordered != want {
					t.Errorf("Stats.Reordered = %d, want %d: the events stored ahead of an earlier one, in %v", st.Reordered, want, r.f.streamIDs())
				}
				if mode == oneByOne {
					for _, m := range r.f.published() {
						if !strings.HasPrefix(m.Header.Get(wire.HeaderOrder), r.lane.(*lane).run+".") {
							t.Fatalf("message %s without the %s header of the run", m.Header.Get(wire.HeaderMsgID), wire.HeaderOrder)
						}
					}
				}
			})
		}
	}
}

// overtakers counts the events of stream stored ahead of an event that
// precedes them in order.
func overtakers(stream, order []string) uint64 {
	pos := make(map[string]int, len(order))
	for i, id := range order {
		pos[id] = i
	}
	var n uint64
	highest := -1
	for _, id := range order {
		p := slices.Index(stream, id)
		if p < highest {
			n++
		}
		highest = max(highest, p)
	}
	return n
}

// failN fails the first n attempts of one id.
func failN(id string, act action, n int) func(string, int) action {
	return func(got string, attempt int) action {
		if got == id && attempt <= n {
			return act
		}
		return actStore
	}
}

// TestLaneRoundProbes: one by one, a round after a failure sends its first
// message alone until the stream takes it, so a stream that stays
// unavailable refuses one message per round, not the window.
func TestLaneRoundProbes(t *testing.T) {
	r := newRig(t, Options{MaxInflight: 64})
	const failing = "b/lsn-0000000000000002/0/before_commit"
	var mu sync.Mutex
	down := false
	r.f.setPolicy(func(id string, attempt int) action {
		mu.Lock()
		defer mu.Unlock()
		if id == failing && attempt == 1 {
			down = true
		}
		if down && id == failing && attempt < 6 {
			return actNoResponders
		}
		if id == failing {
			down = false
		}
		if down {
			return actNoResponders
		}
		return actStore
	})
	r.publish(40)
	r.finish(false)
	// Every event after the failing one was sent in the first round (and
	// refused) and once more after the stream came back: never in the
	// rounds in between.
	for _, id := range r.ids[7:] {
		if n := r.f.attempts[id]; n > 2 {
			t.Errorf("%s sent %d times while the stream refused the round's first message", id, n)
		}
	}
	if n := r.f.attempts[failing]; n != 6 {
		t.Errorf("%s sent %d times, want 6", failing, n)
	}
}

// TestLaneBatchFailures: failures only fast batches have.
func TestLaneBatchFailures(t *testing.T) {
	t.Run("answers lost and the batch forgotten: re-sent duplicates start new batches", func(t *testing.T) {
		r := newModeRig(t, Options{AckTimeout: 50 * time.Millisecond}, batched)
		r.publish(10)
		eventually(t, 5*time.Second, "first 10 acked", func() bool { return r.ackedN() == 10 })
		r.f.setMute(true) // stores, answers nothing
		r.publish(10)
		eventually(t, 5*time.Second, "20 stored", func() bool { return len(r.f.streamIDs()) == 20 })
		time.Sleep(150 * time.Millisecond) // the acknowledgement and the ping time out
		r.f.restart()                      // and the stream forgets the batch
		r.f.setMute(false)
		r.publish(10)
		r.finish(true)
		if st := r.s.Stats(); st.Duplicates == 0 {
			t.Errorf("Stats = %+v: no duplicate acknowledged", st)
		}
	})
	t.Run("the connection refuses one message: the ping finds the batch whole, nothing is sent again", func(t *testing.T) {
		r := newModeRig(t, Options{}, batched)
		r.f.setPolicy(failOnce("b/lsn-0000000000000003/1/before_commit", actRefuse))
		r.publish(60)
		r.finish(true)
		if st := r.s.Stats(); st.Retried != 0 || st.Duplicates != 0 {
			t.Errorf("Stats = %+v: re-sent what the stream had", st)
		}
	})
	t.Run("the stream refuses batches: the lane publishes one by one", func(t *testing.T) {
		r := newModeRig(t, Options{}, batched)
		r.f.allowBatch, r.f.batchDisabled = false, true
		r.publish(20)
		r.finish(true)
		if r.s.batched.Load() {
			t.Error("the sink still publishes in batches")
		}
	})
}

// failOnce fails the first attempt of one id.
func failOnce(id string, act action) func(string, int) action {
	return func(got string, attempt int) action {
		if got == id && attempt == 1 {
			return act
		}
		return actStore
	}
}

// downFrom answers nothing from one id on until each message has been sent
// n times: a server that went away.
func downFrom(id string, n int) func(string, int) action {
	var mu sync.Mutex
	down := false
	return func(got string, attempt int) action {
		mu.Lock()
		defer mu.Unlock()
		if got == id && attempt == 1 {
			down = true
		}
		if down && attempt < n {
			return actNoResponders
		}
		return actStore
	}
}

// TestLaneBackPressure: with NATS answering nothing, Publish blocks once
// the window is full, and memory holds the window only.
func TestLaneBackPressure(t *testing.T) {
	const window = 8
	r := newRig(t, Options{MaxInflight: window, AckTimeout: 20 * time.Millisecond})
	r.f.setPolicy(func(string, int) action { return actDrop })
	r.publish(window)

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	ev := r.gen.next()
	r.mu.Lock()
	r.ids = append(r.ids, ev.ID)
	r.mu.Unlock()
	if err := r.lane.Publish(ctx, ev); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish into a full window: err = %v, want it to block until ctx ends", err)
	}
	if got := r.s.Stats().InFlight; got != window {
		t.Errorf("InFlight = %d, want %d", got, window)
	}
	// Only window distinct messages were ever sent, however often.
	distinct := map[string]bool{}
	for _, m := range r.f.published() {
		distinct[m.Header.Get(wire.HeaderMsgID)] = true
	}
	if len(distinct) != window {
		t.Errorf("%d distinct messages sent, want %d", len(distinct), window)
	}
	// NATS comes back: the blocked event goes through, then everything.
	r.f.setPolicy(nil)
	if err := r.lane.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	r.publish(20)
	r.finish(true)
}

// TestLaneBackPressureBytes (issue 9, M4): Publish also blocks once the
// window's messages reach MaxInflightBytes, but an empty window takes any
// event, however large.
func TestLaneBackPressureBytes(t *testing.T) {
	for _, mode := range []bool{oneByOne, batched} {
		t.Run(modeName(mode), func(t *testing.T) {
			probe := newRig(t, Options{})
			ev := probe.gen.next()
			size, err := probe.lane.(*lane).encode(nil, ev)
			if err != nil {
				t.Fatal(err)
			}
			per := int64(len(size))
			r := newModeRig(t, Options{MaxInflight: 1000, MaxInflightBytes: 3 * per, AckTimeout: 50 * time.Millisecond}, mode)
			r.f.setPolicy(func(string, int) action { return actDrop })
			r.publish(3)
			ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
			defer cancel()
			next := r.gen.next()
			r.mu.Lock()
			r.ids = append(r.ids, next.ID)
			r.mu.Unlock()
			if err := r.lane.Publish(ctx, next); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Publish with %d bytes in flight (limit %d): err = %v, want it to block", 3*per, 3*per, err)
			}
			if got := r.s.Stats().InFlight; got != 3 {
				t.Errorf("InFlight = %d, want 3", got)
			}
			r.f.setPolicy(nil)
			if err := r.lane.Publish(t.Context(), next); err != nil {
				t.Fatal(err)
			}
			r.publish(20)
			r.finish(true)
			if l := r.lane.(*lane); l.w.held > 3*per+int64(maxRetainedBuf) {
				t.Errorf("%d bytes of buffers kept, over the limit of %d", l.w.held, 3*per)
			}
		})
	}
	t.Run("one event larger than the limit goes out alone", func(t *testing.T) {
		r := newRig(t, Options{MaxInflightBytes: 10})
		r.publish(5)
		r.finish(true)
	})
}

// TestLaneWaitsForConnection: a lane on a server that is down holds its
// events and sends them in order once it is up.
func TestLaneWaitsForConnection(t *testing.T) {
	r := newRig(t, Options{MaxInflight: 16})
	r.publish(5)
	eventually(t, 5*time.Second, "first events acked", func() bool { return r.ackedN() == 5 })
	r.f.setDown(true)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.publish(30) // blocks when the window is full
	}()
	eventually(t, 5*time.Second, "window full while down", func() bool { return r.s.Stats().InFlight == 16 })
	if got := r.ackedN(); got != 5 {
		t.Fatalf("acked = %d while NATS is down, want 5", got)
	}
	r.f.setDown(false)
	<-done
	r.finish(true)
}

func TestLaneCloseTimesOut(t *testing.T) {
	r := newRig(t, Options{AckTimeout: time.Hour})
	r.f.setPolicy(func(string, int) action { return actDrop })
	r.publish(3)
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	err := r.lane.Close(ctx)
	if err == nil || !strings.Contains(err.Error(), "3 events not acknowledged") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want 3 unacknowledged events and the deadline", err)
	}
	if err := r.lane.Publish(t.Context(), r.gen.next()); !errors.Is(err, ErrLaneClosed) {
		t.Fatalf("Publish after Close: %v, want ErrLaneClosed", err)
	}
}

func TestLaneRefusesBadEvents(t *testing.T) {
	r := newRig(t, Options{})
	good := func() *tracker.Event {
		return &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: testChange("b", 1, 0), ID: "b/x/0/after_commit", LaneSeq: 1}
	}
	tests := []struct {
		name    string
		mutate  func(*tracker.Event)
		wantErr string
	}{
		{"error - LaneSeq out of order", func(ev *tracker.Event) { ev.LaneSeq = 2 }, "LaneSeq 2, want 1"},
		{"error - no change", func(ev *tracker.Event) { ev.Change = nil }, "without a change"},
		{"error - unknown phase", func(ev *tracker.Event) { ev.Phase = "during_commit" }, "unknown phase"},
		{"error - empty id", func(ev *tracker.Event) { ev.ID = "" }, "event id"},
		{"error - id with a space", func(ev *tracker.Event) { ev.ID = "a b" }, "event id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := good()
			tc.mutate(ev)
			if err := r.lane.Publish(t.Context(), ev); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Publish: err = %v, want %q", err, tc.wantErr)
			}
		})
	}
	if err := r.lane.Publish(t.Context(), good()); err != nil {
		t.Fatalf("Publish of a good event after refusals: %v", err)
	}
}

// TestLaneHeader: a lane sends the headers of wire's golden files, and
// headerLen counts them as nats.go does.
func TestLaneHeader(t *testing.T) {
	tr := newFakeServer()
	s, err := newSink(tr, nil, Options{Mode: Core})
	if err != nil {
		t.Fatal(err)
	}
	l, err := s.OpenLane(t.Context(), "default", nil)
	if err != nil {
		t.Fatal(err)
	}
	ev := (&eventSeq{bind: "default", txSize: 3}).next()
	if err := l.Publish(t.Context(), ev); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(t.Context()); err != nil {
		t.Fatal(err)
	}
	msgs := tr.published()
	if len(msgs) != 1 {
		t.Fatalf("published %d messages, want 1", len(msgs))
	}
	h := msgs[0].Header
	if len(h) != 2 || h.Get(wire.HeaderContentType) != wire.ContentType || h.Get(wire.HeaderMsgID) != ev.ID {
		t.Errorf("headers = %v, want only %s: %s and %s: %s", h, wire.HeaderContentType, wire.ContentType, wire.HeaderMsgID, ev.ID)
	}
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "ce-") {
			t.Errorf("header %s: no ce-* header may be sent (sdk-go would read binary mode)", k)
		}
	}
	if got := len(msgs[0].Data) + headerLen(ev.ID); got != msgSize(msgs[0]) {
		t.Errorf("headerLen: size %d, nats.go counts %d", got, msgSize(msgs[0]))
	}
}

func TestCoreLane(t *testing.T) {
	r := newRig(t, Options{Mode: Core})
	r.publish(50)
	eventually(t, 5*time.Second, "acked 50", func() bool { return r.ackedN() == 50 })
	r.finish(true)
	for _, m := range r.f.published() {
		if m.Reply != "" {
			t.Fatalf("core publish with a reply subject %q", m.Reply)
		}
	}
}

// TestCoreLaneEcho: with ECHO, Publish logs the subject of the event it
// queued; in core mode the sender may store and free that slot at once,
// so the subject must not be read from the slot after queueing (run with
// -race).
func TestCoreLaneEcho(t *testing.T) {
	logs := &logBuffer{}
	r := newRig(t, Options{Mode: Core, Echo: true, Logger: logs.logger()})
	r.publish(500)
	eventually(t, 5*time.Second, "acked 500", func() bool { return r.ackedN() == 500 })
	r.finish(true)
	if !logs.contains("published") {
		t.Fatal("ECHO logged nothing")
	}
}

func TestOversize(t *testing.T) {
	big := func(n int) json.RawMessage { return json.RawMessage(`"` + strings.Repeat("x", n) + `"`) }
	change := func() *tracker.Change {
		c := testChange("b", 1, 0)
		c.Op = tracker.OpUpdate
		c.Key = tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{json.RawMessage("1")}}
		c.Before = tracker.Row{Names: []string{"id", "small", "doc", "pic"}, Values: []json.RawMessage{json.RawMessage("1"), big(10), big(3000), big(1500)}}
		c.After = tracker.Row{Names: []string{"id", "small", "doc", "pic"}, Values: []json.RawMessage{json.RawMessage("1"), big(10), big(3000), big(500)}}
		return c
	}
	tests := []struct {
		name      string
		policy    string
		limit     int64
		key       json.RawMessage
		wantCols  []string
		wantErr   string
		truncated uint64
	}{
		{name: "ok - fits", policy: OversizeFail, limit: 1 << 20},
		{name: "truncate - largest values go", policy: OversizeTruncate, limit: 3500, wantCols: []string{"doc"}, truncated: 1},
		{name: "truncate - several go", policy: OversizeTruncate, limit: 2000, wantCols: []string{"doc", "pic"}, truncated: 1},
		{name: "truncate - cannot fit with the key", policy: OversizeTruncate, limit: 2000, key: big(3000), wantErr: "still too large"},
		{name: "fail", policy: OversizeFail, limit: 3500, wantErr: "raise max_payload, or set OVERSIZE_POLICY=truncate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, Options{OversizePolicy: tc.policy})
			r.f.maxPay = tc.limit
			c := change()
			if tc.key != nil {
				c.Key.Values[0] = tc.key
			}
			orig := c.AppendJSON(nil)
			ev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, ID: "b/x/0/after_commit", LaneSeq: 1, Data: orig}
			err := r.lane.Publish(t.Context(), ev)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), ev.ID) {
					t.Fatalf("Publish: err = %v, want ErrTooLarge naming the event and %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(ev.Data) != string(orig) || c.Truncated != nil || c.After.Values[2] == nil {
				t.Fatalf("Publish modified the event it was given")
			}
			eventually(t, 5*time.Second, "acked", func() bool { return r.ackedN() == 1 })
			m := r.f.published()[0]
			if got := msgSize(m); int64(got) > tc.limit {
				t.Fatalf("message is %d bytes, over the limit %d", got, tc.limit)
			}
			var ce struct {
				Data tracker.Change `json:"data"`
			}
			if err := json.Unmarshal(m.Data, &ce); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(ce.Data.Truncated, tc.wantCols) {
				t.Errorf("truncated = %v, want %v", ce.Data.Truncated, tc.wantCols)
			}
			for _, col := range tc.wantCols {
				if _, ok := ce.Data.After.Get(col); ok {
					t.Errorf("column %s still in after", col)
				}
				if _, ok := ce.Data.Before.Get(col); ok {
					t.Errorf("column %s still in before", col)
				}
			}
			if v, ok := ce.Data.Key.Get("id"); !ok || string(v) != "1" {
				t.Errorf("key = %v, want id 1 kept", ce.Data.Key)
			}
			if got := r.s.Stats().Truncated; got != tc.truncated {
				t.Errorf("Stats.Truncated = %d, want %d", got, tc.truncated)
			}
		})
	}
}

func TestBatchReply(t *testing.T) {
	tests := []struct {
		id        string
		flow, seq uint64
		op        int
	}{
		{"abc", 500, 1, batchOpStart},
		{"x1y2", 1, 18446744073709551615, batchOpAppend},
		{"k", 250, 77, batchOpEOB},
		{"k", 2, 9, batchOpPing},
	}
	for _, tc := range tests {
		reply := string(appendBatchReply(nil, "_INBOX.abc.", tc.id, tc.flow, tc.seq, tc.op))
		// nats-server reads <prefix>.<id>.<flow>.<gap>.<seq>.<op>.$FI
		want := fmt.Sprintf("_INBOX.abc.%s.%d.fail.%d.%d.$FI", tc.id, tc.flow, tc.seq, tc.op)
		if reply != want {
			t.Errorf("reply %q, want %q", reply, want)
		}
		id, seq, op, ok := parseBatchReply(reply[len("_INBOX.abc."):])
		if !ok || id != tc.id || seq != tc.seq || op != tc.op {
			t.Errorf("parseBatchReply(%q) = %q, %d, %d, %v", reply, id, seq, op, ok)
		}
	}
	for _, bad := range []string{"", "1.2", "a.500.fail.1.0", "a.500.fail.x.0.$FI", "a.500.fail.1.y.$FI", ".500.fail.1.0.$FI", "500.fail.1.0.$FI"} {
		if _, _, _, ok := parseBatchReply(bad); ok {
			t.Errorf("parseBatchReply(%q) accepted", bad)
		}
	}
	if got := flowFor(8192); got != batchFlow {
		t.Errorf("flowFor(8192) = %d", got)
	}
	if got := flowFor(1); got != 1 {
		t.Errorf("flowFor(1) = %d", got)
	}
}

// TestParseBatchAnswer reads the answers nats-server 2.15 sends to fast
// batch messages (stream.go: BatchFlowAck, BatchFlowGap, BatchFlowErr and
// the PubAck that ends a batch).
func TestParseBatchAnswer(t *testing.T) {
	tests := []struct {
		name    string
		status  string
		data    string
		want    batchAnswer
		wantErr string // in the answer's err
		bad     bool   // parseBatchAnswer fails
	}{
		{name: "flow ack", data: `{"type":"ack","seq":500,"msgs":250}`, want: batchAnswer{kind: batchFlowAck, seq: 500, msgs: 250}},
		{name: "start", data: `{"type":"ack","seq":0,"msgs":500}`, want: batchAnswer{kind: batchFlowAck, msgs: 500}},
		{name: "gap", data: `{"type":"gap","last_seq":10,"seq":15}`, want: batchAnswer{kind: batchGap, seq: 15}, wantErr: "expected message 10, received 15"},
		{name: "err", data: `{"type":"err","seq":10,"error":{"code":503,"err_code":10077,"description":"maximum messages per subject exceeded"}}`, want: batchAnswer{kind: batchErr, seq: 10}, wantErr: "maximum messages per subject"},
		{name: "end", data: `{"stream":"S","seq":1234,"batch":"abc","count":99}`, want: batchAnswer{kind: batchEnd, count: 99}},
		{name: "end, first a duplicate", data: `{"stream":"S","seq":7,"duplicate": true,"batch":"abc","count":1}`, want: batchAnswer{kind: batchEnd, count: 1, dup: true}},
		{name: "refused", data: `{"error":{"code":400,"err_code":10208,"description":"batch publish ID unknown"},"stream":"S","seq":0}`, want: batchAnswer{kind: batchEnd}, wantErr: "batch publish ID unknown"},
		{name: "no responders", status: "503", want: batchAnswer{kind: batchNoStream}, wantErr: "no responders"},
		{name: "unknown type", data: `{"type":"what"}`, bad: true},
		{name: "not JSON", data: `x`, bad: true},
		{name: "no stream", data: `{"count":1}`, bad: true},
		{name: "other status", status: "408", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseBatchAnswer(tc.status, []byte(tc.data))
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gotErr := got.err
			got.err = nil
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
			if (gotErr == nil) != (tc.wantErr == "") || gotErr != nil && !strings.Contains(gotErr.Error(), tc.wantErr) {
				t.Errorf("err = %v, want %q", gotErr, tc.wantErr)
			}
		})
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		subject string
		seq     uint64
		gen     uint32
		ok      bool
	}{
		{"_INBOX.x.12.3", 12, 3, true},
		{"_INBOX.x.18446744073709551615.4294967295", 1<<64 - 1, 1<<32 - 1, true},
		{"_INBOX.x.12", 0, 0, false},
		{"_INBOX.x.a.1", 0, 0, false},
		{"_INBOX.x.1.b", 0, 0, false},
		{"_INBOX.x.", 0, 0, false},
		{"_INBOX.", 0, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.subject, func(t *testing.T) {
			seq, gen, ok := parseReply(tc.subject, len("_INBOX.x."))
			if seq != tc.seq || gen != tc.gen || ok != tc.ok {
				t.Errorf("parseReply = %d, %d, %v; want %d, %d, %v", seq, gen, ok, tc.seq, tc.gen, tc.ok)
			}
		})
	}
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"_INBOX.x.12.3", "_INBOX.x.12", "_INBOX.x.a.1", "_INBOX.x.", "_INBOX.x.1.2.3", "_INBOX.x.-1.2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, subject string) {
		seq, gen, ok := parseReply(subject, len("_INBOX.x."))
		if !ok {
			return
		}
		// What parses is what send writes.
		back := "_INBOX.x." + strconv.FormatUint(seq, 10) + "." + strconv.FormatUint(uint64(gen), 10)
		if s2, g2, ok2 := parseReply(back, len("_INBOX.x.")); !ok2 || s2 != seq || g2 != gen {
			t.Fatalf("%q parsed as %d.%d, which does not read back", subject, seq, gen)
		}
	})
}

func TestParsePubAck(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		status  string
		dup     bool
		seq     uint64
		wantErr string
	}{
		{name: "ok - stored", data: `{"stream":"S","seq":5}`, seq: 5},
		{name: "ok - with domain", data: `{"stream":"S","domain":"hub","seq":5}`, seq: 5},
		{name: "ok - duplicate", data: `{"stream":"S","seq":5,"duplicate":true}`, dup: true, seq: 5},
		{name: "ok - other order", data: `{"seq":5,"duplicate":true,"stream":"S"}`, dup: true, seq: 5},
		// The bytes nats-server 2.9 and 2.15 really send: a space after the colon
		// (and, in 2.9, after the comma).
		{name: "ok - duplicate as the server writes it", data: `{"stream":"S", "seq":5, "duplicate": true}`, dup: true, seq: 5},
		{name: "ok - 2.9 spacing", data: `{"stream":"S", "seq":17}`, seq: 17},
		{name: "ok - large seq", data: `{"stream":"S","seq":18446744073709551615}`, seq: 1<<64 - 1},
		{name: "ok - duplicate false", data: `{"stream":"S","seq":5,"duplicate":false}`, seq: 5},
		{name: "ok - stream named error", data: `{"stream":"error","seq":1}`, seq: 1},
		{name: "ok - stream named seq", data: `{"stream":"\"seq\":9","seq":1}`, seq: 1},
		{name: "error - api error", data: `{"error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"},"stream":"S","seq":0}`, wantErr: "temporarily unavailable"},
		{name: "error - wrong sequence", data: `{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 4"}}`, wantErr: "wrong last sequence"},
		{name: "error - no responders", status: "503", wantErr: "no responders"},
		{name: "error - other status", status: "408", wantErr: "status 408"},
		{name: "error - empty", wantErr: "empty"},
		{name: "error - not JSON", data: `hello`, wantErr: "read publish answer"},
		{name: "error - no stream", data: `{"seq":1}`, wantErr: "names no stream"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &natsgo.Msg{Data: []byte(tc.data)}
			if tc.status != "" {
				m.Header = natsgo.Header{"Status": {tc.status}}
			}
			dup, seq, err := parsePubAck(m)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || dup != tc.dup || seq != tc.seq {
				t.Fatalf("parsePubAck = %v, %d, %v; want %v, %d, nil", dup, seq, err, tc.dup, tc.seq)
			}
		})
	}
}

func FuzzParsePubAck(f *testing.F) {
	for _, s := range []string{`{"stream":"S","seq":5}`, `{"stream":"S","seq":5,"duplicate":true}`, `{"error":{"code":503}}`, `{}`, ``, `{"stream":"`, `{"stream":"S", "seq":17}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dup, seq, err := parsePubAck(&natsgo.Msg{Data: data})
		if err == nil && !json.Valid(data) && !bytes.HasPrefix(data, []byte(`{"stream":`)) {
			t.Fatalf("%q accepted as a PubAck", data)
		}
		if err != nil && (dup || seq != 0) {
			t.Fatalf("%q: duplicate or sequence with an error", data)
		}
		if err == nil && json.Valid(data) {
			// The fast path reads what encoding/json reads.
			var r struct {
				Seq uint64 `json:"seq"`
			}
			if json.Unmarshal(data, &r) == nil && r.Seq != seq {
				t.Fatalf("%q: seq %d, encoding/json reads %d", data, seq, r.Seq)
			}
		}
	})
}

func TestCovers(t *testing.T) {
	tests := []struct {
		stream, want string
		ok           bool
	}{
		{"trackerd.>", "trackerd.>", true},
		{">", "trackerd.>", true},
		{"*.>", "trackerd.>", true},
		{"a.>", "a.b.>", true},
		{"a.*.>", "a.b.>", true},
		{"a.*.>", "a.>", false},
		{"a.*", "a.>", false},
		{"trackerd.after_commit.>", "trackerd.>", false},
		{"trackerd", "trackerd.>", false},
		{"other.>", "trackerd.>", false},
		{"trackerd.*.*.*.*.*", "trackerd.>", false},
	}
	for _, tc := range tests {
		t.Run(tc.stream+" "+tc.want, func(t *testing.T) {
			if got := covers(tc.stream, tc.want); got != tc.ok {
				t.Errorf("covers(%q, %q) = %v, want %v", tc.stream, tc.want, got, tc.ok)
			}
		})
	}
}
