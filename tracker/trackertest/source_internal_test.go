package trackertest

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/trackerd/trackerd/tracker"
)

func TestRecordGrammar(t *testing.T) {
	at := time.Unix(1700000000, 0)
	row := tracker.Row{Names: []string{"id"}, Values: []json.RawMessage{json.RawMessage("1")}}
	begin := func(key string) tracker.Record {
		return tracker.Record{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: key, TxID: "x" + key, CommitTime: at}}
	}
	change := func(key string, index int64, edit func(*tracker.Change)) tracker.Record {
		c := &tracker.Change{Source: "test", Op: tracker.OpInsert, Schema: "s", Table: "t", Key: row, After: row, TxKey: key, Index: index, Pos: "p"}
		if edit != nil {
			edit(c)
		}
		return tracker.Record{Kind: tracker.RecordChange, Change: c}
	}
	commit := func(key, pos string) tracker.Record {
		return tracker.Record{Kind: tracker.RecordCommit, Tx: tracker.TxInfo{TxKey: key}, Pos: pos}
	}
	keepalive := tracker.Record{Kind: tracker.RecordKeepalive, Pos: "k"}
	for _, tc := range []struct {
		name string
		recs []tracker.Record
		want string // in the error; "" for none
	}{
		{"ok", []tracker.Record{keepalive, begin("a"), change("a", 0, nil), change("a", 5, nil), commit("a", "1"), keepalive}, ""},
		{"ok: sent again after a reconnect", []tracker.Record{begin("a"), change("a", 0, nil), begin("a"), change("a", 0, nil), commit("a", "1")}, ""},
		{"keepalive inside a transaction", []tracker.Record{begin("a"), keepalive}, "keepalive inside"},
		{"position on a begin", []tracker.Record{{Kind: tracker.RecordBegin, Tx: tracker.TxInfo{TxKey: "a", TxID: "1"}, Pos: "1"}}, "positions belong"},
		{"commit without a position", []tracker.Record{begin("a"), commit("a", "")}, "without a position"},
		{"index does not grow", []tracker.Record{begin("a"), change("a", 3, nil), change("a", 3, nil)}, "Index must grow"},
		{"bind filled", []tracker.Record{begin("a"), change("a", 0, func(c *tracker.Change) { c.Bind = "b" })}, "tracker stamps"},
		{"commit time filled", []tracker.Record{begin("a"), change("a", 0, func(c *tracker.Change) { c.CommitTime = at })}, "tracker stamps"},
		{"change outside a transaction", []tracker.Record{change("a", 0, nil)}, "not open"},
		{"insert without after", []tracker.Record{begin("a"), change("a", 0, func(c *tracker.Change) { c.After = tracker.Row{} })}, "after image"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var g recordGrammar
			var err error
			for _, r := range tc.recs {
				if err = g.check(r); err != nil {
					break
				}
			}
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func TestSameJSON(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		same bool
	}{
		{`{"a": [1, 2]}`, `{"a":[1,2]}`, true},
		{`0.1`, `0.10000000149011612`, false},
		{`"é"`, `"\u00e9"`, true},
		{`1`, `"1"`, false},
	} {
		if got := sameJSON([]byte(tc.a), []byte(tc.b)); got != tc.same {
			t.Errorf("sameJSON(%s, %s) = %v", tc.a, tc.b, got)
		}
	}
}
