package nats

import (
	"context"
	"strconv"
	"syscall"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

// benchEvent makes the event of one iteration: a small insert whose data
// is encoded once, as the tracker shares it between the phases.
type benchEvent struct {
	ev   tracker.Event
	id   []byte
	seq  uint64
	bind string
}

func newBenchEvent(bind string) *benchEvent {
	c := testChange(bind, 1, 0)
	return &benchEvent{bind: bind, ev: tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, Data: c.AppendJSON(nil), TxTotal: 1}}
}

func (b *benchEvent) next() *tracker.Event {
	b.seq++
	b.id = append(b.id[:0], b.bind...)
	b.id = append(b.id, "/lsn-"...)
	b.id = strconv.AppendUint(b.id, b.seq, 16)
	b.id = append(b.id, "/0/after_commit"...)
	b.ev.ID = string(b.id)
	b.ev.LaneSeq = b.seq
	return &b.ev
}

// BenchmarkLanePublish measures a lane publishing to the embedded server
// with every ack awaited: events/s includes draining the acks at the end,
// and cpu-µs/event is the process's CPU time (the lane and the embedded
// server) per event, steadier than events/s on a busy machine. Batched: a
// stream that allows fast batch publishing (trackerd's default on 2.14+);
// one-by-one: a stream without it.
func BenchmarkLanePublish(b *testing.B) {
	for _, mode := range []bool{batched, oneByOne} {
		b.Run(modeName(mode), func(b *testing.B) {
			e := startEmbedded(b, "")
			nc := dial(b, e.ClientURL())
			if mode == oneByOne {
				js, _ := jetstream.New(nc)
				if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "BENCH", Subjects: []string{"bench.>"},
					Storage: jetstream.FileStorage, MaxMsgs: 200_000, Duplicates: DefaultDuplicateWindow}); err != nil {
					b.Fatal(err)
				}
			}
			s, err := New(context.Background(), nc, Options{Prefix: "bench", Stream: StreamConfig{Name: "BENCH", MaxMsgs: 200_000}})
			if err != nil {
				b.Fatal(err)
			}
			if s.batched.Load() != mode {
				b.Fatalf("publishing %s, want %s", modeName(s.batched.Load()), modeName(mode))
			}
			lane, err := s.OpenLane(context.Background(), "default", nil)
			if err != nil {
				b.Fatal(err)
			}
			gen := newBenchEvent("default")
			ctx := context.Background()
			b.ReportAllocs()
			start, cpu0 := time.Now(), cpuTime()
			for b.Loop() {
				if err := lane.Publish(ctx, gen.next()); err != nil {
					b.Fatal(err)
				}
			}
			if err := lane.Close(ctx); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(gen.seq)/time.Since(start).Seconds(), "events/s")
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(gen.seq), "cpu-µs/event")
			if st := s.Stats(); st.Acked != gen.seq {
				b.Fatalf("acked %d of %d", st.Acked, gen.seq)
			}
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkJetStreamAsyncBaseline is the alternative the lane was measured
// against: nats.go's jetstream PublishMsgAsync, with a goroutine consuming
// the ack futures in order, and the same messages.
func BenchmarkJetStreamAsyncBaseline(b *testing.B) {
	e := startEmbedded(b, "")
	nc := dial(b, e.ClientURL())
	s, err := New(context.Background(), nc, Options{Prefix: "bench", Stream: StreamConfig{Name: "BENCH", MaxMsgs: 200_000}})
	if err != nil {
		b.Fatal(err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(DefaultMaxInflight))
	if err != nil {
		b.Fatal(err)
	}
	futures := make(chan jetstream.PubAckFuture, DefaultMaxInflight)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Error(err)
			}
		}
	}()
	gen := newBenchEvent("default")
	var subj, buf []byte
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		ev := gen.next()
		subj = s.subjects.Append(subj[:0], ev.Phase, ev.Change)
		buf = wire.EncodeEvent(buf[:0], ev)
		m := &natsgo.Msg{Subject: string(subj), Data: append([]byte(nil), buf...),
			Header: natsgo.Header{wire.HeaderContentType: {wire.ContentType}, wire.HeaderMsgID: {ev.ID}}}
		// Without a long stall wait, nats.go fails the publish after 200 ms
		// at the pending limit (ErrTooManyStalledMsgs) instead of blocking.
		f, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute))
		if err != nil {
			b.Fatal(err)
		}
		futures <- f
	}
	close(futures)
	<-done
	b.ReportMetric(float64(gen.seq)/time.Since(start).Seconds(), "events/s")
}
