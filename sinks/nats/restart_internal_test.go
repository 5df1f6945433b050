package nats

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/trackerd/trackerd/sinks/nats/natsserver"
	"github.com/trackerd/trackerd/tracker"
)

// TestIntegrationRestart stops the (embedded) server under a publishing
// lane: Publish blocks once the window is full, nothing more is acked, and
// once the server is back with the same store every event is stored once,
// in order.
func TestIntegrationRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	dir := t.TempDir()
	e, err := natsserver.Start(t.Context(), natsserver.Options{Addr: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	url := e.ClientURL()
	_, port, _ := net.SplitHostPort(url[len("nats://"):])

	nc, err := Connect(t.Context(), url, ConnectOptions{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	const window = 256
	var logs logBuffer
	s, err := New(t.Context(), nc, Options{Prefix: "restart", MaxInflight: window, AckTimeout: 300 * time.Millisecond, Logger: logs.logger()})
	if err != nil {
		t.Fatal(err)
	}
	var rec ackRecorder
	lane, err := s.OpenLane(t.Context(), "b", rec.acked)
	if err != nil {
		t.Fatal(err)
	}
	gen := eventSeq{bind: "b", txSize: 5}
	var ids []string
	publish := func(n int) {
		for range n {
			ev := gen.next()
			ids = append(ids, ev.ID)
			if err := lane.Publish(t.Context(), ev); err != nil {
				t.Errorf("Publish %d: %v", ev.LaneSeq, err)
				return
			}
		}
	}
	publish(1000)
	eventually(t, 10*time.Second, "first 1000 acked", func() bool { return rec.last() == 1000 })

	if err := e.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		publish(2000)
	}()
	eventually(t, 10*time.Second, "window full while the server is down", func() bool { return s.Stats().InFlight == window })
	select {
	case <-done:
		t.Fatal("Publish did not block with the window full and the server down")
	case <-time.After(100 * time.Millisecond):
	}
	// Stay down until the lane has given up on its in-flight messages.
	eventually(t, 10*time.Second, "the lane noticing the failure", func() bool { return logs.contains("publish failed") })
	if got := rec.last(); got != 1000 {
		t.Fatalf("acked %d while the server was down, want 1000", got)
	}
	if s.Ready() {
		t.Error("Ready = true while the server is down")
	}

	e2, err := natsserver.Start(t.Context(), natsserver.Options{Addr: "127.0.0.1:" + port, StoreDir: dir})
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	t.Cleanup(func() { _ = e2.Shutdown(context.Background()) })
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("publishing did not resume after the restart")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := lane.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if got := rec.last(); got != 3000 {
		t.Fatalf("last acked = %d, want 3000", got)
	}
	rec.check(t)
	got := streamIDs(t, nc, DefaultStreamName)
	if !slices.Equal(got, ids) {
		t.Fatalf("stream holds %d messages; want the %d published, once each, in order", len(got), len(ids))
	}
	// Whether anything had to be sent again depends on what the dying
	// server had read; nats.go's reconnect buffer carries the rest.
	t.Logf("stats: %+v", s.Stats())
}

// TestIntegrationStartBeforeNATS: trackerd starts while NATS is down, and
// publishes once it comes up.
func TestIntegrationStartBeforeNATS(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var logs logBuffer
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	nc, err := Connect(ctx, "nats://"+addr, ConnectOptions{Logger: logs.logger()})
	if err != nil {
		t.Fatalf("Connect with the server down: %v", err)
	}
	t.Cleanup(nc.Close)
	if nc.IsConnected() {
		t.Fatal("connected to a server that is not there")
	}
	s, err := New(ctx, nc, Options{Prefix: "late", Logger: logs.logger()})
	if err != nil {
		t.Fatalf("New with the server down: %v", err)
	}
	kv, err := NewKVStore(ctx, nc, "late_checkpoints")
	if err != nil {
		t.Fatalf("NewKVStore with the server down: %v", err)
	}
	var rec ackRecorder
	lane, err := s.OpenLane(ctx, "b", rec.acked)
	if err != nil {
		t.Fatal(err)
	}
	published := make(chan error, 1)
	go func() {
		gen := eventSeq{bind: "b", txSize: 2}
		for range 10 {
			if err := lane.Publish(t.Context(), gen.next()); err != nil {
				published <- err
				return
			}
		}
		published <- nil
	}()
	time.Sleep(50 * time.Millisecond) // let Publish find NATS down; it must wait, not fail
	select {
	case err := <-published:
		t.Fatalf("Publish returned %v before NATS was up", err)
	default:
	}
	startEmbeddedAt(t, addr)
	if err := <-published; err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer ccancel()
	if err := lane.Close(cctx); err != nil {
		t.Fatal(err)
	}
	if rec.last() != 10 {
		t.Fatalf("acked %d, want 10", rec.last())
	}
	if _, err := kv.Save(cctx, "b.k", tracker.Checkpoint{Position: "1"}); err != nil {
		t.Fatalf("KV store after NATS came up: %v", err)
	}
	if !logs.contains("NATS is not reachable") {
		t.Errorf("no warning that NATS was unreachable in:\n%s", logs.String())
	}
}

func startEmbeddedAt(t *testing.T, addr string) *natsserver.Server {
	t.Helper()
	e, err := natsserver.Start(t.Context(), natsserver.Options{Addr: addr, StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Shutdown(context.Background()) })
	return e
}
