package tracker

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"
)

func TestRowUnmarshalJSON(t *testing.T) {
	for _, tc := range []struct {
		in     string
		names  []string
		values []string
		null   bool
		err    bool
	}{
		{in: `null`, null: true},
		{in: ` null `, null: true},
		{in: `{}`, names: []string{}},
		{in: ` { } `, names: []string{}},
		{in: `{"id":1}`, names: []string{"id"}, values: []string{`1`}},
		{in: `{ "b" : 2 , "a" : -1.5e3 }`, names: []string{"b", "a"}, values: []string{`2`, `-1.5e3`}},
		{in: `{"s":"x,}\"]y","n":null,"t":true,"f":false}`, names: []string{"s", "n", "t", "f"},
			values: []string{`"x,}\"]y"`, `null`, `true`, `false`}},
		{in: `{"j":{"a":[1,{"b":"}"}],"c":{}},"arr":[[],["]"]]}`, names: []string{"j", "arr"},
			values: []string{`{"a":[1,{"b":"}"}],"c":{}}`, `[[],["]"]]`}},
		{in: `{"a\"b\\c\u00e9":"v","é ✓":"\\"}`, names: []string{`a"b\cé`, "é ✓"}, values: []string{`"v"`, `"\\"`}},
		{in: "{\"id\":\n\t1\r\n}", names: []string{"id"}, values: []string{`1`}},
		{in: `{"id":1,"id":2}`, names: []string{"id", "id"}, values: []string{`1`, `2`}},
		{in: `[1]`, err: true},
		{in: `"x"`, err: true},
		{in: ``, err: true},
		{in: `{"id":}`, err: true},
		{in: `{"id":1`, err: true},
		{in: `{"id":1}x`, err: true},
		{in: `{id:1}`, err: true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			r := Row{Names: []string{"stale"}}
			err := r.UnmarshalJSON([]byte(tc.in))
			if tc.err {
				if err == nil {
					t.Fatalf("got %+v, want an error", r)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.null {
				if !r.IsZero() {
					t.Fatalf("got %+v, want the zero Row", r)
				}
				return
			}
			var values []string
			for _, v := range r.Values {
				values = append(values, string(v))
			}
			if !reflect.DeepEqual(r.Names, tc.names) || !reflect.DeepEqual(values, tc.values) {
				t.Fatalf("got %q %q, want %q %q", r.Names, values, tc.names, tc.values)
			}
		})
	}
}

// The decoded values do not alias the input, and appending to one does not
// overwrite the next.
func TestRowUnmarshalJSONCopies(t *testing.T) {
	in := []byte(`{"a":1,"b":2}`)
	var r Row
	if err := json.Unmarshal(in, &r); err != nil {
		t.Fatal(err)
	}
	copy(in, "XXXXXXXXXXXXX")
	_ = append(r.Values[0], '9')
	if got := string(r.AppendJSON(nil)); got != `{"a":1,"b":2}` {
		t.Fatalf("got %s", got)
	}
}

// referenceRow decodes a row with encoding/json's tokenizer: the slow,
// obviously right decoder the scanner is checked against.
func referenceRow(data []byte) (Row, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	tok, err := d.Token()
	if err != nil {
		return Row{}, err
	}
	if tok == nil {
		if d.More() {
			return Row{}, fmt.Errorf("trailing data")
		}
		return Row{}, nil
	}
	if delim, ok := tok.(json.Delim); !ok || delim != '{' {
		return Row{}, fmt.Errorf("not an object")
	}
	r := Row{Names: []string{}}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return Row{}, err
		}
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return Row{}, err
		}
		r.Names = append(r.Names, tok.(string))
		r.Values = append(r.Values, v)
	}
	if _, err := d.Token(); err != nil {
		return Row{}, err
	}
	return r, nil
}

func FuzzRowUnmarshalJSON(f *testing.F) {
	for _, s := range []string{`null`, `{}`, `{"id":1,"n":"x"}`, `{"a\"":[1,{"b":"}"}],"c":-0.5e-3}`, `{"é":"\u00e9"}`, `[1]`, `{"a":1`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Row
		err := got.UnmarshalJSON(data)
		if !json.Valid(data) {
			if err == nil {
				t.Fatalf("%q: no error for invalid JSON", data)
			}
			return
		}
		want, werr := referenceRow(data)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: error %v, reference %v", data, err, werr)
		}
		if err != nil {
			return
		}
		if got.IsZero() != want.IsZero() || !reflect.DeepEqual(got.Names, want.Names) || len(got.Values) != len(want.Values) {
			t.Fatalf("%q: got %q, reference %q", data, got.Names, want.Names)
		}
		for i := range got.Values {
			if !bytes.Equal(got.Values[i], want.Values[i]) {
				t.Fatalf("%q: column %d: got %s, reference %s", data, i, got.Values[i], want.Values[i])
			}
		}
	})
}

// FuzzChangeUnmarshalJSON checks Change.UnmarshalJSON (internal/fastjson,
// and Row's own scanner) against encoding/json.
func FuzzChangeUnmarshalJSON(f *testing.F) {
	c := &Change{
		Bind: "b", Source: "postgresql", Op: OpUpdate, Schema: "s", Table: "t",
		Key:   Row{Names: []string{"id"}, Values: []json.RawMessage{json.RawMessage(`1`)}},
		After: Row{Names: []string{"id", "n"}, Values: []json.RawMessage{json.RawMessage(`1`), json.RawMessage(`"é\n"`)}},
		TxID:  "7", TxKey: "0/1", Seq: 2, Pos: "0/10", Unchanged: []string{"blob"},
		CommitTime: time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC),
	}
	f.Add(c.AppendJSON(nil))
	f.Add([]byte(`{"op":"insert","after":{"a":1},"source":{"seq":1e2}}`))
	f.Add([]byte(`{"OP":"delete","Key":{"x":[1,{"y":"\u00e9"}]},"source":null,"unchanged":["\xff"]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got Change
		err := got.UnmarshalJSON(data)
		var j changeJSON
		werr := json.Unmarshal(data, &j)
		if werr == nil && !j.Op.Valid() {
			werr = fmt.Errorf("op %q", j.Op)
		}
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: error %v, encoding/json %v", data, err, werr)
		}
		if err != nil {
			return
		}
		var want Change
		want.fromJSON(&j)
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", data, got, want)
		}
	})
}
