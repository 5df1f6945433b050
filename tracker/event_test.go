package tracker

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestEventID(t *testing.T) {
	got := EventID("my.bind", "9f86d081884c7d65", "pos-mariadb-bin.000001-4", 3, PhaseAfterCommit)
	want := "my=2Ebind/9f86d081884c7d65/pos-mariadb-bin=2E000001-4/3/after_commit"
	if got != want {
		t.Fatalf("EventID = %q, want %q", got, want)
	}
}

// Two deployments that share a bind key but read different servers,
// databases or slots never share an event id: the origin tells them apart
// (the earlier <bind>/<txkey>/<seq>/<phase> let JetStream drop one
// deployment's events as duplicates of the other's).
func TestEventIDOrigins(t *testing.T) {
	identities := []string{
		"pg/7300000000000000001/shop/trackerd_shop_default",
		"pg/7300000000000000001/shop/trackerd_shop_other",   // another slot
		"pg/7300000000000000002/shop/trackerd_shop_default", // a clone's own system id
		"pg/7300000000000000001/shop2/trackerd_shop2_default",
		"mariadb/1/db-a:3306/app",
		"mariadb/1/db-b:3306/app", // two servers with server_id 1
		"mariadb/1/db-a:3306/app2",
		"mysql/3e11fa47-71ca-11e1-9e33-c80aa9429562/app",
	}
	seen := map[string]string{}
	for _, id := range identities {
		o := Origin(id)
		if len(o) != 16 || Escape(o) != o {
			t.Fatalf("Origin(%q) = %q: want 16 token-safe hex digits", id, o)
		}
		ev := EventID("default", o, "gtid-0-1-42", 0, PhaseAfterCommit)
		if other, dup := seen[ev]; dup {
			t.Fatalf("%q and %q share event id %q", id, other, ev)
		}
		seen[ev] = id
	}
	if Origin(identities[0]) != Origin(identities[0]) {
		t.Fatal("Origin is not deterministic")
	}
}

func sampleChange() *Change {
	return &Change{
		Bind: "default", Source: "postgresql", Op: OpUpdate, Schema: "public", Table: "or\"ders",
		Key:       Row{Names: []string{"id"}, Values: []json.RawMessage{json.RawMessage(`1`)}},
		Before:    Row{Names: []string{"id", "note"}, Values: []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`"a"`)}},
		After:     Row{Names: []string{"id", "note", "blob"}, Values: []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`"é\n"`), nil}},
		Unchanged: []string{"blob"},
		TxID:      "731", TxKey: "lsn-00000000016B3748", Seq: 2, Pos: "0/16B3790",
		CommitTime: time.Date(2026, 11, 24, 12, 30, 0, 123456000, time.UTC),
	}
}

func TestChangeJSON(t *testing.T) {
	c := sampleChange()
	data := c.AppendJSON(nil)
	want := `{"op":"update","schema":"public","table":"or\"ders","key":{"id":1},"before":{"id":1,"note":"a"},` +
		`"after":{"id":1,"note":"é\n"},"unchanged":["blob"],"source":{"kind":"postgresql","bind":"default","pos":"0/16B3790",` +
		`"txid":"731","txkey":"lsn-00000000016B3748","seq":2,"commit_time":"2026-11-24T12:30:00.123456Z"}}`
	if string(data) != want {
		t.Fatalf("AppendJSON:\n%s\nwant\n%s", data, want)
	}
	if !json.Valid(data) {
		t.Fatal("not valid JSON")
	}
	var back Change
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	// A value the database did not send is not in the JSON, so it comes
	// back without that column.
	if string(back.AppendJSON(nil)) != want {
		t.Fatalf("round trip:\n%s\nwant\n%s", back.AppendJSON(nil), want)
	}
	empty := (&Change{Op: OpTruncate, Schema: "s", Table: "t"}).AppendJSON(nil)
	if !strings.Contains(string(empty), `"key":null,"before":null,"after":null,"unchanged":[]`) {
		t.Fatalf("truncate change: %s", empty)
	}
}

func TestAppendJSONStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{"plain", "quote\"back\\slash", "\x00\x01\x1f", "tab\t", "é ü 日本", "\u2028\u2029", "bad \xff utf8", "<>&"} {
		got := string(AppendJSONString(nil, s))
		var back string
		if err := json.Unmarshal([]byte(got), &back); err != nil {
			t.Fatalf("%q -> %s: %v", s, got, err)
		}
		want, _ := json.Marshal(s)
		var wantBack string
		json.Unmarshal(want, &wantBack)
		if back != wantBack {
			t.Fatalf("%q decodes to %q, encoding/json's to %q", s, back, wantBack)
		}
	}
}

func FuzzChangeCodec(f *testing.F) {
	f.Add("public", "orders", `"x"`, int64(5))
	f.Add("", "", `null`, int64(0))
	f.Fuzz(func(t *testing.T, schema, table, value string, ns int64) {
		c := sampleChange()
		c.Schema, c.Table = schema, table
		if json.Valid([]byte(value)) {
			c.After.Values[1] = json.RawMessage(value)
		}
		if ns != 0 {
			c.CommitTime = time.Unix(0, ns).UTC()
		}
		rec := appendChange(nil, c)
		var d decoder
		back, err := d.decodeChange(rec)
		if err != nil {
			t.Fatal(err)
		}
		if string(back.AppendJSON(nil)) != string(c.AppendJSON(nil)) {
			t.Fatalf("codec round trip:\n%s\n%s", back.AppendJSON(nil), c.AppendJSON(nil))
		}
		// Truncated records are errors, never panics.
		for i := range rec {
			if _, err := d.decodeChange(rec[:i]); err == nil {
				t.Fatalf("decoding %d of %d bytes succeeded", i, len(rec))
			}
		}
	})
}

func BenchmarkChangeAppendJSON(b *testing.B) {
	c := sampleChange()
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = c.AppendJSON(buf[:0])
	}
}

func BenchmarkEventID(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		_ = EventID("default", "9f86d081884c7d65", "lsn-00000000016B3748", 12, PhaseAfterCommit)
	}
}
