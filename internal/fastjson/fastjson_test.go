package fastjson

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// event has the kinds of fields trackerd decodes: strings, numbers, raw
// JSON, slices, a nested struct and a pointer to a time.
type event struct {
	ID    string          `json:"id"`
	Type  string          `json:"type"`
	Data  json.RawMessage `json:"data"`
	Names []string        `json:"names"`
	Inner struct {
		Seq  int        `json:"seq"`
		N    uint64     `json:"n"`
		F    float64    `json:"f"`
		OK   bool       `json:"ok"`
		Time *time.Time `json:"time"`
	} `json:"inner"`
}

func TestUnmarshal(t *testing.T) {
	for _, in := range []string{
		`{"id":"a","type":"t","data":{"x":[1,2]},"names":["é","\u00e9"],"inner":{"seq":3,"n":18446744073709551615,"f":-1.5e3,"ok":true,"time":"2026-01-02T03:04:05.000006Z"}}`,
		`{"ID":"case","Inner":{"Seq":1}}`,
		`{"id":"dup","id":"last"}`,
		"{\"id\":\"\xff\"}",                // invalid UTF-8: replaced, as encoding/json does
		`{"id":"a","skip":{{}}}`,           // invalid in a skipped member: refused
		`{"inner":{"seq":"not a number"}}`, // a type error
		`{"data":nul}`,
		`[]`,
		``,
	} {
		var got, want event
		err := Unmarshal([]byte(in), &got)
		werr := json.Unmarshal([]byte(in), &want)
		if (err == nil) != (werr == nil) || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: got %+v, %v; encoding/json %+v, %v", in, got, err, want, werr)
		}
	}
}

func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte(`{"id":"a","type":"t","data":{"x":[1,2]},"names":["é"],"inner":{"seq":3,"n":1,"f":1.5,"ok":true,"time":"2026-01-02T03:04:05Z"}}`))
	f.Add([]byte(`{"ID":"\ud800","data":null,"names":null,"inner":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var got, want event
		err := Unmarshal(data, &got)
		werr := json.Unmarshal(data, &want)
		if (err == nil) != (werr == nil) {
			t.Fatalf("%q: error %v, encoding/json %v", data, err, werr)
		}
		if err == nil && !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", data, got, want)
		}
	})
}
