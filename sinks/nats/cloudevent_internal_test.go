package nats

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
	// SetData would base64 a []byte: the data is pre-encoded JSON.
	e.DataEncoded = eventData(ev)
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

func row(kv ...string) tracker.Row {
	var r tracker.Row
	r.Names = []string{}
	for i := 0; i < len(kv); i += 2 {
		r.Names = append(r.Names, kv[i])
		if kv[i+1] == "<absent>" {
			r.Values = append(r.Values, nil)
		} else {
			r.Values = append(r.Values, json.RawMessage(kv[i+1]))
		}
	}
	return r
}

var commit = time.Date(2024, 5, 1, 12, 30, 45, 123456789, time.FixedZone("CEST", 2*3600))

// eventCases are the events of the golden files and of the comparison with
// sdk-go.
func eventCases() []struct {
	name string
	ev   *tracker.Event
} {
	insert := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: "public", Table: "orders",
		Key:   row("id", "42"),
		After: row("id", "42", "customer", `"Zoë"`, "total", `"19.90"`, "paid", "true", "meta", `{"tags":["a","b"]}`),
		TxID:  "7321", TxKey: "lsn-00000000016B3748", Seq: 0, CommitTime: commit, Pos: "0/16B3748",
	}
	update := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpUpdate, Schema: "public", Table: "orders",
		Key:       row("id", "42"),
		Before:    row("id", "42", "total", `"19.90"`),
		After:     row("id", "42", "total", `"24.50"`, "blob", "<absent>"),
		Unchanged: []string{"blob"},
		TxID:      "7321", TxKey: "lsn-00000000016B3748", Seq: 1, Index: 1, CommitTime: commit, Pos: "0/16B3790",
	}
	mysqlDelete := &tracker.Change{
		Bind: "shop eu", Source: "mariadb", Origin: "9f86d081884c7d65", Op: tracker.OpDelete, Schema: "shop-eu", Table: "order.items",
		Key:    row("order_id", "7", "line", "2"),
		Before: row("order_id", "7", "line", "2", "sku", `"X-1"`),
		TxID:   "0-1-4711", TxKey: "gtid-0-1-4711", Seq: 3, Index: 3, CommitTime: time.Unix(1714566645, 0), Pos: "mysql-bin.000003:8812",
	}
	weird := &tracker.Change{
		Bind: "b/ä\"\\", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: " Ünits\t", Table: "tab\u2028le\x01 ",
		Key:   row("k", `"a\"b"`),
		After: row("k", `"a\"b"`, "html", `"<a href=\"x\">&</a>"`),
		TxID:  "9", TxKey: "lsn-0000000000000001", Seq: 7, Index: 7, Pos: "0/1\n",
	}
	invalid := &tracker.Change{
		Bind: "bad\xffbind", Source: "mysql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: "s\xc3", Table: "t",
		After: row("v", "1"), TxID: "x\xfe", TxKey: "pos-mysql-bin.000001-4", Pos: "p",
	}
	big := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", Op: tracker.OpInsert, Schema: "public", Table: "docs",
		Key:   row("id", "1"),
		After: row("id", "1", "body", strconv.Quote(strings.Repeat("lorem ipsum ", 2000))),
		TxID:  "1", TxKey: "lsn-0000000000000010", CommitTime: commit, Pos: "0/10",
	}
	rollbackTx := &tracker.Change{
		Bind: "default", Source: "postgresql", Origin: "9f86d081884c7d65", TxID: "7400", TxKey: "xid-7400-00000000016C0000", SubTx: "7401", Seq: 12, Index: 12,
	}
	id := func(c *tracker.Change, p tracker.Phase) string {
		return tracker.EventID(c.Bind, c.Origin, c.TxKey, c.Index, p)
	}
	withData := func(c *tracker.Change) []byte { return c.AppendJSON(nil) }
	return []struct {
		name string
		ev   *tracker.Event
	}{
		{"insert-before", &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: insert, ID: id(insert, tracker.PhaseBeforeCommit), Data: withData(insert)}},
		{"insert-after", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: insert, ID: id(insert, tracker.PhaseAfterCommit), TxTotal: 2, Data: withData(insert)}},
		{"update-toast", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: update, ID: id(update, tracker.PhaseAfterCommit), TxTotal: 2}},
		{"mysql-delete-escaped", &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: mysqlDelete, ID: id(mysqlDelete, tracker.PhaseBeforeCommit)}},
		{"non-ascii-control", &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: weird, ID: id(weird, tracker.PhaseBeforeCommit)}},
		{"invalid-utf8", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: invalid, ID: id(invalid, tracker.PhaseAfterCommit), TxTotal: 1}},
		{"big-data", &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: big, ID: id(big, tracker.PhaseAfterCommit), TxTotal: 1}},
		{"rollback-subtx", &tracker.Event{Phase: tracker.PhaseRollback, Change: rollbackTx, ID: id(rollbackTx, tracker.PhaseRollback),
			Retract: &tracker.Retraction{TxKey: rollbackTx.TxKey, SubTx: "7401", Ranges: []tracker.SeqRange{{From: 4, To: 9}, {From: 11, To: 11}}}}},
		{"rollback-whole-no-retract", &tracker.Event{Phase: tracker.PhaseRollback, Change: &tracker.Change{Bind: "default", Source: "postgresql", Schema: "public", Table: "orders", TxID: "8", TxKey: "xid-8-0000000000000001"},
			ID: "default/xid-8-0000000000000001/0/rollback"}},
	}
}

