package changefeed

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

func TestParseOrder(t *testing.T) {
	tests := []struct {
		in   string
		want Order
		ok   bool
	}{
		{"3w5e11264sgsf.12.7", Order{Run: "3w5e11264sgsf", Seq: 12, PhaseSeq: 7}, true},
		{"r.1.1", Order{Run: "r", Seq: 1, PhaseSeq: 1}, true},
		{"r.18446744073709551615.1", Order{Run: "r", Seq: 1<<64 - 1, PhaseSeq: 1}, true},
		{"", Order{}, false},
		{"r.1", Order{}, false},
		{".1.1", Order{}, false},
		{"r.0.1", Order{}, false},
		{"r.1.0", Order{}, false},
		{"r.x.1", Order{}, false},
		{"r.1.1.1", Order{}, false},
		{"r.-1.1", Order{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseOrder(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("parseOrder(%q) = %+v, %v; want %+v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// ev is an event of source "/s/<src>" with an order: run, seq, phase and
// phase seq.
func ev(src, run string, seq uint64, phase tracker.Phase, pseq uint64) held {
	m := Message{Source: "/s/" + src, Phase: phase, ID: fmt.Sprintf("%s/%s/%d", src, run, seq)}
	if run != "" {
		m.Order = Order{Run: run, Seq: seq, PhaseSeq: pseq}
	}
	return held{m: m}
}

func ids(hs []held) string {
	var s []string
	for _, h := range hs {
		s = append(s, h.m.ID)
	}
	return strings.Join(s, " ")
}

// TestOrderer: events that arrive ahead of a missing earlier event of
// their chain are held until it comes, then handed over in order.
func TestOrderer(t *testing.T) {
	const bc, ac = tracker.PhaseBeforeCommit, tracker.PhaseAfterCommit
	type step struct {
		in   held
		at   time.Duration // since the start
		want string        // handed over, in order
	}
	tests := []struct {
		name    string
		byPhase bool
		limit   int
		steps   []step
		expire  time.Duration // then expire at this time
		expired string
	}{
		{name: "in order: nothing held", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 2, ac, 1), want: "a/r/2"},
		}},
		{name: "one event overtaken by three", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 3, bc, 3)},
			{in: ev("a", "r", 4, ac, 1)},
			{in: ev("a", "r", 5, ac, 2)},
			{in: ev("a", "r", 2, bc, 2), want: "a/r/2 a/r/3 a/r/4 a/r/5"},
			{in: ev("a", "r", 6, bc, 4), want: "a/r/6"},
		}},
		{name: "two holes", steps: []step{
			{in: ev("a", "r", 10, bc, 10), want: "a/r/10"},
			{in: ev("a", "r", 12, bc, 12)},
			{in: ev("a", "r", 14, bc, 14)},
			{in: ev("a", "r", 13, bc, 13)},
			{in: ev("a", "r", 11, bc, 11), want: "a/r/11 a/r/12 a/r/13 a/r/14"},
		}},
		{name: "by phase: phase sequences, other binds apart", byPhase: true, steps: []step{
			{in: ev("a", "r", 2, ac, 1), want: "a/r/2"},
			{in: ev("b", "q", 7, ac, 3), want: "b/q/7"},
			{in: ev("a", "r", 6, ac, 3)},
			{in: ev("b", "q", 9, ac, 4), want: "b/q/9"},
			{in: ev("a", "r", 4, ac, 2), want: "a/r/4 a/r/6"},
		}},
		{name: "no header: as it comes", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 3, bc, 3)},
			{in: ev("a", "", 9, bc, 0), want: "a//9"},
		}},
		{name: "a redelivered event passes", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 2, bc, 2), want: "a/r/2"},
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
		}},
		{name: "a new run ends the old one's wait", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 3, bc, 3)},
			{in: ev("a", "s", 1, bc, 1), want: "a/r/3 a/s/1"},
		}},
		{name: "too many held: given up", limit: 2, steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 3, bc, 3)},
			{in: ev("a", "r", 4, bc, 4), want: "a/r/3 a/r/4"},
			{in: ev("a", "r", 2, bc, 2), want: "a/r/2"}, // late
			{in: ev("a", "r", 5, bc, 5), want: "a/r/5"},
		}},
		{name: "OrderWait passes", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 3, bc, 3), at: time.Second},
			{in: ev("a", "r", 4, bc, 4), at: 50 * time.Second},
		}, expire: 61 * time.Second, expired: "a/r/3 a/r/4"},
		{name: "OrderWait counts from the last progress", steps: []step{
			{in: ev("a", "r", 1, bc, 1), want: "a/r/1"},
			{in: ev("a", "r", 3, bc, 3)},
			{in: ev("a", "r", 5, bc, 5)},
			{in: ev("a", "r", 2, bc, 2), at: 50 * time.Second, want: "a/r/2 a/r/3"},
		}, expire: 61 * time.Second, expired: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			flt := Filter{}
			if tc.byPhase {
				flt.Phase = tracker.PhaseAfterCommit
			}
			limit := tc.limit
			if limit == 0 {
				limit = 100
			}
			o := newOrderer(flt, time.Minute, limit, slog.New(slog.DiscardHandler))
			start := time.Now()
			for i, s := range tc.steps {
				if got := ids(o.add(s.in, start.Add(s.at))); got != s.want {
					t.Fatalf("step %d (%s): handed over %q, want %q", i, s.in.m.ID, got, s.want)
				}
			}
			if tc.expire > 0 {
				if got := ids(o.expire(start.Add(tc.expire))); got != tc.expired {
					t.Fatalf("expire: handed over %q, want %q", got, tc.expired)
				}
			}
		})
	}
}

