package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/trackerd/trackerd/internal/wiretest"
	"github.com/trackerd/trackerd/tracker"
)

var update = flag.Bool("update", false, "rewrite testdata/events/*.golden from the test cases")

// valid replaces invalid UTF-8 as EncodeEvent does.
func valid(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// sdkEvent builds ev as a CloudEvent with sdk-go, the reference encoder.
func sdkEvent(tb testing.TB, ev *tracker.Event) *event.Event {
	e, err := buildSDKEvent(ev)
	if err != nil {
		tb.Fatalf("sdk-go: %v", err)
	}
	return e
}

func buildSDKEvent(ev *tracker.Event) (*event.Event, error) {
	if ev.Lifecycle != nil {
		return buildSDKLifecycle(ev)
	}
	c := ev.Change
	e := event.New()
	ctx := e.Context
	op := string(c.Op)
	if ev.Phase == tracker.PhaseRollback {
		op = "rollback"
	}
	errs := []error{
		ctx.SetID(valid(ev.ID)),
		ctx.SetSource(Source(c.Bind, c.Origin)),
		ctx.SetType(valid(TypePrefix + string(ev.Phase))),
		ctx.SetDataContentType(DataContentType),
		ctx.SetExtension(ExtBind, valid(c.Bind)),
		ctx.SetExtension(ExtOp, valid(op)),
		ctx.SetExtension(ExtPos, valid(c.Pos)),
		ctx.SetExtension(ExtTxID, valid(c.TxID)),
		ctx.SetExtension(ExtTxSeq, strconv.Itoa(c.Seq)),
	}
	if ev.Phase != tracker.PhaseRollback || c.Schema != "" || c.Table != "" {
		errs = append(errs, ctx.SetSubject(valid(c.Schema+"."+c.Table)))
	}
	if !c.CommitTime.IsZero() {
		errs = append(errs, ctx.SetTime(c.CommitTime))
	}
	if ev.Phase == tracker.PhaseAfterCommit {
		errs = append(errs, ctx.SetExtension(ExtTxTotal, strconv.Itoa(ev.TxTotal)))
	}
	if ev.Snapshot != "" {
		errs = append(errs, ctx.SetExtension(ExtSnapshot, valid(ev.Snapshot)))
	}
	// SetData would base64 a []byte: the data is pre-encoded JSON.
	e.DataEncoded = EventData(ev)
	return &e, errors.Join(errs...)
}

// buildSDKLifecycle builds a snapshot lifecycle event with sdk-go.
func buildSDKLifecycle(ev *tracker.Event) (*event.Event, error) {
	l := ev.Lifecycle
	e := event.New()
	ctx := e.Context
	errs := []error{
		ctx.SetID(valid(ev.ID)),
		ctx.SetSource(Source(ev.Change.Bind, ev.Change.Origin)),
		ctx.SetType(valid(LifecycleTypePrefix + l.Type)),
		ctx.SetDataContentType(DataContentType),
		ctx.SetExtension(ExtBind, valid(ev.Change.Bind)),
		ctx.SetExtension(ExtSnapshot, valid(l.Snapshot)),
	}
	if l.Table != "" {
		errs = append(errs, ctx.SetSubject(valid(l.Table)))
	}
	if !l.Time.IsZero() {
		errs = append(errs, ctx.SetTime(l.Time))
	}
	e.DataEncoded = EventData(ev)
	return &e, errors.Join(errs...)
}

// sdkEncode is what sdk-go's event encoder writes for ev.
func sdkEncode(tb testing.TB, ev *tracker.Event) []byte {
	tb.Helper()
	b, err := sdkEvent(tb, ev).MarshalJSON()
	if err != nil {
		tb.Fatalf("sdk-go marshal: %v", err)
	}
	return b
}

func TestEncodeEventMatchesSDK(t *testing.T) {
	for _, tc := range wiretest.Events() {
		t.Run(tc.Name, func(t *testing.T) {
			got := EncodeEvent(nil, tc.Ev)
			want := sdkEncode(t, tc.Ev)
			if !bytes.Equal(got, want) {
				t.Fatalf("EncodeEvent differs from sdk-go:\n got %s\nwant %s", got, want)
			}
			if !json.Valid(got) {
				t.Fatalf("EncodeEvent wrote invalid JSON: %s", got)
			}
			// sdk-go's structured format (json.Marshal: HTML-escaped) is
			// the same event.
			viaFormat, err := format.JSON.Marshal(sdkEvent(t, tc.Ev))
			if err != nil {
				t.Fatal(err)
			}
			var a, b event.Event
			if err := format.JSON.Unmarshal(got, &a); err != nil {
				t.Fatalf("sdk-go cannot read EncodeEvent's output: %v", err)
			}
			if err := format.JSON.Unmarshal(viaFormat, &b); err != nil {
				t.Fatal(err)
			}
			if a.Context.String() != b.Context.String() {
				t.Fatalf("decoded attributes differ:\n%s\n%s", a.Context, b.Context)
			}
			var da, db any
			if err := json.Unmarshal(a.Data(), &da); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(b.Data(), &db); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(da, db) {
				t.Fatalf("decoded data differ:\n%s\n%s", a.Data(), b.Data())
			}
		})
	}
}

// FuzzEncodeEvent holds EncodeEvent to sdk-go's output for any strings.
func FuzzEncodeEvent(f *testing.F) {
	for _, tc := range wiretest.Events() {
		c := tc.Ev.Change
		f.Add(string(tc.Ev.Phase), tc.Ev.ID, c.Bind, c.Schema, c.Table, string(c.Op), c.TxID, c.Pos, tc.Ev.Snapshot, c.Seq, tc.Ev.TxTotal, c.CommitTime.UnixNano())
	}
	f.Fuzz(func(t *testing.T, phase, id, bind, schema, table, op, txid, pos, snapshot string, seq, total int, nanos int64) {
		ph := tracker.Phase(phase) // any text: EncodeEvent must still match
		if strings.TrimSpace(valid(id)) == "" {
			id = "x" // sdk-go refuses an empty id; so does the lane
		}
		var ct time.Time
		if nanos != 0 {
			ct = time.Unix(0, nanos)
		}
		c := &tracker.Change{Bind: bind, Op: tracker.Op(op), Schema: schema, Table: table, TxID: txid, Pos: pos, Seq: seq, CommitTime: ct,
			After: tracker.Row{Names: []string{table}, Values: []json.RawMessage{tracker.AppendJSONString(nil, schema)}}}
		ev := &tracker.Event{Phase: ph, Change: c, ID: id, TxTotal: total, Snapshot: snapshot}
		got := EncodeEvent(nil, ev)
		if want := sdkEncode(t, ev); !bytes.Equal(got, want) {
			t.Fatalf("EncodeEvent differs from sdk-go:\n got %q\nwant %q", got, want)
		}
		if !json.Valid(got) {
			t.Fatalf("invalid JSON: %q", got)
		}
		// The same strings as a lifecycle event (op as its type, the
		// table as its subject).
		l := &tracker.Lifecycle{Type: op, Bind: bind, Snapshot: snapshot, Table: table, Error: schema, Time: ct}
		lev := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: &tracker.Change{Bind: bind, Origin: txid}, ID: id, Lifecycle: l}
		got = EncodeEvent(nil, lev)
		if want := sdkEncode(t, lev); !bytes.Equal(got, want) {
			t.Fatalf("lifecycle: EncodeEvent differs from sdk-go:\n got %q\nwant %q", got, want)
		}
		if !json.Valid(got) {
			t.Fatalf("lifecycle: invalid JSON: %q", got)
		}
	})
}

