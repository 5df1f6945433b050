package postgres

import (
	"context"
	"encoding/binary"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/trackerd/trackerd/binds"
	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// statusUpdate is a standby status update as the fake walsender saw it.
type statusUpdate struct {
	at                  time.Time
	write, flush, apply lsn
	reply               bool
}

// fakeWalsender is the server end of a replication connection in
// streaming mode, over net.Pipe (which synctest bubbles can wait on).
type fakeWalsender struct {
	t       *testing.T
	backend *pgproto3.Backend
	mu      sync.Mutex
	updates []statusUpdate
	wmu     sync.Mutex
}

// newStreamingPair returns a client connection in streaming mode and the
// fake server behind it, which records every status update it reads.
func newStreamingPair(t *testing.T) (*pgconn.PgConn, *fakeWalsender) {
	t.Helper()
	srv, cli := net.Pipe()
	t.Cleanup(func() { srv.Close(); cli.Close() })
	cfg, err := pgconn.ParseConfig("host=fake user=fake")
	if err != nil {
		t.Fatal(err)
	}
	cs, err := newConnSettings(binds.Bind{URI: binds.URI{Host: "fake", User: "fake"}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.BuildFrontend, cfg.BuildContextWatcherHandler = cs.repl.BuildFrontend, cs.repl.BuildContextWatcherHandler
	conn, err := pgconn.Construct(&pgconn.HijackedConn{Conn: cli, PID: 1, ParameterStatuses: map[string]string{}, TxStatus: 'I', Config: cfg})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeWalsender{t: t, backend: pgproto3.NewBackend(srv, srv)}
	go f.read()
	return conn, f
}

func (f *fakeWalsender) read() {
	for {
		msg, err := f.backend.Receive()
		if err != nil {
			return
		}
		cd, ok := msg.(*pgproto3.CopyData)
		if !ok || len(cd.Data) != 34 || cd.Data[0] != 'r' {
			continue
		}
		d := cd.Data[1:]
		f.mu.Lock()
		f.updates = append(f.updates, statusUpdate{
			at:    time.Now(),
			write: lsn(binary.BigEndian.Uint64(d)), flush: lsn(binary.BigEndian.Uint64(d[8:])),
			apply: lsn(binary.BigEndian.Uint64(d[16:])), reply: d[32] != 0,
		})
		f.mu.Unlock()
	}
}

func (f *fakeWalsender) seen() []statusUpdate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]statusUpdate(nil), f.updates...)
}

// send writes CopyData messages; it blocks, as TCP would, while the client
// does not read.
func (f *fakeWalsender) send(msgs ...[]byte) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	for _, m := range msgs {
		f.backend.Send(&pgproto3.CopyData{Data: m})
	}
	return f.backend.Flush()
}

func xlog(at lsn, payload []byte) []byte {
	b := wb{'w'}.u64(uint64(at)).u64(uint64(at)).u64(0)
	return append(b, payload...)
}

func keepalive(end lsn, reply bool) []byte {
	r := byte(0)
	if reply {
		r = 1
	}
	return wb{'k'}.u64(uint64(end)).u64(0).u8(r)
}

func testSource(t *testing.T) *Source {
	return &Source{
		b:     binds.Bind{Key: "b", Slot: "s", Publication: "p"},
		log:   slog.New(slog.DiscardHandler),
		hooks: hooks{statusEvery: defaultStatusInterval, fenceGrace: time.Second},
		cs:    &connSettings{},
		major: 15,
	}
}