func TestOrdererOnlyForWholeChains(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		flt  Filter
		wait time.Duration
		on   bool
	}{
		{Filter{}, time.Minute, true},
		{Filter{Bind: "a"}, time.Minute, true},
		{Filter{Bind: "a", Phase: tracker.PhaseAfterCommit}, time.Minute, true},
		{Filter{Phase: "*", Schema: "*"}, time.Minute, true},
		{Filter{}, 0, false},
		{Filter{Table: "orders"}, time.Minute, false},
		{Filter{Schema: "public"}, time.Minute, false},
		{Filter{Op: tracker.OpInsert}, time.Minute, false},
		{Filter{Pattern: "x.>"}, time.Minute, false},
	} {
		if got := newOrderer(tc.flt, tc.wait, 10, log) != nil; got != tc.on {
			t.Errorf("newOrderer(%+v, %v): on = %v, want %v", tc.flt, tc.wait, got, tc.on)
		}
	}
}

// TestAssemblerInOrder: ConsumeTx's orderer in front of the assembler
// hands transactions over in their bind's order although one event of the
// first arrived last.
func TestAssemblerInOrder(t *testing.T) {
	var log []string
	var r txRecorder
	a := newTestAssembler(t, r.handle)
	o := newOrderer(Filter{Phase: tracker.PhaseAfterCommit}, time.Minute, 100, slog.New(slog.DiscardHandler))
	withOrder := func(m *fakeMsg, seq, pseq uint64) *fakeMsg {
		m.hdr = nats.Header{wire.HeaderOrder: {fmt.Sprintf("run.%d.%d", seq, pseq)}}
		return m
	}
	// Transactions k1 (2 changes), k2 (1), k3 (1), after_commit events
	// 1..4; k1's second event stored last.
	msgs := []*fakeMsg{
		withOrder(afterCommit("a", "k1", "t", 0, 2, 1, &log), 3, 1),
		withOrder(afterCommit("a", "k2", "t", 0, 1, 2, &log), 7, 3),
		withOrder(afterCommit("a", "k3", "t", 0, 1, 3, &log), 9, 4),
		withOrder(afterCommit("a", "k1", "t", 1, 2, 4, &log), 4, 2),
	}
	for _, m := range msgs {
		dm, err := DecodeJetStreamMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		for _, h := range o.add(held{m: dm, jm: m}, time.Now()) {
			if err := a.add(t.Context(), h.m, h.jm); err != nil {
				t.Fatal(err)
			}
		}
	}
	want := []string{"a/k1 part=0 partial=false [0 1]", "a/k2 part=0 partial=false [0]", "a/k3 part=0 partial=false [0]"}
	if !slices.Equal(r.txs, want) {
		t.Fatalf("transactions %v, want %v", r.txs, want)
	}
}
