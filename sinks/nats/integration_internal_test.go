package nats

import (
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/trackerd/trackerd/tracker"
)

// newTestSink makes a JetStream sink with its own stream and prefix.
func newTestSink(t *testing.T, nc *natsgo.Conn, o Options) *Sink {
	t.Helper()
	name := uniqueName(t)
	if o.Prefix == "" {
		o.Prefix = "t_" + name
	}
	if o.Stream.Name == "" {
		o.Stream.Name = name
	}
	cleanupStream(t, nc, o.Stream.Name)
	s, err := New(t.Context(), nc, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// TestIntegrationLaneOrder publishes 100k events through one lane and
// checks the acked watermark and the stream: every event stored once, in
// LaneSeq order.
func TestIntegrationLaneOrder(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			s := newTestSink(t, nc, Options{MaxInflight: 1024})
			var rec ackRecorder
			lane, err := s.OpenLane(t.Context(), "orders db", rec.acked)
			if err != nil {
				t.Fatal(err)
			}
			const n = 100_000
			gen := eventSeq{bind: "orders db", txSize: 10}
			want := make([]string, 0, n)
			for range n {
				ev := gen.next()
				want = append(want, ev.ID)
				if err := lane.Publish(t.Context(), ev); err != nil {
					t.Fatalf("Publish %d: %v", ev.LaneSeq, err)
				}
			}
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			if err := lane.Close(ctx); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := rec.last(); got != n {
				t.Fatalf("last acked = %d, want %d", got, n)
			}
			rec.check(t)
			got := streamIDs(t, nc, s.o.Stream.Name)
			if len(got) != n {
				t.Fatalf("stream holds %d messages, want %d", len(got), n)
			}
			for i := range got {
				if got[i] != want[i] {
					t.Fatalf("stream message %d has id %s, want %s", i+1, got[i], want[i])
				}
			}
			if !s.Ready() {
				t.Error("Ready = false on a working sink")
			}
			st := s.Stats()
			if st.Published != n || st.Acked != n || st.InFlight != 0 {
				t.Errorf("Stats = %+v, want %d published and acked, none in flight", st, n)
			}
		})
	}
}

// TestIntegrationLanesShareConnection runs three lanes at once on one sink:
// each bind's events are stored once and in its own order.
func TestIntegrationLanesShareConnection(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			s := newTestSink(t, nc, Options{MaxInflight: 128})
			const perLane = 10_000
			binds := []string{"a", "b", "c"}
			want := make([][]string, len(binds)) // want[i] is written by lane i's goroutine only
			errs := make(chan error, len(binds))
			recs := make([]*ackRecorder, len(binds))
			for i, bind := range binds {
				recs[i] = &ackRecorder{}
				lane, err := s.OpenLane(t.Context(), bind, recs[i].acked)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					gen := eventSeq{bind: bind, txSize: 3}
					for range perLane {
						ev := gen.next()
						want[i] = append(want[i], ev.ID)
						if err := lane.Publish(t.Context(), ev); err != nil {
							errs <- err
							return
						}
					}
					ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
					defer cancel()
					errs <- lane.Close(ctx)
				}()
			}
			for range binds {
				if err := <-errs; err != nil {
					t.Fatal(err)
				}
			}
			for i, r := range recs {
				if r.last() != perLane {
					t.Errorf("lane %s: last acked %d, want %d", binds[i], r.last(), perLane)
				}
				r.check(t)
			}
			got := map[string][]string{}
			for _, id := range streamIDs(t, nc, s.o.Stream.Name) {
				bind, _, _ := strings.Cut(id, "/")
				got[bind] = append(got[bind], id)
			}
			for i, bind := range binds {
				if !slices.Equal(got[bind], want[i]) {
					t.Errorf("bind %s: the stream holds %d of its events, not the %d published in order", bind, len(got[bind]), len(want[i]))
				}
			}
		})
	}
}