func TestEncodeEventMatchesSDK(t *testing.T) {
	for _, tc := range eventCases() {
		t.Run(tc.name, func(t *testing.T) {
			got := EncodeEvent(nil, tc.ev)
			want := sdkEncode(t, tc.ev)
			if !bytes.Equal(got, want) {
				t.Fatalf("EncodeEvent differs from sdk-go:\n got %s\nwant %s", got, want)
			}
			if !json.Valid(got) {
				t.Fatalf("EncodeEvent wrote invalid JSON: %s", got)
			}
			// sdk-go's structured format (json.Marshal: HTML-escaped) is
			// the same event.
			viaFormat, err := format.JSON.Marshal(sdkEvent(t, tc.ev))
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
	for _, tc := range eventCases() {
		c := tc.ev.Change
		f.Add(string(tc.ev.Phase), tc.ev.ID, c.Bind, c.Schema, c.Table, string(c.Op), c.TxID, c.Pos, c.Seq, tc.ev.TxTotal, c.CommitTime.UnixNano())
	}
	f.Fuzz(func(t *testing.T, phase, id, bind, schema, table, op, txid, pos string, seq, total int, nanos int64) {
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
		ev := &tracker.Event{Phase: ph, Change: c, ID: id, TxTotal: total}
		got := EncodeEvent(nil, ev)
		if want := sdkEncode(t, ev); !bytes.Equal(got, want) {
			t.Fatalf("EncodeEvent differs from sdk-go:\n got %q\nwant %q", got, want)
		}
		if !json.Valid(got) {
			t.Fatalf("invalid JSON: %q", got)
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
	for _, tc := range eventCases() {
		if tc.ev.Phase != tracker.PhaseRollback {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var ce struct {
				Data RollbackData `json:"data"`
			}
			if err := json.Unmarshal(EncodeEvent(nil, tc.ev), &ce); err != nil {
				t.Fatal(err)
			}
			d, c := ce.Data, tc.ev.Change
			if d.Op != "rollback" || d.Bind != c.Bind || d.TxKey != c.TxKey || d.TxID != c.TxID || d.Schema != c.Schema || d.Table != c.Table {
				t.Errorf("decoded %+v from change %+v", d, c)
			}
			if r := tc.ev.Retract; r != nil && (d.SubTx != r.SubTx || !slices.Equal(d.Ranges, r.Ranges)) {
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
	for _, tc := range eventCases() {
		t.Run(tc.name, func(t *testing.T) {
			var b bytes.Buffer
			fmt.Fprintf(&b, "# %s: the change and the exact message trackerd publishes for it.\n", tc.name)
			fmt.Fprintf(&b, "-- event --\nphase: %s\nid: %s\ntxtotal: %d\n", tc.ev.Phase, tc.ev.ID, tc.ev.TxTotal)
			if tc.ev.Retract != nil {
				r, _ := json.Marshal(tc.ev.Retract)
				fmt.Fprintf(&b, "retract: %s\n", r)
			}
			fmt.Fprintf(&b, "change: %s\n", tc.ev.Change.AppendJSON(nil))
			fmt.Fprintf(&b, "-- subject --\n%s\n", subjects.Append(nil, tc.ev.Phase, tc.ev.Change))
			fmt.Fprintf(&b, "-- headers --\n%s: %s\n%s: %s\n", HeaderContentType, ContentType, HeaderMsgID, tc.ev.ID)
			fmt.Fprintf(&b, "-- payload --\n%s\n", EncodeEvent(nil, tc.ev))
			path := filepath.Join("testdata", "events", tc.name+".golden")
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

// The header the lane sends is the one of the golden files.
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
	ev := eventCases()[0].ev
	ev.LaneSeq = 1
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
	if len(h) != 2 || h.Get(HeaderContentType) != ContentType || h.Get(HeaderMsgID) != ev.ID {
		t.Errorf("headers = %v, want only %s: %s and %s: %s", h, HeaderContentType, ContentType, HeaderMsgID, ev.ID)
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

func BenchmarkEncodeEvent(b *testing.B) {
	for _, tc := range eventCases()[:2] {
		ev := tc.ev
		b.Run("handrolled/"+tc.name, func(b *testing.B) {
			b.ReportAllocs()
			var buf []byte
			for b.Loop() {
				buf = EncodeEvent(buf[:0], ev)
			}
			b.SetBytes(int64(len(buf)))
		})
		b.Run("sdk-go/"+tc.name, func(b *testing.B) {
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
