package changefeed_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/trackerd/trackerd/changefeed"
	"github.com/trackerd/trackerd/tracker"
	"github.com/trackerd/trackerd/wire"
)

func row(kv ...string) tracker.Row {
	var r tracker.Row
	for i := 0; i < len(kv); i += 2 {
		r.Names = append(r.Names, kv[i])
		r.Values = append(r.Values, json.RawMessage(kv[i+1]))
	}
	return r
}

func sampleChange() *tracker.Change {
	return &tracker.Change{
		Bind: "my.bind", Source: "postgresql", Op: tracker.OpUpdate, Schema: "public", Table: "order items",
		Key:    row("id", `"9007199254740993"`),
		Before: row("id", `"9007199254740993"`, "note", `"old"`),
		After:  row("id", `"9007199254740993"`, "note", `"new \u2028 line"`, "doc", `{"a":[1,2]}`),
		// The database did not send blob (TOAST): absent from After.
		Unchanged: []string{"blob"},
		TxID:      "7321", TxKey: "lsn-00000000016B3748", Seq: 3, Index: 3, Origin: "9f86d081884c7d65",
		CommitTime: time.Date(2026, 3, 4, 5, 6, 7, 891011000, time.UTC), Pos: "0/16B3790",
	}
}

func TestDecode(t *testing.T) {
	c := sampleChange()
	after := &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: c, TxTotal: 5,
		ID: tracker.EventID(c.Bind, c.Origin, c.TxKey, c.Index, tracker.PhaseAfterCommit)}
	before := &tracker.Event{Phase: tracker.PhaseBeforeCommit, Change: c,
		ID: tracker.EventID(c.Bind, c.Origin, c.TxKey, c.Index, tracker.PhaseBeforeCommit)}
	rb := &tracker.Change{Bind: "my.bind", Source: "postgresql", Origin: "9f86d081884c7d65", TxID: "7321", TxKey: "lsn-00000000016B3748", SubTx: "7322", Seq: 10}
	rollback := &tracker.Event{Phase: tracker.PhaseRollback, Change: rb,
		ID:      tracker.EventID(rb.Bind, rb.Origin, rb.TxKey, 0, tracker.PhaseRollback),
		Retract: &tracker.Retraction{TxKey: rb.TxKey, SubTx: "7322", Ranges: []tracker.SeqRange{{From: 4, To: 9}}}}

	tests := []struct {
		name string
		ev   *tracker.Event
		want changefeed.Message
	}{
		{"ok - after_commit", after, changefeed.Message{Change: *c, Phase: tracker.PhaseAfterCommit, ID: "my=2Ebind/9f86d081884c7d65/lsn-00000000016B3748/3/after_commit",
			Source: "/trackerd/my.bind/9f86d081884c7d65", TxTotal: 5, Time: c.CommitTime}},
		{"ok - before_commit has no total", before, changefeed.Message{Change: *c, Phase: tracker.PhaseBeforeCommit, ID: "my=2Ebind/9f86d081884c7d65/lsn-00000000016B3748/3/before_commit",
			Source: "/trackerd/my.bind/9f86d081884c7d65", Time: c.CommitTime}},
		{"ok - rollback", rollback, changefeed.Message{
			Change: tracker.Change{Bind: "my.bind", Source: "postgresql", Origin: "9f86d081884c7d65", TxID: "7321", TxKey: "lsn-00000000016B3748", SubTx: "7322", Seq: 10},
			Phase:  tracker.PhaseRollback, ID: "my=2Ebind/9f86d081884c7d65/lsn-00000000016B3748/0/rollback", Source: "/trackerd/my.bind/9f86d081884c7d65",
			Retract: rollback.Retract}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := wire.EncodeEvent(nil, tc.ev)
			h := nats.Header{wire.HeaderContentType: {wire.ContentType}, wire.HeaderMsgID: {tc.ev.ID}}
			got, err := changefeed.Decode("trackerd.x", h, data)
			if err != nil {
				t.Fatalf("Decode: %v\n%s", err, data)
			}
			want := tc.want
			want.Subject, want.Raw = "trackerd.x", data
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("Decode:\n got %+v\nwant %+v", got, want)
			}
			// The same through DecodeMsg, as a core NATS message.
			m, err := changefeed.DecodeMsg(&nats.Msg{Subject: "trackerd.x", Header: h, Data: data})
			if err != nil || !reflect.DeepEqual(m, want) {
				t.Fatalf("DecodeMsg: %v\n got %+v\nwant %+v", err, m, want)
			}
		})
	}
}