// TestIntegrationStreamSetup covers the stream checks of New.
func TestIntegrationStreamSetup(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name     string
				prefix   string   // {n} is the stream's name
				existing []string // subjects of a stream made before New; nil: none
				window   time.Duration
				wantErr  string
			}{
				{name: "ok - created when missing", prefix: "{n}"},
				{name: "ok - exact subjects", prefix: "{n}", existing: []string{"{n}.>"}},
				{name: "ok - wider wildcard, other window", prefix: "{n}.x", existing: []string{"other_{n}.a", "{n}.>"}, window: time.Minute},
				{name: "ok - star then rest", prefix: "{n}.x.y", existing: []string{"{n}.*.>"}},
				{name: "error - narrower subjects", prefix: "{n}", existing: []string{"{n}.after_commit.>"}, wantErr: "do not capture"},
				{name: "error - one token only", prefix: "{n}", existing: []string{"{n}.*"}, wantErr: "do not capture"},
				{name: "error - unrelated", prefix: "{n}", existing: []string{"unrelated_{n}.>"}, wantErr: "do not capture"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					name := uniqueName(t)
					prefix := strings.ReplaceAll(tc.prefix, "{n}", name)
					cleanupStream(t, nc, name)
					if tc.existing != nil {
						subjects := make([]string, len(tc.existing))
						for i, s := range tc.existing {
							subjects[i] = strings.ReplaceAll(s, "{n}", name)
						}
						cfg := jetstream.StreamConfig{Name: name, Subjects: subjects, Storage: jetstream.MemoryStorage, Duplicates: tc.window}
						if _, err := js.CreateStream(t.Context(), cfg); err != nil {
							t.Fatalf("create stream: %v", err)
						}
					}
					s, err := New(t.Context(), nc, Options{Prefix: prefix, Stream: StreamConfig{Name: name}})
					if tc.wantErr != "" {
						if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, tracker.ErrConfig) {
							t.Fatalf("New: err = %v, want a configuration error containing %q", err, tc.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("New: %v", err)
					}
					st, err := js.Stream(t.Context(), name)
					if err != nil {
						t.Fatalf("stream: %v", err)
					}
					cfg := st.CachedInfo().Config
					if tc.existing == nil {
						if cfg.Storage != jetstream.FileStorage || cfg.Duplicates != DefaultDuplicateWindow || len(cfg.Subjects) != 1 || cfg.Subjects[0] != prefix+".>" {
							t.Errorf("created stream: storage %v, window %v, subjects %v", cfg.Storage, cfg.Duplicates, cfg.Subjects)
						}
					} else if cfg.Storage != jetstream.MemoryStorage {
						t.Errorf("existing stream changed: storage %v", cfg.Storage)
					}
					// It publishes into it.
					var rec ackRecorder
					lane, err := s.OpenLane(t.Context(), "b", rec.acked)
					if err != nil {
						t.Fatal(err)
					}
					gen := eventSeq{bind: "b", txSize: 1}
					if err := lane.Publish(t.Context(), gen.next()); err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
					defer cancel()
					if err := lane.Close(ctx); err != nil {
						t.Fatal(err)
					}
					if rec.last() != 1 {
						t.Fatalf("acked = %d, want 1", rec.last())
					}
				})
			}
		})
	}
}

// TestIntegrationStreamDeleted: a stream deleted under a running lane is
// created again, and publishing goes on.
func TestIntegrationStreamDeleted(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			var logs logBuffer
			s := newTestSink(t, nc, Options{Logger: logs.logger(), AckTimeout: time.Second})
			var rec ackRecorder
			lane, err := s.OpenLane(t.Context(), "b", rec.acked)
			if err != nil {
				t.Fatal(err)
			}
			gen := eventSeq{bind: "b", txSize: 2}
			var ids []string
			publish := func(n int) {
				for range n {
					ev := gen.next()
					ids = append(ids, ev.ID)
					if err := lane.Publish(t.Context(), ev); err != nil {
						t.Fatal(err)
					}
				}
			}
			publish(100)
			eventually(t, 10*time.Second, "100 acked", func() bool { return rec.last() == 100 })
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			if err := js.DeleteStream(t.Context(), s.o.Stream.Name); err != nil {
				t.Fatal(err)
			}
			publish(100)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			if err := lane.Close(ctx); err != nil {
				t.Fatalf("Close: %v\n%s", err, logs.String())
			}
			if rec.last() != 200 {
				t.Fatalf("acked %d, want 200", rec.last())
			}
			if got := streamIDs(t, nc, s.o.Stream.Name); !slices.Equal(got, ids[100:]) {
				t.Fatalf("the new stream holds %d events, want the 100 published after the deletion, in order", len(got))
			}
			// Issue 9, M2: the recreation is a warning, counted, and names
			// the events that went with the old stream.
			out := logs.String()
			for _, want := range []string{
				"level=WARN msg=\"the stream was deleted while trackerd ran, and is created again",
				"level=WARN msg=\"events of this bind acknowledged by the deleted stream are gone with it",
				"events=100 first_event=" + ids[0] + " last_event=" + ids[99] + " ",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("log lacks %q:\n%s", want, out)
				}
			}
			if st := s.Stats(); st.StreamRecreated != 1 {
				t.Errorf("Stats.StreamRecreated = %d, want 1", st.StreamRecreated)
			}
		})
	}
}

func TestIntegrationCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: integration test")
	}
	for _, srv := range servers(t) {
		t.Run(srv.name, func(t *testing.T) {
			srv.need(t)
			nc := dial(t, srv.url)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			name := uniqueName(t)
			cleanupStream(t, nc, name)
			wrong := uniqueName(t)
			cleanupStream(t, nc, wrong)
			if _, err := js.CreateStream(t.Context(), jetstream.StreamConfig{Name: wrong, Subjects: []string{wrong + ".other.>"}, Storage: jetstream.MemoryStorage}); err != nil {
				t.Fatal(err)
			}
			file, mem := uniqueName(t), uniqueName(t)
			cleanupStream(t, nc, file)
			cleanupStream(t, nc, mem)
			for _, c := range []jetstream.StreamConfig{
				{Name: file, Subjects: []string{file + ".>"}, Storage: jetstream.FileStorage},
				{Name: mem, Subjects: []string{mem + ".>"}, Storage: jetstream.MemoryStorage},
			} {
				if _, err := js.CreateStream(t.Context(), c); err != nil {
					t.Fatal(err)
				}
			}
			tests := []struct {
				name string
				o    Options
				want []bool // OK of each result, in order
				fix  string // in the failing (or warning) result's Fix
				warn int    // index of the one warning, -1 for none
			}{
				{"ok - stream missing, to be created with one replica", Options{Prefix: name, Stream: StreamConfig{Name: name}}, []bool{true, true, true, true}, "sync_interval: always", 3},
				{"warn - one replica on file storage (F7)", Options{Prefix: file, Stream: StreamConfig{Name: file}}, []bool{true, true, true, true}, "STREAM_REPLICAS=3", 3},
				{"warn - memory storage", Options{Prefix: mem, Stream: StreamConfig{Name: mem}}, []bool{true, true, true, true}, "file-storage", 3},
				{"error - stream does not capture", Options{Prefix: wrong, Stream: StreamConfig{Name: wrong}}, []bool{true, true, false}, "add " + wrong + ".>", -1},
				{"ok - core", Options{Mode: Core}, []bool{true}, "", -1},
				{"error - bad option", Options{OversizePolicy: "shrink"}, []bool{false}, "correct", -1},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					res := Check(t.Context(), nc, tc.o)
					if len(res) != len(tc.want) {
						t.Fatalf("Check = %+v, want %d results", res, len(tc.want))
					}
					for i, r := range res {
						if r.OK != tc.want[i] || r.Name == "" || r.Detail == "" {
							t.Errorf("result %d = %+v, want OK %v with a name and detail", i, r, tc.want[i])
						}
						if (!r.OK || r.Warn) && !strings.Contains(r.Fix, tc.fix) {
							t.Errorf("result %d fix = %q, want %q", i, r.Fix, tc.fix)
						}
						if r.Warn != (i == tc.warn) {
							t.Errorf("result %d = %+v: warn %v, want %v", i, r, r.Warn, i == tc.warn)
						}
					}
				})
			}
		})
	}
	t.Run("not connected", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		nc, err := Connect(t.Context(), "nats://"+addr, ConnectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		res := Check(ctx, nc, Options{})
		if len(res) != 1 || res[0].OK || res[0].Fix == "" {
			t.Fatalf("Check = %+v, want one failed connection result with a fix", res)
		}
	})
}