func TestSource(t *testing.T) {
	tests := []struct{ bind, origin, want string }{
		{"default", "9f86d081884c7d65", "/trackerd/default/9f86d081884c7d65"},
		{"default", "", "/trackerd/default"},
		{"shop eu", "o", "/trackerd/shop%20eu/o"},
		{"a/b?c#d%e", "a/b", "/trackerd/a%2Fb%3Fc%23d%25e/a%2Fb"},
		{"ä", "", "/trackerd/%C3%A4"},
		{"x=1&y:@+$", "", "/trackerd/x=1&y:@+$"},
		{"", "", "/trackerd/"},
	}
	for _, tc := range tests {
		t.Run(tc.bind+"/"+tc.origin, func(t *testing.T) {
			if got := Source(tc.bind, tc.origin); got != tc.want {
				t.Errorf("Source(%q, %q) = %q, want %q", tc.bind, tc.origin, got, tc.want)
			}
			// sdk-go parses and prints it back unchanged.
			e := event.New()
			if err := e.Context.SetSource(Source(tc.bind, tc.origin)); err != nil {
				t.Fatal(err)
			}
			if got := e.Source(); got != tc.want {
				t.Errorf("sdk-go source = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestRollbackDataDecodes(t *testing.T) {
	for _, tc := range wiretest.Events() {
		if tc.Ev.Phase != tracker.PhaseRollback {
			continue
		}
		t.Run(tc.Name, func(t *testing.T) {
			var ce struct {
				Data RollbackData `json:"data"`
			}
			if err := json.Unmarshal(EncodeEvent(nil, tc.Ev), &ce); err != nil {
				t.Fatal(err)
			}
			d, c := ce.Data, tc.Ev.Change
			if d.Op != "rollback" || d.Bind != c.Bind || d.TxKey != c.TxKey || d.TxID != c.TxID || d.Schema != c.Schema || d.Table != c.Table {
				t.Errorf("decoded %+v from change %+v", d, c)
			}
			if r := tc.Ev.Retract; r != nil && (d.SubTx != r.SubTx || !slices.Equal(d.Ranges, r.Ranges)) {
				t.Errorf("decoded retraction %+v, want %+v", d.Retraction, *r)
			}
		})
	}
}

// TestGoldenEvents holds the wire format to testdata/events/*.golden: the
// change, and the exact subject, headers and payload of its message. Run
// with -update to rewrite them after a deliberate contract change.
func TestGoldenEvents(t *testing.T) {
	subjects, err := NewSubjects("trackerd", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range wiretest.Events() {
		t.Run(tc.Name, func(t *testing.T) {
			var b bytes.Buffer
			fmt.Fprintf(&b, "# %s: the change and the exact message trackerd publishes for it.\n", tc.Name)
			fmt.Fprintf(&b, "-- event --\nphase: %s\nid: %s\ntxtotal: %d\n", tc.Ev.Phase, tc.Ev.ID, tc.Ev.TxTotal)
			if tc.Ev.Retract != nil {
				r, _ := json.Marshal(tc.Ev.Retract)
				fmt.Fprintf(&b, "retract: %s\n", r)
			}
			if tc.Ev.Snapshot != "" {
				fmt.Fprintf(&b, "snapshot: %s\n", tc.Ev.Snapshot)
			}
			if l := tc.Ev.Lifecycle; l != nil {
				fmt.Fprintf(&b, "lifecycle: %s\n", EventData(tc.Ev))
			} else {
				fmt.Fprintf(&b, "change: %s\n", tc.Ev.Change.AppendJSON(nil))
			}
			fmt.Fprintf(&b, "-- subject --\n%s\n", subjects.AppendEvent(nil, tc.Ev))
			fmt.Fprintf(&b, "-- headers --\n%s: %s\n%s: %s\n", HeaderContentType, ContentType, HeaderMsgID, tc.Ev.ID)
			fmt.Fprintf(&b, "-- payload --\n%s\n", EncodeEvent(nil, tc.Ev))
			path := filepath.Join("testdata", "events", tc.Name+".golden")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestGoldenEvents -update to create it)", err)
			}
			if !bytes.Equal(b.Bytes(), want) {
				t.Errorf("%s differs (run with -update after a deliberate change):\n got:\n%s\nwant:\n%s", path, b.Bytes(), want)
			}
		})
	}
}

func BenchmarkEncodeEvent(b *testing.B) {
	for _, tc := range wiretest.Events()[:2] {
		ev := tc.Ev
		b.Run("handrolled/"+tc.Name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = EncodeEvent(buf[:0], ev)
			}
			b.SetBytes(int64(len(buf)))
		})
		b.Run("sdk-go/"+tc.Name, func(b *testing.B) {
			b.ReportAllocs()
			var n int
			for b.Loop() {
				e, err := buildSDKEvent(ev)
				if err != nil {
					b.Fatal(err)
				}
				buf, err := e.MarshalJSON()
				if err != nil {
					b.Fatal(err)
				}
				n = len(buf)
			}
			b.SetBytes(int64(n))
		})
	}
}
