package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/trackerd/trackerd/sources/internal/srckit"
	"github.com/trackerd/trackerd/tracker"
)

// panickyTypes is a typeResolver standing in for a decoding bug: its plan
// of text is nil (which plan must never return), so encoding any text value
// panics with a nil dereference; with planPanics set the look-up itself
// panics.
type panickyTypes struct {
	builtin    *builtinTypes
	planPanics bool
}

func (p *panickyTypes) plan(oid uint32) *colType {
	if oid == pgtype.TextOID {
		if p.planPanics {
			panic("type look-up bug")
		}
		return nil
	}
	return p.builtin.plan(oid)
}

func (p *panickyTypes) forget(oid uint32)                  { p.builtin.forget(oid) }
func (p *panickyTypes) primaryKey(uint32) ([]string, bool) { return nil, false }

// TestDecodingPanicStopsTheBind: a panic while decoding a message — in a
// value's encoding or in a type look-up — does not kill the process: the
// stream ends with a permanent error (Run does not reconnect and retry the
// same bytes forever) that says it was a panic and names the message's
// position, and nothing of the message reaches the handler.
func TestDecodingPanicStopsTheBind(t *testing.T) {
	for _, tc := range []struct {
		name       string
		planPanics bool
		at         string
		msgs       [][]byte
	}{
		{name: "value encoding", at: "0/1030", msgs: [][]byte{
			xlog(0x1010, mBegin(0x2000, 7)),
			xlog(0x1020, relUsers(0, 'd')),
			xlog(0x1030, mInsert(0, 100, tup("t:1", "t:ann", "n"))),
		}},
		{name: "type look-up", planPanics: true, at: "0/1020", msgs: [][]byte{
			xlog(0x1010, mBegin(0x2000, 7)),
			xlog(0x1020, relUsers(0, 'd')),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				conn, f := newStreamingPair(t)
				s := testSource(t)
				s.raiseConfirmed(0x100)
				var mu sync.Mutex
				var got []tracker.Record
				h := tracker.HandlerFunc(func(_ context.Context, r tracker.Record) error {
					mu.Lock()
					got = append(got, r)
					mu.Unlock()
					return nil
				})
				types := &panickyTypes{builtin: newBuiltinTypes(), planPanics: tc.planPanics}
				done := make(chan error, 1)
				go func() { done <- s.stream(t.Context(), conn, &runState{carry: newCarried()}, types, h, false) }()
				go f.send(tc.msgs...)
				err := <-done
				if err == nil || !srckit.IsPermanent(err) {
					t.Fatalf("stream = %v, want a permanent error", err)
				}
				if !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), "panic") || !strings.Contains(err.Error(), "at "+tc.at) {
					t.Fatalf("stream = %v, want a decoding error saying it panicked, at %s", err, tc.at)
				}
				t.Logf("stream stopped: %v", err)
				mu.Lock()
				defer mu.Unlock()
				for _, r := range got {
					if r.Kind == tracker.RecordChange {
						t.Fatalf("a change of the message that panicked reached the handler: %+v", r.Change)
					}
				}
			})
		})
	}
}

// TestDecoderAfterPanic: the decoder that recovered from a panic reports no
// half-made records, and decodes the next message as usual.
func TestDecoderAfterPanic(t *testing.T) {
	types := &panickyTypes{builtin: newBuiltinTypes()}
	d := newDecoder(nil, types, 0, false)
	for _, m := range [][]byte{mBegin(0x2000, 7), relUsers(0, 'd')} {
		if err := d.decode(m, 0x10); err != nil {
			t.Fatal(err)
		}
	}
	err := d.decode(mInsert(0, 100, tup("t:1", "t:ann", "n")), 0x20)
	if err == nil || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), "panic") {
		t.Fatalf("decode = %v, want a malformed-message error saying it panicked", err)
	}
	if len(d.out) != 0 || len(d.outPos) != 0 {
		t.Fatalf("%d records left after the panic", len(d.out))
	}
	if err := d.decode(mInsert(0, 100, tup("t:2", "n", "n")), 0x30); err != nil || len(d.out) != 1 || d.out[0].Kind != tracker.RecordChange {
		t.Fatalf("next message: %v, %d records", err, len(d.out))
	}
}