// TestStreamStatusWhileHandlerBlocks: a handler that blocks for a minute
// stops the reading, but status updates go on every 10 s with the
// confirmed position as flush (never what was merely received).
func TestStreamStatusWhileHandlerBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, f := newStreamingPair(t)
		s := testSource(t)
		s.raiseConfirmed(0x100)
		release := make(chan struct{})
		var handled int
		h := tracker.HandlerFunc(func(ctx context.Context, r tracker.Record) error {
			if r.Kind == tracker.RecordChange {
				handled++
				if handled == 1 {
					select {
					case <-release:
					case <-ctx.Done():
						return ctx.Err()
					}
				}
			}
			return nil
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.stream(ctx, conn, &runState{carry: newCarried()}, nil, h, false) }()

		// A transaction far larger than the client's buffers.
		const rows = 5000
		go func() {
			msgs := [][]byte{xlog(0x1000, mBegin(0x900000, 7)), xlog(0x1000, relUsers(0, 'd'))}
			for i := 0; i < rows; i++ {
				msgs = append(msgs, xlog(lsn(0x2000+i*0x100), mInsert(0, 100, tup("t:1", "t:"+strings.Repeat("x", 300), "n"))))
			}
			msgs = append(msgs, xlog(0x900100, mCommit(0x900000, 0x900100)))
			f.send(msgs...)
		}()

		time.Sleep(65 * time.Second)
		synctest.Wait()
		ups := f.seen()
		if handled != 1 {
			t.Fatalf("%d changes handled while the handler blocks", handled)
		}
		if len(ups) < 7 {
			t.Fatalf("%d status updates in 65 s while the handler blocks, want one every 10 s", len(ups))
		}
		for i, u := range ups {
			if u.flush != 0x100 || u.apply != 0x100 || u.write < u.flush {
				t.Fatalf("update %d: %+v, want flush = apply = the confirmed 0/100", i, u)
			}
			if i > 0 && u.at.Sub(ups[i-1].at) > defaultStatusInterval+tickInterval {
				t.Fatalf("updates %d and %d are %s apart", i-1, i, u.at.Sub(ups[i-1].at))
			}
		}
		if ups[len(ups)-1].write <= 0x1000 {
			t.Fatalf("write position %s does not reflect what was received", formatLSN(ups[len(ups)-1].write))
		}

		// Released, the handler gets every row.
		close(release)
		time.Sleep(time.Second)
		synctest.Wait()
		if handled != rows {
			t.Fatalf("%d rows handled, want %d", handled, rows)
		}
		cancel()
		<-done
	})
}

// TestStreamConfirmAndKeepalive: a Confirm reaches the server within about a
// second; a keepalive asking for a reply gets one at once; an idle keepalive
// becomes a keepalive record.
func TestStreamConfirmAndKeepalive(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, f := newStreamingPair(t)
		s := testSource(t)
		s.raiseConfirmed(0x100)
		var mu sync.Mutex
		var keeps []string
		h := tracker.HandlerFunc(func(ctx context.Context, r tracker.Record) error {
			if r.Kind == tracker.RecordKeepalive {
				mu.Lock()
				keeps = append(keeps, r.Pos)
				mu.Unlock()
			}
			return nil
		})
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- s.stream(ctx, conn, &runState{resume: 0x100, carry: newCarried()}, nil, h, false) }()
		synctest.Wait()
		n := len(f.seen()) // the initial update

		f.send(keepalive(0x500, true))
		synctest.Wait()
		ups := f.seen()
		if len(ups) != n+1 || ups[n].write != 0x500 || ups[n].flush != 0x100 {
			t.Fatalf("after a keepalive asking for a reply: %+v", ups[n:])
		}
		time.Sleep(2 * linger)
		synctest.Wait()
		mu.Lock()
		if len(keeps) != 1 || keeps[0] != "0/500" {
			t.Fatalf("keepalive records %v, want [0/500]", keeps)
		}
		mu.Unlock()

		s.Confirm("0/500")
		time.Sleep(tickInterval + time.Millisecond)
		synctest.Wait()
		ups = f.seen()
		if last := ups[len(ups)-1]; last.flush != 0x500 || last.apply != 0x500 {
			t.Fatalf("a second after Confirm: %+v", last)
		}
		cancel()
		<-done
	})
}

// TestStreamLiveness: a server that goes silent, even to requests for a
// reply, is given up on, so that Run reconnects.
func TestStreamLiveness(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, _ := newStreamingPair(t)
		s := testSource(t)
		s.raiseConfirmed(0x100)
		done := make(chan error, 1)
		go func() {
			done <- s.stream(t.Context(), conn, &runState{carry: newCarried()}, nil, tracker.HandlerFunc(func(context.Context, tracker.Record) error { return nil }), false)
		}()
		began := time.Now()
		err := <-done
		if err == nil || !strings.Contains(err.Error(), "no message from the server") || srckit.IsPermanent(err) {
			t.Fatalf("stream = %v, want a transient liveness error", err)
		}
		if took := time.Since(began); took < 40*time.Second || took > 45*time.Second {
			t.Fatalf("gave up after %s, want about 40 s", took)
		}
	})
}

// TestStreamMalformed: undecodable data ends the stream with a permanent
// error naming the position.
func TestStreamMalformed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		conn, f := newStreamingPair(t)
		s := testSource(t)
		s.raiseConfirmed(0x100)
		done := make(chan error, 1)
		go func() {
			done <- s.stream(t.Context(), conn, &runState{carry: newCarried()}, nil, tracker.HandlerFunc(func(context.Context, tracker.Record) error { return nil }), false)
		}()
		go f.send(xlog(0x1000, mBegin(0x2000, 7)), xlog(0x1010, relUsers(0, 'd')[:9]))
		err := <-done
		if !srckit.IsPermanent(err) || !strings.Contains(err.Error(), "0/1010") || !strings.Contains(err.Error(), "malformed") {
			t.Fatalf("stream = %v, want a permanent error at 0/1010", err)
		}
	})
}