// TestDecodeBinaryMode reads an event relayed in binary mode (ce-* headers,
// data as the body), as sdk-go's senders write it.
func TestDecodeBinaryMode(t *testing.T) {
	c := sampleChange()
	h := nats.Header{
		"ce-specversion": {"1.0"}, "ce-id": {"b/9f86d081884c7d65/lsn-1/3/after_commit"}, "ce-source": {"/trackerd/my.bind/9f86d081884c7d65"},
		"ce-type": {"trackerd.after_commit"}, "ce-subject": {"public.order items"}, "ce-time": {"2026-03-04T05:06:07.891011Z"},
		"ce-trackerdtxtotal": {"5"}, "ce-trackerdtxseq": {"3"}, "ce-trackerdbind": {"my.bind"}, "Content-Type": {"application/json"},
	}
	got, err := changefeed.Decode("s", h, c.AppendJSON(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != "b/9f86d081884c7d65/lsn-1/3/after_commit" || got.TxTotal != 5 || got.Phase != tracker.PhaseAfterCommit || !reflect.DeepEqual(got.Change, *c) {
		t.Fatalf("binary mode: %+v", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	good := string(wire.EncodeEvent(nil, &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: sampleChange(), ID: "x", TxTotal: 1}))
	tests := []struct{ name, data string }{
		{"error - not JSON", "hello"},
		{"error - another CloudEvent type", `{"specversion":"1.0","id":"1","source":"/x","type":"com.example.thing","data":{}}`},
		{"error - specversion 0.3", `{"specversion":"0.3","id":"1","source":"/x","type":"trackerd.after_commit","data":{"op":"insert"}}`},
		{"error - no id", `{"specversion":"1.0","source":"/x","type":"trackerd.after_commit","data":{"op":"insert"}}`},
		{"error - unknown op", `{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.after_commit","data":{"op":"upsert"}}`},
		{"error - bad txtotal", `{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.after_commit","data":{"op":"insert"},"trackerdtxtotal":"many"}`},
		{"error - bad time", `{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.after_commit","time":"yesterday","data":{"op":"insert"}}`},
		{"error - truncated", good[:len(good)/2]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := changefeed.Decode("s", nil, []byte(tc.data))
			if !errors.Is(err, changefeed.ErrNotEvent) {
				t.Fatalf("Decode(%s) = %v, want ErrNotEvent", tc.data, err)
			}
		})
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(wire.EncodeEvent(nil, &tracker.Event{Phase: tracker.PhaseAfterCommit, Change: sampleChange(), ID: "x", TxTotal: 4}))
	f.Add([]byte(`{"specversion":"1.0","id":"1","source":"/x","type":"trackerd.rollback","data":{"op":"rollback","ranges":[{"from":1,"to":2}]}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := changefeed.Decode("s", nil, data)
		if err != nil {
			if !errors.Is(err, changefeed.ErrNotEvent) {
				t.Fatalf("error %v does not wrap ErrNotEvent", err)
			}
			return
		}
		if m.ID == "" || !m.Phase.Valid() {
			t.Fatalf("decoded an event without id or phase: %+v", m)
		}
		if (m.Retract != nil) != (m.Phase == tracker.PhaseRollback) {
			t.Fatalf("Retract set on a %s event", m.Phase)
		}
	})
}
